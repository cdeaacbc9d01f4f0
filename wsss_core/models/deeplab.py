"""DeepLab-v1 for stage 3, with the head chosen by name (``HEADS``)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import Backbone
from .param_groups import reference_param_groups


BN_MOMENTUM = 3e-4  # arvijj/icam voc/config_voc2012.py TRAIN_BN_MOM


def largefov_head(in_channels: int, channels: int, num_classes: int, dilation: int, dropout: float,
                  bn_momentum: float | None) -> nn.Sequential:
    """3x3 conv (dilation, bias) -> ReLU -> Dropout2d -> 3x3 conv (dilation, bias) to K; Xavier init.
    No BatchNorm, so bn_momentum is not used."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(channels, num_classes, 3, padding=dilation, dilation=dilation),
    )
    for m in head:
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return head


def bn_head(in_channels: int, channels: int, num_classes: int, dilation: int, dropout: float,
            bn_momentum: float | None) -> nn.Sequential:
    """arvijj/icam lib/net/deeplabv1.py: 3x3 conv (dilation, no bias) -> BN -> ReLU
    -> 1x1 conv (no bias) -> BN -> ReLU -> Dropout -> 1x1 conv (bias) to K;
    Kaiming (fan_out) init, BN running-statistics momentum `bn_momentum` (authors:
    3e-4; None: a cumulative average, exact whatever the run length)."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(channels, momentum=bn_momentum),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels, momentum=bn_momentum),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(channels, num_classes, 1),
    )
    for m in head:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return head


HEADS: dict[str, Callable[[int, int, int, int, float, float | None], nn.Sequential]] = {
    "largefov": largefov_head, "bn": bn_head}
"""(in_channels, head_channels, num_classes, dilation, dropout, bn_momentum) -> head module."""


class DeepLabV1(nn.Module):
    """DeepLab-v1 on the stride-8 backbone map with a head from ``HEADS``:
    "largefov" (two 3x3 dilated convs, as SEAM's ResNet-38 DeepLab) or "bn"
    (the authors' lib/net/deeplabv1.py). Logits stay at stride 8; the caller
    upsamples them. Inputs must be normalised with backbone.mean/std.

    dilation: the large field of view; on small crops (e.g. 96 px, a 12 x 12
    map) most of a 12-dilated kernel falls on padding, so CPU demos may lower it.
    dropout: 0.5 in the authors' head.
    bn_momentum: the head's BatchNorm running-statistics momentum (authors 3e-4:
    after a few hundred steps the running statistics are still ~the init ones,
    so a short run predicts garbage in eval mode; None: cumulative average).
    train_norm: False freezes the affine parameters of every BatchNorm (running
    statistics still update), as the authors' get_parameter_groups, which hands
    the optimizer conv weights and biases only.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        head_channels: int = 512,
        dilation: int = 12,
        dropout: float = 0.0,
        head: str = "largefov",
        train_norm: bool = True,
        bn_momentum: float | None = BN_MOMENTUM,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2, got {num_classes}")
        if dilation < 1 or head_channels < 1:
            raise ValueError(f"dilation and head_channels must be >= 1, got {dilation}, {head_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {head!r}")
        self.backbone = backbone
        self.backbone_maps = slice(-1, None)
        self.num_classes = num_classes
        self.head = HEADS[head](backbone.out_channels, head_channels, num_classes, dilation, dropout, bn_momentum)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not train_norm:
                module.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> logits [B,K,~H/8,~W/8]."""
        return self.head(self.backbone.features(x, self.backbone_maps)[0])

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """SGD groups: backbone at lr, the head at 10x (biases 2x/20x, no decay)."""
        return reference_param_groups(self.backbone, [self.head], lr, weight_decay)
