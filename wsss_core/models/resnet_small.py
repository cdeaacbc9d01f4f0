"""A small dilated ResNet that trains in seconds on CPU (tests, the demo)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Backbone


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (projected when the
    shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetSmall(Backbone):
    """Stem (stride 2) and four one-block stages: strides 4, 8, 8 (dilation 2),
    8 (dilation 4). `forward_stages` returns the four stage outputs with
    `stage_channels` = widths."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 96, 128), stem_width: int = 16):
        super().__init__()
        self.stage_channels = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 2, padding=1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)
        )
        strides, dilations = (2, 2, 1, 1), (1, 1, 2, 4)
        inputs = (stem_width, *widths[:-1])
        self.stages = nn.ModuleList(
            BasicBlock(i, o, s, d) for i, o, s, d in zip(inputs, widths, strides, dilations)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> [s4 [B,w0,H/4,W/4], s8 [B,w1,H/8,W/8], [B,w2,..], [B,w3,..]]."""
        maps = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps
