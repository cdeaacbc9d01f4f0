"""The optimizer of each stage against a re-derivation of the reference one
(psa/SEAM/icam tool/torchutils.py PolyOptimizer, icam train_cam.py /
train_aff.py groups; train_final.py plain SGD): effective momentum, per-group
weight decay and lr multipliers, poly decay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss_core.models.param_groups import reference_param_groups
from wsss_core.pipeline.config import load_config
from wsss_core.pipeline.training import build_optimizer, set_poly_lr


class _ReferencePoly(torch.optim.SGD):
    """SGD(params, lr, weight_decay) with weight_decay in the positional momentum slot;
    lr = initial lr * (1 - step / max_step) ** 0.9 before every step."""

    def __init__(self, params, lr, weight_decay, max_step):
        super().__init__(params, lr, weight_decay)
        self.initial = [g["lr"] for g in self.param_groups]
        self.max_step, self.global_step = max_step, 0

    def step(self, closure=None):
        if self.global_step < self.max_step:
            for group, lr in zip(self.param_groups, self.initial):
                group["lr"] = lr * (1 - self.global_step / self.max_step) ** 0.9
        super().step(closure)
        self.global_step += 1


def _net(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)  # "pretrained" backbone, new layer (both with bias)


def _poly_step(optimizer, cfg, steps):
    """One step of ours: poly lr for step t, then the optimizer's update on `loss`."""
    def step(t, loss):
        set_poly_lr(optimizer, cfg.lr, t, steps, cfg.poly_power)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def _reference_groups(backbone, head, lr, wd):
    """icam train_cam.py / train_aff.py: weights x1 decay, biases x2 no decay, new x10 / x20."""
    return [
        {"params": [backbone.weight], "lr": lr, "weight_decay": wd},
        {"params": [backbone.bias], "lr": 2 * lr, "weight_decay": 0},
        {"params": [head.weight], "lr": 10 * lr, "weight_decay": wd},
        {"params": [head.bias], "lr": 20 * lr, "weight_decay": 0},
    ]


def _train(step_fn, backbone, head, steps):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for t in range(steps):
        loss = (head(torch.relu(backbone(x))) ** 2).mean() + 0.1 * t * backbone.weight.sum()
        step_fn(t, loss)
    return torch.cat([p.detach().flatten() for m in (backbone, head) for p in m.parameters()])


@pytest.mark.parametrize("section", ["cam", "affinity"])
def test_cam_and_affinity_sgd_match_the_reference_poly_optimizer(section: str) -> None:
    cfg = getattr(load_config({}), section)
    steps = 6
    ref_b, ref_h = _net(0)
    reference = _ReferencePoly(_reference_groups(ref_b, ref_h, cfg.lr, cfg.weight_decay), cfg.lr, cfg.weight_decay, steps)
    assert all(g["momentum"] == pytest.approx(5e-4) for g in reference.param_groups)

    def ref_step(t, loss):
        reference.zero_grad()
        loss.backward()
        reference.step()

    ours_b, ours_h = _net(0)
    ours = build_optimizer(reference_param_groups(ours_b, [ours_h], cfg.lr, cfg.weight_decay), cfg.optimizer, cfg.momentum)
    assert sorted((g["lr_mult"], g["weight_decay"], g["momentum"]) for g in ours.param_groups) == sorted(
        (m, d, cfg.momentum) for m, d in ((1, 5e-4), (2, 0), (10, 5e-4), (20, 0))
    )

    our_step = _poly_step(ours, cfg, steps)

    want = _train(ref_step, ref_b, ref_h, steps)
    got = _train(our_step, ours_b, ours_h, steps)
    assert float((got - want).norm() / want.norm()) < 1e-5
    assert (cfg.lr, cfg.momentum) == (0.01, 5e-4)  # both stages, as the authors' train_cam/train_aff


def test_segmentation_sgd_is_plain_momentum_09_with_reference_groups() -> None:
    cfg = load_config({}).segmentation
    steps = 5
    ref_b, ref_h = _net(3)
    reference = torch.optim.SGD(_reference_groups(ref_b, ref_h, cfg.lr, cfg.weight_decay), lr=cfg.lr, momentum=0.9,
                                weight_decay=cfg.weight_decay)
    initial = [g["lr"] for g in reference.param_groups]

    def ref_step(t, loss):  # icam train_final.py adjust_lr, with our T in place of max_itr + 1
        for group, lr in zip(reference.param_groups, initial):
            group["lr"] = lr * (1 - t / steps) ** 0.9
        reference.zero_grad()
        loss.backward()
        reference.step()

    ours_b, ours_h = _net(3)
    ours = build_optimizer(reference_param_groups(ours_b, [ours_h], cfg.lr, cfg.weight_decay), cfg.optimizer, cfg.momentum)

    our_step = _poly_step(ours, cfg, steps)

    want = _train(ref_step, ref_b, ref_h, steps)
    got = _train(our_step, ours_b, ours_h, steps)
    assert cfg.momentum == 0.9
    assert float((got - want).norm() / want.norm()) < 1e-5


def test_affinity_defaults_follow_train_aff() -> None:
    cfg = load_config({}).affinity
    assert (cfg.lr, cfg.resize_long, cfg.momentum) == (0.01, None, 5e-4)
    assert load_config({"affinity.resize_long": [448, 768]}).affinity.resize_long == (448, 768)
