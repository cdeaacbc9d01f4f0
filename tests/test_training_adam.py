"""Adam over the reference parameter groups: one lr for every group, so a new
head is not driven 10-20x harder than the backbone (the cause of the demo's
DeepLab predicting background everywhere)."""
from __future__ import annotations

import torch

from wsss_core.models import DeepLabV1, build_backbone
from wsss_core.pipeline.training import build_optimizer, set_poly_lr


def _deeplab() -> DeepLabV1:
    torch.manual_seed(0)
    return DeepLabV1(build_backbone("resnet_small", None), 3, head_channels=128, dilation=4)


def test_adam_uses_the_base_lr_in_every_group_and_keeps_weight_decay():
    model = _deeplab()
    groups = model.param_groups(1e-3, 1e-4)
    assert {1.0, 10.0, 20.0} <= {g["lr_mult"] for g in groups}
    optimizer = build_optimizer(groups, "adam")
    set_poly_lr(optimizer, 1e-3, step=0, total=10, power=0.9)
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == sorted(g["weight_decay"] for g in groups)
    sgd = build_optimizer(model.param_groups(1e-3, 1e-4), "sgd")
    set_poly_lr(sgd, 1e-3, step=0, total=10, power=0.9)
    assert max(g["lr"] for g in sgd.param_groups) == 20 * 1e-3

