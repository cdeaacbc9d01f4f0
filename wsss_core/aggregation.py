"""Pixel- to image-level aggregation (paper Secs. 3.1-3.2, Eqs. 2-8).

Every aggregator has one signature

    aggregator(logits [B,K,h,w], probs [B,K,h,w], *, num_samples, generator, eps=0) -> [B,K,m]

returning image-level probabilities in [0, 1] (m = 1 for pooling, m =
num_samples for sampling), so a new one (e.g. p_k ~ a_k^gamma, the paper's
future work) is one function, passed by value to ``classification_loss``.
``eps`` smooths a probability p read off the maps to (p (1 - eps) + eps) / (1 + eps),
the sigmoid of the authors' probs_to_logits (arvijj/icam tool/probutils.py,
eps 1e-3); GAP, already a sigmoid of a logit, ignores it.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from wsss_core.cams import naive_cams
from wsss_core.losses import bce


class Aggregator(Protocol):
    def __call__(
        self, logits: Tensor, probs: Tensor, *, num_samples: int, generator: torch.Generator | None, eps: float = 0.0
    ) -> Tensor: ...


def smooth_probs(p: Tensor, eps: float) -> Tensor:
    """(p (1 - eps) + eps) / (1 + eps) = sigmoid(log(p (1 - eps) + eps) - log(1 - p (1 - eps))), any shape."""
    return (p * (1.0 - eps) + eps) / (1.0 + eps) if eps else p


def gap(
    logits: Tensor, probs: Tensor, *, num_samples: int = 1, generator: torch.Generator | None = None, eps: float = 0.0
) -> Tensor:
    """Eqs. 2-3: sigmoid of the spatial mean of the logits. -> [B,K,1]."""
    return torch.sigmoid(logits.mean(dim=(2, 3)))[:, :, None]


def gmp(
    logits: Tensor, probs: Tensor, *, num_samples: int = 1, generator: torch.Generator | None = None, eps: float = 0.0
) -> Tensor:
    """Eq. 4: spatial maximum of the probabilities (smoothed by eps). -> [B,K,1]."""
    return smooth_probs(probs.amax(dim=(2, 3))[:, :, None], eps)


def sample_by_weights(
    probs: Tensor, weights: Tensor, num_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``num_samples`` pixels per (image, class) with replacement from p ~ weights, return their probs.

    probs, weights [B,K,H,W] (weights >= 0); -> [B,K,num_samples]. The draw is
    not differentiated; gradients flow to the sampled entries of probs. A map
    whose weights sum to 0 (all activations underflowed) is sampled uniformly.
    ``generator`` must live on probs' device.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} is not allowed; use an integer >= 1")
    if probs.dim() != 4 or weights.shape != probs.shape:
        raise ValueError(f"probs and weights must both be [B,K,H,W]; got {tuple(probs.shape)}, {tuple(weights.shape)}")
    batch, classes = probs.shape[:2]
    flat = weights.detach().flatten(2).reshape(batch * classes, -1).to(torch.float64)
    empty = flat.sum(dim=1, keepdim=True) <= 0
    flat = torch.where(empty, torch.ones_like(flat), flat)
    index = torch.multinomial(flat, num_samples, replacement=True, generator=generator)
    return probs.flatten(2).gather(2, index.view(batch, classes, num_samples))


def importance_sample(probs: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Eqs. 5-6: sample pixels from p_k(i) = a_k(i) / sum_i a_k(i); return a_k at them.

    probs [B,K,H,W] -> [B,K,num_samples] sampled activations (with replacement).
    """
    return sample_by_weights(probs, probs, num_samples, generator)


def sample(
    logits: Tensor, probs: Tensor, *, num_samples: int = 1, generator: torch.Generator | None = None, eps: float = 0.0
) -> Tensor:
    """Importance sampling (Eqs. 5-6) as an aggregator (sampled values smoothed by eps). -> [B,K,num_samples]."""
    return smooth_probs(importance_sample(probs, num_samples, generator), eps)


AGGREGATORS: dict[str, Aggregator] = {"gap": gap, "gmp": gmp, "sample": sample}


def _resolve(name_or_fn: str | Aggregator, role: str) -> Aggregator:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in AGGREGATORS:
        raise ValueError(f"{role}={name_or_fn!r} is not allowed; use one of {sorted(AGGREGATORS)} or a function")
    return AGGREGATORS[name_or_fn]


def classification_loss(
    logits: Tensor,
    probs: Tensor,
    labels: Tensor,
    *,
    lam: float,
    pooling: str | Aggregator = "gap",
    num_samples: int = 1,
    naive: bool = False,
    generator: torch.Generator | None = None,
    sampling: str | Aggregator = "sample",
    eps: float = 0.0,
    pooling_background: bool = True,
    sampling_background: bool = True,
) -> Tensor:
    """Eq. 8: (1 - lam) * L_ce(y, y_hat) + lam * L_ce(y, y_tilde), a scalar.

    logits, probs [B,K,h,w]; labels [B,K] with y_0 = 1 (background). y_hat
    comes from ``pooling`` ("gap", "gmp" or an aggregator), y_tilde from
    ``sampling`` (importance sampling of ``num_samples`` pixels; the BCE is
    averaged over the samples, as in Table 6). L_ce is Eq. 7 (mean over K,
    then over the batch). lam = 0 / 1 skips the other term entirely (no
    random draw at lam = 0). ``naive=True`` is the Table 5 ablation: probs
    are replaced by ``naive_cams(logits)`` (per-class sigmoid, no pixel-wise
    softmax) for both terms. ``eps``: probability smoothing of the aggregators
    (module docstring). ``pooling_background`` / ``sampling_background``:
    whether class 0 enters that term's BCE (Eq. 7 as printed: both; the
    authors' train_cam.py: GMP yes, GAP and sampling no).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam!r} is not allowed; use a float in [0, 1]")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B,K]={tuple(logits.shape[:2])}; got {tuple(labels.shape)}")
    pool_fn, sample_fn = _resolve(pooling, "pooling"), _resolve(sampling, "sampling")
    if naive:
        probs = naive_cams(logits)
    target = labels.to(probs.dtype)[:, :, None]
    loss = probs.new_zeros(())
    if lam < 1.0:
        y_hat = pool_fn(logits, probs, num_samples=num_samples, generator=generator, eps=eps)
        first = 0 if pooling_background else 1
        loss = loss + (1.0 - lam) * bce(y_hat[:, first:], target[:, first:].expand_as(y_hat[:, first:]))
    if lam > 0.0:
        y_tilde = sample_fn(logits, probs, num_samples=num_samples, generator=generator, eps=eps)
        first = 0 if sampling_background else 1
        loss = loss + lam * bce(y_tilde[:, first:], target[:, first:].expand_as(y_tilde[:, first:]))
    return loss
