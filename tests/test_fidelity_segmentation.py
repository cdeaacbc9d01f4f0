"""Stage 3 against re-derivations of the authors' DeepLab code (arvijj/icam
lib/net/deeplabv1.py, train_final.py, eval_final.py, lib/utils/DenseCRF.py)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.data import Batch
from wsss_core.models import DeepLabV1, build_backbone
from wsss_core.pipeline.config import ConfigError, load_config
from wsss_core.pipeline.stage_segmentation import AVERAGES, build_fsl, segmentation_step

REPO = Path(__file__).resolve().parents[1]


def test_bn_head_is_the_authors_deeplabv1_head():
    torch.manual_seed(0)
    net = DeepLabV1(build_backbone("resnet_small", None), 4, head_channels=16, dilation=2, dropout=0.5, head="bn").eval()
    convs = [m for m in net.head if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.head if isinstance(m, nn.BatchNorm2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1), (1, 1)] and [c.bias is None for c in convs] == [True, True, False]
    assert [b.momentum for b in bns] == [3e-4, 3e-4] and [m.p for m in net.head if isinstance(m, nn.Dropout)] == [0.5]
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        for bn in bns:  # non-trivial running statistics
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        feature = net.backbone(x)
        f = F.relu(bns[0](convs[0](feature)))  # deeplabv1.forward in eval mode (dropout off)
        f = F.relu(bns[1](convs[1](f)))
        want = convs[2](f)
        got = net(x)
    assert float((got - want).norm() / want.norm()) < 1e-5


def test_batchnorm_affine_parameters_are_not_trained_by_default():
    c = load_config({}).segmentation
    torch.manual_seed(0)
    net = DeepLabV1(build_backbone("resnet_small", None), 4, head_channels=16, head=c.head, train_norm=c.train_norm)
    trained = {id(p) for g in net.param_groups(0.01, 5e-4) for p in g["params"]}
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert norms and not any(id(p) in trained for m in norms for p in m.parameters())
    assert all(id(m.weight) in trained for m in convs)


def _authors_fsl(image, probs, mu, sigma):
    n, _, h, w = probs.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).to(probs.dtype)
    gauss = torch.exp(-0.5 * (torch.cdist(pos, pos) / sigma) ** 2) / (2 * math.pi * sigma**2)
    total = 0.0
    for b in range(n):
        x, a = image[b].clamp(0, 1).flatten(1).T, probs[b].flatten(1).T
        dx = (torch.cdist(x, x, p=1.0) / 3).clamp(0, 1)
        total = total + (gauss * torch.cdist(a, a) ** 2 * torch.tanh(mu + torch.log((dx + 1e-5) / (1 - dx + 1e-5)))).sum()
    return -total / (n * h * w)


class _Logits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_segmentation_loss_is_ce_plus_train_finals_half_fsl():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, generator=gen, dtype=torch.float64)
    rgb = torch.rand(2, 3, 48, 56, generator=gen, dtype=torch.float64)
    mask = torch.randint(0, 4, (2, 48, 56), generator=gen)
    batch = Batch(rgb, rgb, mask, torch.ones(2, 3), ["a", "b"])
    cfg = load_config({}).segmentation
    parts = segmentation_step(_Logits(logits), batch, build_fsl(cfg), cfg.fsl_weight)
    small = F.interpolate(rgb, (6, 7), mode="bilinear", align_corners=True)  # train_final.py img1_s
    want_fsl = 0.5 * _authors_fsl(small, F.softmax(logits, 1), 2.5, 5.0)
    assert abs(float(parts["fsl"]) - float(want_fsl)) / abs(float(want_fsl)) < 1e-4  # window mass 1-1e-6
    up = F.interpolate(logits.float(), (48, 56), mode="bilinear", align_corners=False)
    assert float(parts["loss"]) == pytest.approx(float(F.cross_entropy(up, mask, ignore_index=255)) + float(parts["fsl"]), rel=1e-6)


def test_inference_averages_logits_then_softmax_and_crf_follows_densecrf():
    per_pass, to_probs = AVERAGES["logits"]
    passes = torch.randn(6, 1, 4, 5, 5)
    mean = torch.stack([per_pass(p)[0] for p in passes]).mean(0)
    assert torch.allclose(to_probs(mean), F.softmax(passes.mean(0), dim=1)[0])  # eval_final.py collect_func
    cfg = load_config({})
    assert (cfg.segmentation.crf_bilateral_sxy, cfg.segmentation.crf_iterations) == (32.0, 1)
    assert (cfg.crf.gauss_sxy, cfg.crf.gauss_compat, cfg.crf.bilateral_srgb, cfg.crf.bilateral_compat) == (3, 3, 13, 10)
    seg = cfg.segmentation
    assert (seg.head, seg.dropout, seg.batch_size, seg.infer_scales, seg.infer_average, seg.fsl) == (
        "bn", 0.5, 10, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), "logits", True)


@pytest.mark.parametrize(("override", "fragment"), [
    ({"segmentation.head": "aspp"}, "segmentation.head='aspp' is invalid; allowed: largefov, bn"),
    ({"segmentation.infer_average": "max"}, "segmentation.infer_average='max'"),
    ({"segmentation.crf_iterations": 0}, "segmentation.crf_iterations=0"),
])
def test_bad_segmentation_values_are_refused_with_one_line(override, fragment):
    with pytest.raises(ConfigError) as error:
        load_config(override)
    assert fragment in str(error.value) and "\n" not in str(error.value)
