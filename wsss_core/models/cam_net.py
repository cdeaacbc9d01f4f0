"""The CAM network: backbone + dropout + 1x1 classifier over K = C+1 classes."""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone
from .param_groups import reference_param_groups
from .pcm import PixelCorrelationModule

CAM_MODES = ("plain", "seam")


class CAMOutput(NamedTuple):
    """logits [B,K,h,w]; probs [B,K,h,w] = softmax over K (Eq. 1);
    refined [B,K,h,w]: the PCM output in "seam" mode (revised logits for
    pcm_source "logits", revised CAMs for "seam"), else None."""

    logits: torch.Tensor
    probs: torch.Tensor
    refined: torch.Tensor | None


def seam_normalized_cams(logits: torch.Tensor) -> torch.Tensor:
    """SEAM's PCM input: logits [B,K,h,w] -> ReLU CAMs divided by their spatial
    max, background = 1 - max foreground, non-maximal foreground set to 0."""
    cams = F.relu(logits)
    cams = F.relu(cams - 1e-5) / (cams.flatten(2).amax(dim=2)[..., None, None] + 1e-5)
    fg = cams[:, 1:]
    fg_max = fg.amax(dim=1, keepdim=True)
    fg = torch.where(fg < fg_max, torch.zeros_like(fg), fg)
    return torch.cat([1 - fg_max, fg], dim=1)


PCM_SOURCES = {
    "logits": lambda logits: logits,  # arvijj/icam network/resnet38_cam.py: not detached
    "seam": lambda logits: seam_normalized_cams(logits.detach()),  # YudeWang/SEAM network/resnet38_SEAM.py
}
"""What the PCM revises: logits [B,K,h,w] -> its input [B,K,h,w]."""


class CAMNet(nn.Module):
    """CAM network of the paper (Sec. 4.1): backbone, Dropout2d, 1x1 conv
    without bias (as SEAM) to K = C+1 classes (index 0 = background).

    mode "seam" adds SEAM's pixel correlation module on the two stride-8 maps
    before the last (`forward_stages(x)[-3:-1]`), whose features are detached.
    pcm_source "logits" (the authors' code) revises the logits themselves, so
    the PCM's losses also train the classifier; "seam" revises SEAM's detached
    max-normalised ReLU CAMs (`seam_normalized_cams`). The siamese two-scale
    pass and the ER/ECR losses are composed by wsss_core.formulations.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        mode: Literal["plain", "seam"] = "plain",
        dropout: float = 0.5,
        pcm_source: Literal["logits", "seam"] = "logits",
    ):
        super().__init__()
        if mode not in CAM_MODES:
            raise ValueError(f"CAMNet mode must be one of {CAM_MODES}, got {mode!r}")
        if pcm_source not in PCM_SOURCES:
            raise ValueError(f"pcm_source must be one of {tuple(PCM_SOURCES)}, got {pcm_source!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.mode = mode
        self.pcm_source = pcm_source
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.pcm = PixelCorrelationModule(backbone.stage_channels[-3:-1]) if mode == "seam" else None
        self.backbone_maps = slice(-3 if self.pcm is not None else -1, None)

    def forward(self, x: torch.Tensor) -> CAMOutput:
        """x [B,3,H,W] normalised with backbone.mean/std -> CAMOutput at stride 8."""
        stages = self.backbone.features(x, self.backbone_maps)
        logits = self.classifier(self.dropout(stages[-1]))
        probs = torch.softmax(logits.float(), dim=1).to(logits.dtype)
        refined = None
        if self.pcm is not None:
            refined = self.pcm(PCM_SOURCES[self.pcm_source](logits), x, stages[-3], stages[-2])
        return CAMOutput(logits, probs, refined)

    def new_layers(self) -> list[nn.Module]:
        """Layers trained from scratch (10x learning rate)."""
        return [m for m in (self.classifier, self.pcm) if m is not None]

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """SGD groups: backbone at lr, new layers at 10x (biases 2x/20x, no decay)."""
        return reference_param_groups(self.backbone, self.new_layers(), lr, weight_decay)
