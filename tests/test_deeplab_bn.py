"""The DeepLab head's BatchNorm statistics after a short run: with the authors'
momentum (3e-4) they stay near their initial values, so eval-mode predictions
differ from train-mode ones; `bn_momentum=None` (cumulative average) tracks
the data whatever the run length."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss_core.models import DeepLabV1, build_backbone
from wsss_core.pipeline.config import ConfigError, load_config


def _head_norms(model: DeepLabV1) -> list[nn.BatchNorm2d]:
    return [m for m in model.head if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize(("momentum", "tracks"), [(None, True), (3e-4, False)])
def test_head_running_statistics_after_a_short_run(momentum, tracks):
    torch.manual_seed(0)
    model = DeepLabV1(build_backbone("resnet_small", None), 4, head_channels=16, dilation=2, head="bn",
                      bn_momentum=momentum)
    images = [torch.randn(4, 3, 48, 48) * 3 + 1 for _ in range(20)]
    model.train()
    with torch.no_grad():
        for x in images:
            model(x)
        first = _head_norms(model)[0]
        features = model.head[0](model.backbone(torch.cat(images)))
    batch_mean = features.mean(dim=(0, 2, 3))
    close = torch.allclose(first.running_mean, batch_mean, atol=0.05 * batch_mean.abs().max().item())
    assert close is tracks


def test_bn_momentum_is_validated_at_the_edge():
    assert load_config({"segmentation": {"bn_momentum": None}}).segmentation.bn_momentum is None
    with pytest.raises(ConfigError, match=r"segmentation.bn_momentum=0.0 is invalid; allowed: null"):
        load_config({"segmentation": {"bn_momentum": 0.0}})
