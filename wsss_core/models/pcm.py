"""SEAM's pixel correlation module (PCM; Wang et al., CVPR 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelCorrelationModule(nn.Module):
    """Refines CAMs by propagating them along feature affinities.

    As SEAM: two stride-8 backbone maps (detached) are projected by 1x1 convs
    (no bias) + ReLU to 64 and 128 channels, concatenated with the input image
    resized to their size, and projected again by a 1x1 conv (f9). The affinity
    between pixels i and j is ReLU(cos(f_i, f_j)), normalised so that each
    target pixel's weights sum to 1, and the revised CAM is
    y_rv[k, j] = sum_i y[k, i] * aff[i, j].
    """

    def __init__(self, in_channels: tuple[int, int], proj_channels: tuple[int, int] = (64, 128)):
        super().__init__()
        self.proj_low = nn.Conv2d(in_channels[0], proj_channels[0], 1, bias=False)
        self.proj_high = nn.Conv2d(in_channels[1], proj_channels[1], 1, bias=False)
        embed = sum(proj_channels) + 3
        self.embed = nn.Conv2d(embed, embed - 3, 1, bias=False)
        nn.init.kaiming_normal_(self.proj_low.weight)
        nn.init.kaiming_normal_(self.proj_high.weight)
        nn.init.xavier_uniform_(self.embed.weight, gain=4)

    def affinity(self, image: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """image [B,3,H,W], low [B,c1,h,w], high [B,c2,h,w] -> aff [B,hw,hw], columns sum to ~1."""
        h, w = high.shape[-2:]
        image_small = F.interpolate(image, (h, w), mode="bilinear", align_corners=True)
        low = F.relu(self.proj_low(low.detach()))
        high = F.relu(self.proj_high(high.detach()))
        f = self.embed(torch.cat([image_small, low, high], dim=1)).flatten(2)  # [B,E,hw]
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        aff = F.relu(f.transpose(1, 2) @ f)
        return aff / (aff.sum(dim=1, keepdim=True) + 1e-5)

    def forward(
        self, cams: torch.Tensor, image: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """cams [B,K,h',w'] (resized to the feature size h x w), image [B,3,H,W],
        low/high stride-8 maps [B,c,h,w] -> revised CAMs [B,K,h,w]."""
        b, k = cams.shape[:2]
        h, w = high.shape[-2:]
        if cams.shape[-2:] != (h, w):
            cams = F.interpolate(cams, (h, w), mode="bilinear", align_corners=True)
        aff = self.affinity(image, low, high)
        return (cams.flatten(2).to(aff.dtype) @ aff).view(b, k, h, w)
