"""torchvision ResNet-50/101 with output stride 8 (dilated layer3 and layer4)."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .base import Backbone, load_strict, read_state_dict

_WEIGHT_ENUMS = {"resnet50": torchvision.models.ResNet50_Weights, "resnet101": torchvision.models.ResNet101_Weights}


class DilatedResNet(Backbone):
    """torchvision ResNet with replace_stride_with_dilation=[False, True, True]
    (DeepLab's output stride 8). `forward_stages` -> layer1..layer4:
    [256 ch at stride 4, 512, 1024, 2048 at stride 8]. ImageNet normalisation.

    weights: None (random init), a local file with torchvision's key names (the
    ImageNet `fc.*` keys are accepted and dropped), or a torchvision weights
    enum name such as "IMAGENET1K_V2" (downloads once; needs internet).
    """

    def __init__(self, name: str = "resnet50", weights: str | Path | None = None):
        super().__init__()
        if name not in _WEIGHT_ENUMS:
            raise ValueError(f"unknown dilated ResNet {name!r}; allowed: {', '.join(_WEIGHT_ENUMS)}")
        net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=[False, True, True])
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = (256, 512, 1024, 2048)
        if weights is not None:
            self._load(name, weights)

    def _load(self, name: str, weights: str | Path) -> None:
        enum = _WEIGHT_ENUMS[name]
        if not Path(weights).is_file() and str(weights) in enum.__members__:
            state = enum[str(weights)].get_state_dict(progress=True)
        elif not Path(weights).is_file():
            raise ValueError(
                f"weights {weights!r} is neither a local file nor a torchvision {enum.__name__} name "
                f"({', '.join(enum.__members__)})"
            )
        else:
            state = read_state_dict(weights)
        renamed = {_to_own_key(k): v for k, v in state.items() if not k.startswith("fc.")}
        load_strict(self, renamed, str(weights))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> [[B,256,H/4,W/4], [B,512,H/8,W/8], [B,1024,..], [B,2048,..]]."""
        x = self.layer1(self.stem(x))
        maps = [x]
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps


def _to_own_key(key: str) -> str:
    """torchvision key -> ours: conv1/bn1 live in `stem` (indices 0 and 1)."""
    for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key
