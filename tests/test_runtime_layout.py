"""runtime.channels_last on the CPU: NHWC weights and images, same outputs as NCHW."""
from __future__ import annotations

import logging

import torch

from wsss_core.models import CAMNet, build_backbone
from wsss_core.pipeline.config import RuntimeConfig
from wsss_core.pipeline.training import Runtime


def _runtime(channels_last: bool) -> Runtime:
    config = RuntimeConfig(device="cpu", channels_last=channels_last)
    return Runtime.from_config(config, progress=False, log=logging.getLogger("test"))


def test_channels_last_applies_on_cpu_and_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    net = CAMNet(build_backbone("resnet_small", None), 4).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = _runtime(False).to_device(net)(_runtime(False).images(x)).logits
        runtime = _runtime(True)
        model = runtime.to_device(net)
        images = runtime.images(x)
        assert runtime.channels_last and runtime.device.type == "cpu"
        assert images.is_contiguous(memory_format=torch.channels_last)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        got = model(images).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
