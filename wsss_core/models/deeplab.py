"""DeepLab-v1 (LargeFOV head) for stage 3."""
from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .param_groups import reference_param_groups


class DeepLabV1(nn.Module):
    """DeepLab-v1 as the reference ResNet-38 DeepLab used by SEAM: the stride-8
    backbone map -> 3x3 conv (dilation 12, `head_channels`=512, bias) -> ReLU
    -> 3x3 conv (dilation 12, bias) to K classes. Logits stay at stride 8; the
    caller upsamples them. Inputs must be normalised with backbone.mean/std.

    dilation: the large field of view; on small crops (e.g. 96 px, a 12 x 12
    map) most of a 12-dilated kernel falls on padding, so CPU demos may lower it.
    dropout: 0 as the reference ResNet-38 head; VGG DeepLab-LargeFOV uses 0.5.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        head_channels: int = 512,
        dilation: int = 12,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2, got {num_classes}")
        if dilation < 1 or head_channels < 1:
            raise ValueError(f"dilation and head_channels must be >= 1, got {dilation}, {head_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = nn.Sequential(
            nn.Conv2d(backbone.out_channels, head_channels, 3, padding=dilation, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, num_classes, 3, padding=dilation, dilation=dilation),
        )
        for m in self.head:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> logits [B,K,~H/8,~W/8]."""
        return self.head(self.backbone(x))

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """SGD groups: backbone at lr, the head at 10x (biases 2x/20x, no decay)."""
        return reference_param_groups(self.backbone, [self.head], lr, weight_decay)
