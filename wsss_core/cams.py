"""Class activation maps as pixel-wise class probabilities (paper Sec. 3.1, Eq. 1).

K = C + 1 classes, index 0 is background. The background is present in every
image: its image-level label is y_0 = 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND_MODES = ("one_minus_sum", "threshold")


def softmax_cams(logits: Tensor, labels: Tensor | None = None) -> Tensor:
    """Eq. 1: a_k = softmax_k(s_k) per pixel. logits [B,K,h,w] -> probs [B,K,h,w].

    With ``labels`` [B,K] (background column included) the softmax runs over
    the present classes only (label conditioning at inference): absent
    classes get probability 0.
    """
    if labels is None:
        return torch.softmax(logits, dim=1)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B,K]={tuple(logits.shape[:2])}; got {tuple(labels.shape)}")
    present = labels.bool()[:, :, None, None]
    return torch.softmax(logits.masked_fill(~present, float("-inf")), dim=1)


def naive_cams(logits: Tensor) -> Tensor:
    """Per-class maps without the pixel-wise softmax (the "naive" variant of Table 5).

    a_k = sigmoid(s_k) independently per class: each map lies in [0, 1] but the
    classes of a pixel do not compete (no normalisation over k), as in SEAM-style
    per-class CAMs. logits [B,K,h,w] -> [B,K,h,w].
    """
    return torch.sigmoid(logits)


def image_labels_with_background(labels: Tensor) -> Tensor:
    """Prepend the background label y_0 = 1 (present in every image). [B,C] -> [B,K]."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B,C]; got shape {tuple(labels.shape)}")
    return torch.cat([labels.new_ones(labels.shape[0], 1), labels], dim=1)


def normalize_cams(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """Divide each map by its spatial maximum. cams [C',H,W] (non-negative) -> [C',H,W] in [0, 1]."""
    if cams.dim() != 3:
        raise ValueError(f"cams must be [C',H,W]; got shape {tuple(cams.shape)}")
    peak = cams.flatten(1).amax(dim=1).clamp_min(eps)
    return cams.clamp_min(0) / peak[:, None, None]


def cam_pseudo_label(
    fg_cams: Tensor,
    present: list[int],
    bg: str = "one_minus_sum",
    bg_threshold: float = 0.2,
) -> Tensor:
    """Pseudo-label map from foreground CAMs of one image.

    fg_cams [C,H,W]: one map per foreground class, map c belongs to label c + 1.
    present: the labels (in 1..C) of the classes in the image; the others never
    appear in the output. Each present map is divided by its max; the
    background score is
      * "one_minus_sum": clip(1 - sum of the normalised present maps, 0, 1);
      * "threshold": the constant ``bg_threshold`` (a pixel is background
        unless some normalised present map exceeds it).
    Returns the argmax over [background, present classes] as labels [H,W]
    int64 in {0..C}. (This is not an argmax over the raw softmax including
    background.)
    """
    if bg not in BACKGROUND_MODES:
        raise ValueError(f"bg={bg!r} is not allowed; use one of {BACKGROUND_MODES}")
    if fg_cams.dim() != 3:
        raise ValueError(f"fg_cams must be [C,H,W]; got shape {tuple(fg_cams.shape)}")
    num_fg = fg_cams.shape[0]
    bad = [c for c in present if not 1 <= c <= num_fg]
    if bad:
        raise ValueError(f"present={present!r} has labels {bad} outside 1..{num_fg}")
    if not 0.0 <= bg_threshold <= 1.0:
        raise ValueError(f"bg_threshold={bg_threshold!r} is not allowed; use a float in [0, 1]")
    classes = sorted(set(present))
    height, width = fg_cams.shape[1:]
    if not classes:
        return torch.zeros(height, width, dtype=torch.int64, device=fg_cams.device)
    fg = normalize_cams(fg_cams[[c - 1 for c in classes]])
    if bg == "one_minus_sum":
        background = (1.0 - fg.sum(dim=0)).clamp(0.0, 1.0)
    else:
        background = torch.full((height, width), bg_threshold, dtype=fg.dtype, device=fg.device)
    scores = torch.cat([background[None], fg], dim=0)
    lookup = torch.tensor([0, *classes], dtype=torch.int64, device=fg_cams.device)
    return lookup[scores.argmax(dim=0)]
