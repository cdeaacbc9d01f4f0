"""Loss terms of the CAM network: BCE (Eq. 7), the feature similarity loss
(Eqs. 9-12, implemented in ``wsss_core.fsl``) and SEAM's equivariance terms.

The paper sums L_cls + L_fs + L_er + L_ecr with unit weights (Sec. 4.1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsss_core.fsl import (
    FeatureSimilarityLoss,
    feature_similarity_loss,
    feature_similarity_loss_dense,
)

__all__ = [
    "FeatureSimilarityLoss",
    "bce",
    "equivariant_cross_regularization",
    "equivariant_regularization",
    "feature_similarity_loss",
    "feature_similarity_loss_dense",
]


def bce(pred: Tensor, target: Tensor) -> Tensor:
    """Eq. 7 on probabilities, averaged over all elements. pred, target same shape -> scalar.

    pred is clamped to [eps, 1 - eps] (eps = machine epsilon of its dtype), so
    the loss and its gradient stay finite at exactly 0 and 1.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    eps = torch.finfo(pred.dtype).eps
    p = pred.clamp(eps, 1.0 - eps)
    return -(target * torch.log(p) + (1.0 - target) * torch.log1p(-p)).mean()


def equivariant_regularization(a: Tensor, b: Tensor, *, foreground_only: bool = True) -> Tensor:
    """SEAM's ER: mean |A(T(x)) - T(A(x))|.

    a: CAMs of the transformed image, b: the transformed CAMs of the original,
    both [B,K,h,w] in the same frame. With ``foreground_only`` (SEAM) the
    background channel 0 is left out.
    """
    if a.shape != b.shape:
        raise ValueError(f"ER inputs must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    if foreground_only:
        a, b = a[:, 1:], b[:, 1:]
    return (a - b).abs().mean()


def _max_onehot(cams: Tensor) -> Tensor:
    """Zero each pixel's non-maximal foreground scores; background (channel 0) kept
    (YudeWang/SEAM train_SEAM.py max_onehot). [B,K,h,w] -> [B,K,h,w]."""
    fg = cams[:, 1:]
    return torch.cat([cams[:, :1], fg * (fg == fg.amax(dim=1, keepdim=True))], dim=1)


def equivariant_cross_regularization(
    raw_1: Tensor,
    refined_1: Tensor,
    raw_2: Tensor,
    refined_2: Tensor,
    *,
    top_fraction: float = 0.2,
    max_onehot: bool = True,
) -> Tensor:
    """SEAM's ECR: |raw CAM of one branch - PCM-refined CAM of the other|, both ways.

    All inputs [B,K,h,w] in the same frame (branch 2's transform applied to
    branch 1). The raw CAM is the (detached) target; with ``max_onehot`` it
    keeps only each pixel's top foreground class, as SEAM's code does. Per image the
    largest ``top_fraction`` of the K*h*w errors are averaged (hard-example
    mining, SEAM: 0.2; 1.0 is a plain mean). Returns the sum of the two
    directions (scalar).
    """
    shapes = {tuple(t.shape) for t in (raw_1, refined_1, raw_2, refined_2)}
    if len(shapes) != 1:
        raise ValueError(f"ECR inputs must share one shape; got {sorted(shapes)}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction={top_fraction!r} is not allowed; use a float in (0, 1]")

    def one_way(raw: Tensor, refined: Tensor) -> Tensor:
        target = raw.detach()
        if max_onehot:
            target = _max_onehot(target)
        errors = (target - refined).abs().flatten(1)
        k = max(1, int(errors.shape[1] * top_fraction))
        return errors.topk(k, dim=1).values.mean()

    return one_way(raw_2, refined_1) + one_way(raw_1, refined_2)
