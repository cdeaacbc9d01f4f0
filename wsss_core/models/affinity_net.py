"""AffinityNet (Ahn & Kwak, CVPR 2018, as used by SEAM): pixel-pair affinities
on the stride-8 feature map, their labels and loss.

Pairs: every pixel i and each offset d of `pair_offsets(radius)` (a half disk,
so each unordered pair appears once) with j = i + d inside the map. Pair tensors
are laid out [B, P, h, w]: entry (p, y, x) is the pair ((y, x), (y, x) + d_p).
psa crops the map so every source pixel has all P partners; here every
in-bounds pair is used and out-of-bounds ones are masked (same pairs otherwise).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .base import Backbone
from .param_groups import reference_param_groups

IGNORE = 255


def pair_offsets(radius: int = 5) -> list[tuple[int, int]]:
    """Half-disk offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2, dy > 0 or
    (dy = 0 and dx > 0), as psa's `get_indices_of_pairs` (default radius 5: 34 offsets)."""
    if radius < 2:
        raise ValueError(f"radius must be >= 2 (a radius of 1 holds no pairs), got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius) if dy * dy + dx * dx < radius * radius
    ]
    return offsets


def _partners(x: torch.Tensor, radius: int, fill: float) -> torch.Tensor:
    """x [B,C,h,w] -> [B,C,P,h,w]: the value at (y, x) + d_p for each offset
    (`fill` where that falls outside the map)."""
    h, w = x.shape[-2:]
    r = radius - 1
    padded = F.pad(x, (r, r, 0, r), value=fill)
    return torch.stack([padded[..., dy : dy + h, r + dx : r + dx + w] for dy, dx in pair_offsets(radius)], dim=2)


def _pair_valid(h: int, w: int, radius: int, device: torch.device) -> torch.Tensor:
    """[P,h,w] bool: the partner (y, x) + d_p lies inside the h x w map."""
    ones = torch.ones(1, 1, h, w, device=device)
    return _partners(ones, radius, 0.0)[0, 0] > 0


def affinity_labels(
    label: torch.Tensor, radius: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """label [B,h,w] int (0 background, 1..C foreground, 255 ignore) at the
    feature resolution -> (bg_pos, fg_pos, neg), bool [B,P,h,w]:
    bg_pos both pixels background, fg_pos both the same foreground class, neg
    different classes; pairs touching an ignored pixel or leaving the map are in none."""
    src = label[:, None, None].long()  # [B,1,1,h,w]
    dst = _partners(label[:, None].long(), radius, IGNORE)  # [B,1,P,h,w]
    valid = (src != IGNORE) & (dst != IGNORE)
    same = src == dst
    bg_pos = valid & same & (src == 0)
    fg_pos = valid & same & (src != 0)
    neg = valid & ~same
    return bg_pos[:, 0], fg_pos[:, 0], neg[:, 0]


class _PairL1(torch.autograd.Function):
    """features [B,C,h,w] -> [B,P,h,w]: mean_c |f(y, x) - f((y, x) + d_p)|, the
    partner 0 beyond the map. Saves only the features and recomputes each
    offset's difference in backward (autograd would keep P of them), and
    reuses one [B,C,h,w] buffer for all offsets."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, radius: int) -> torch.Tensor:
        ctx.radius = radius
        ctx.save_for_backward(features)
        h, w = features.shape[-2:]
        r = radius - 1
        padded = F.pad(features, (r, r, 0, r))
        buffer = torch.empty_like(features)
        distances = [
            torch.sub(features, padded[..., dy : dy + h, r + dx : r + dx + w], out=buffer).abs_().mean(dim=1)
            for dy, dx in pair_offsets(radius)
        ]
        return torch.stack(distances, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (features,) = ctx.saved_tensors
        c, h, w = features.shape[-3:]
        r = ctx.radius - 1
        padded = F.pad(features, (r, r, 0, r))
        grad_padded = torch.zeros_like(padded)
        grad_features = grad_padded[..., :h, r : r + w]  # where the features sit in the padded map
        buffer = torch.empty_like(features)
        grad = grad / c
        for p, (dy, dx) in enumerate(pair_offsets(ctx.radius)):
            partner = (..., slice(dy, dy + h), slice(r + dx, r + dx + w))
            torch.sub(features, padded[partner], out=buffer).sign_().mul_(grad[:, p, None])
            grad_features += buffer
            grad_padded[partner] -= buffer
        return grad_features, None


def pair_affinity(features: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """features [B,C,h,w] -> a [B,P,h,w] = exp(-mean_c |f_i - f_j|) (psa Eq. 3)
    for each pair; out-of-map pairs are 0. Shifted slices, one offset at a
    time; autograd keeps the features and the [B,P,h,w] result, nothing per offset."""
    h, w = features.shape[-2:]
    return torch.exp(-_PairL1.apply(features, radius)) * _pair_valid(h, w, radius, features.device)


def affinity_loss(
    affinity: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """psa's balanced cross-entropy over pairs (Eqs. 7-9): affinity [B,P,h,w]
    in [0,1] and the masks of `affinity_labels` -> scalar
    L = L_bg/4 + L_fg/4 + L_neg/2, each term the mean over its pairs of
    -log(a + eps) (positives) or -log(1 + eps - a) (negatives)."""
    affinity = affinity.float()

    def mean_over(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum() / (mask.sum() + eps)

    pos_loss = -torch.log(affinity + eps)
    neg_loss = -torch.log(1.0 + eps - affinity)
    return mean_over(bg_pos, pos_loss) / 4 + mean_over(fg_pos, pos_loss) / 4 + mean_over(neg, neg_loss) / 2


class AffinityNet(nn.Module):
    """psa's AffinityNet head on a stride-8 backbone: the last three stage maps
    -> 1x1 convs (no bias) to 64/128/256 channels, ELU -> concatenated ->
    1x1 conv (448 -> 448, no bias), ELU. Inputs normalised with backbone.mean/std."""

    def __init__(self, backbone: Backbone, proj_channels: tuple[int, int, int] = (64, 128, 256), radius: int = 5):
        super().__init__()
        pair_offsets(radius)  # validates the radius
        self.backbone = backbone
        self.backbone_maps = slice(-3, None)
        self.radius = radius
        self.projections = nn.ModuleList(
            nn.Conv2d(c, p, 1, bias=False) for c, p in zip(backbone.stage_channels[-3:], proj_channels)
        )
        width = sum(proj_channels)
        self.fuse = nn.Conv2d(width, width, 1, bias=False)
        for proj in self.projections:
            nn.init.kaiming_normal_(proj.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> affinity features [B,448,~H/8,~W/8]."""
        stages = self.backbone.features(x, self.backbone_maps)
        projected = [F.elu(proj(s)) for proj, s in zip(self.projections, stages)]
        return F.elu(self.fuse(torch.cat(projected, dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> pair affinities [B,P,h,w] for training (see `affinity_loss`)."""
        return pair_affinity(self.features(x), self.radius)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> sparse COO affinity matrix [B,hw,hw] (float32): symmetric,
        exp(-mean L1 feature distance) for pixels closer than `radius`
        (diagonal 1), no entry beyond. Input of `random_walk`."""
        feats = self.features(x).float()
        return sparse_affinity(feats, self.radius)

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """SGD groups: backbone at lr, the new layers at 10x (psa)."""
        return reference_param_groups(self.backbone, [*self.projections, self.fuse], lr, weight_decay)


def sparse_affinity(features: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """features [B,C,h,w] -> coalesced sparse COO [B,hw,hw]: pair affinities at
    (i, j) and (j, i), ones on the diagonal, no entry for pixels radius or
    further apart; at most (2P + 1) hw entries per image."""
    b, _, h, w = features.shape
    n = h * w
    pairs = pair_affinity(features, radius)  # [B,P,h,w]
    valid = _pair_valid(h, w, radius, features.device)  # [P,h,w]
    index = torch.arange(n, device=features.device).view(h, w)
    src = index.expand_as(valid)[valid]
    dst = torch.stack([index + dy * w + dx for dy, dx in pair_offsets(radius)])[valid]
    diagonal = torch.arange(n, device=features.device)
    rows, cols = torch.cat([src, dst, diagonal]), torch.cat([dst, src, diagonal])
    values = pairs[:, valid]  # [B,n_pairs]
    values = torch.cat([values, values, torch.ones(b, n, device=features.device, dtype=values.dtype)], dim=1)
    batch = torch.arange(b, device=features.device).repeat_interleave(rows.numel())
    indices = torch.stack([batch, rows.repeat(b), cols.repeat(b)])
    return torch.sparse_coo_tensor(indices, values.flatten(), (b, n, n), check_invariants=True).coalesce()
