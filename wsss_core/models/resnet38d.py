"""ResNet-38d: the Wider-or-Deeper ResNet-38 (Wu et al., 2019) with the
dilations of psa/SEAM (output stride 8). Module names equal the keys of the
converted ImageNet state dict those codebases distribute (conv1a, b2, b2_1,
..., b4_5, b5, b5_1, b5_2, b6, b7, bn7; inside blocks bn_branch2a,
conv_branch2a, bn_branch2b1, conv_branch2b1, [bn_branch2b2, conv_branch2b2],
conv_branch1), so such a file loads with `load_weights`."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, load_strict, read_state_dict

SEAM_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU, 3x3 conv (mid, stride, first_dilation),
    BN-ReLU, 3x3 conv (out, dilation); 1x1 projection of the activated input
    when the shape changes. `forward` returns (output, activated input)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, dilation: int = 1, first_dilation: int | None = None):
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, mid, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(mid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(act)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(act))))
        return shortcut + y, act


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (1x1 to out/4, 3x3 dilated to out/2, 1x1 to
    out) with Dropout2d before the last two convs; always projected shortcut."""

    def __init__(self, cin: int, cout: int, dilation: int, dropout: float):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = F.relu(self.bn_branch2a(x))
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(act)))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return self.conv_branch1(act) + y, act


class ResNet38d(Backbone):
    """ResNet-38d, output stride 8: conv1a (64), b2 x3 (128, /2), b3 x3 (256, /4),
    b4 x6 (512, /8), b5 x3 (1024, dilation 2), b6 (2048, dilation 4, dropout 0.3),
    b7 (4096, dilation 4, dropout 0.5), bn7. `forward_stages` returns psa's
    conv3..conv6: the activated inputs of b4 (256 ch, stride 4), b5 (512), b6
    (1024) and ReLU(bn7) (4096), the last three at stride 8. ImageNet normalisation.

    reference_freezing (what build_backbone sets when weights are loaded): as
    SEAM, BatchNorm stays in eval mode with frozen affine parameters and
    conv1a, b2, b2_1, b2_2 are frozen. Without it everything trains (random init).
    """

    def __init__(self, reference_freezing: bool = False):
        super().__init__()
        self.stage_channels = (256, 512, 1024, 4096)
        self.reference_freezing = reference_freezing
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)
        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)
        self.b4 = PreActBlock(256, 512, 512, stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", PreActBlock(512, 512, 512))
        self.b5 = PreActBlock(512, 512, 1024, dilation=2, first_dilation=1)
        self.b5_1 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b6 = PreActBottleneck(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        if reference_freezing:
            self._freeze()

    def _freeze(self) -> None:
        for name in SEAM_FROZEN:
            getattr(self, name).requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(False)
        self.train(self.training)

    def load_weights(self, path: str | Path) -> None:
        """Load the converted (PyTorch) ImageNet state dict of psa/SEAM."""
        if str(path).endswith(".params"):
            raise ValueError(
                f"{path} is the MXNet original; convert it to a PyTorch state dict first "
                "(e.g. SEAM's network/resnet38d.py convert_mxnet_to_torch) and pass the .pth"
            )
        load_strict(self, read_state_dict(path), str(path))

    def train(self, mode: bool = True) -> "ResNet38d":
        """As nn.Module.train, but BatchNorm stays in eval under reference_freezing."""
        super().train(mode)
        if self.reference_freezing:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> [conv3 [B,256,H/4,W/4], conv4 [B,512,H/8,W/8],
        conv5 [B,1024,..], conv6 [B,4096,..]] (ceil sizes)."""
        x = self.conv1a(x)
        for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2"):
            x, _ = getattr(self, name)(x)
        x, conv3 = self.b4(x)
        for i in range(1, 6):
            x, _ = getattr(self, f"b4_{i}")(x)
        x, conv4 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        return [conv3, conv4, conv5, F.relu(self.bn7(x))]
