"""Feature similarity loss (paper Sec. 3.3, Eqs. 9-12).

    L_fs = -1/Z * sum_{i,j} w_ij * g(a_i, a_j) * f(delta(x_i, x_j))                   (9)
    w_ij = 1/(2 pi sigma^2) * exp(-||p_i - p_j||^2 / (2 sigma^2))                     (10)
    g    = 1/2 * ||a_i - a_j||^2                                                       (11)
    f    = tanh(mu + log(delta / (1 - delta))),  delta = ||x_i - x_j||_1 / 3          (12)

The sum runs over ordered pairs (i, j) of one image; the loss of a batch is
the mean over its images. x is RGB in [0, 1]. The normaliser Z
(``normalization``):

* "pixels" (default): Z = HW, the scale of the authors' code (arvijj/icam
  tool/probutils.py divides the sum of w ||a_i - a_j||^2 f by n*h*w and
  train_cam.py adds 0.5 x it), so this loss with weight 1 equals their term;
* "pairs": Z = (HW)^2, Eq. 9 as printed; HW times weaker (~3000x at 56 x 56).

Choices the paper leaves open (documented, shared by both implementations):

* the logit of Eq. 12 is smoothed as in the authors' code,
  log((delta + DELTA_EPS) / (1 - delta + DELTA_EPS)) with delta clamped to
  [0, 1], so it stays finite for identical or opposite colours.
* An image larger than the prediction is resized to the prediction's size
  (``RESIZERS``): "area" (the mean colour of the pixels a prediction covers,
  this function's default), "bilinear" (antialiased) or "bilinear_corners"
  (the authors' train_cam.py, the pipeline's default). A smaller image is refused.

Two implementations:

* ``feature_similarity_loss_dense``: the equation written out over all
  (HW)^2 pairs with autograd; O((HW)^2) memory, for tests.
* ``feature_similarity_loss``: production. The Gaussian is truncated to the
  disk of radius sigma * sqrt(-2 ln(1 - mass)) that holds ``mass`` of its
  probability mass (radius follows the current sigma; it is not
  differentiated). f, w and g are symmetric, so only half the window is
  visited and doubled. A custom autograd Function computes, in one pass, the
  value and the analytic gradients for probs (sum_j w f (a_i - a_j)), sigma
  (dw/dsigma = w (rho^2/sigma^3 - 2/sigma)) and mu (df/dmu = 1 - f^2).
  Two backends compute the same sums:
    - "numba" (default for CPU tensors): a fused multi-threaded kernel, one
      image row per task, per-thread gradient buffers (no races);
    - "torch" (default for CUDA tensors, device-agnostic): per row offset dy,
      rows y and y + dy are split into column blocks, the prediction dot
      products of a block pair come from one batched matmul, and f, w, g are
      elementwise tensors of the block pair.
  The default ``mass`` is 1 - 1e-6 (radius 5.26 sigma). Any mass >= 0.999 is
  allowed, but the sigma gradient weights the Gaussian tail by rho^2, so the
  minimal 0.999 (radius 3.72 sigma) can leave it (and, where the terms of
  Eq. 9 cancel, the value) a few percent off the dense sum; 1 - 1e-6 keeps
  value and gradients within ~1e-3 of it, at about twice the cost.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DELTA_EPS = 1e-5  # arvijj/icam tool/probutils.py
NORMALIZATIONS = ("pixels", "pairs")
RESIZERS = {
    "area": lambda image, size: F.interpolate(image, size=size, mode="area"),
    "bilinear": lambda image, size: F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True),
    # arvijj/icam train_cam.py: F.interpolate(img, (h, w), mode="bilinear", align_corners=True)
    "bilinear_corners": lambda image, size: F.interpolate(image, size=size, mode="bilinear", align_corners=True),
}
"""How an image larger than the predictions is resized to their size: (image [B,3,H',W'], (H, W)) -> [B,3,H,W]."""
RESIZE_MODES = tuple(RESIZERS)
BACKENDS = ("auto", "numba", "torch")
DEFAULT_MASS = 1.0 - 1e-6
MIN_MASS = 0.999
MIN_COLUMN_TILE = 16

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's default OpenMP layer shares libgomp with torch: once the kernel
    # has run, torch's own OpenMP regions run wider than torch.get_num_threads()
    # and a one-thread trial takes two cores. The workqueue layer stays apart.
    numba.config.THREADING_LAYER = "workqueue"


def window_radius(sigma: float, mass: float = DEFAULT_MASS) -> float:
    """Radius of the disk holding ``mass`` of an isotropic 2-D Gaussian.

    P(||p|| <= r) = 1 - exp(-r^2 / (2 sigma^2))  =>  r = sigma * sqrt(-2 ln(1 - mass)).
    """
    if not MIN_MASS <= mass < 1.0:
        raise ValueError(f"mass={mass!r} is not allowed; use a float in [{MIN_MASS}, 1)")
    if not (sigma > 0.0 and math.isfinite(sigma)):
        raise ValueError(f"sigma={sigma!r} is not allowed; use a positive finite float")
    return sigma * math.sqrt(-2.0 * math.log1p(-mass))


def gaussian_weight(dist2: Tensor, sigma: Tensor) -> Tensor:
    """Eq. 10 for squared pixel distances ``dist2`` (any shape)."""
    return torch.exp(-dist2 / (2.0 * sigma**2)) / (2.0 * math.pi * sigma**2)


def dissimilarity_sign(delta: Tensor, mu: Tensor) -> Tensor:
    """Eq. 12: f = tanh(mu + log((delta + eps) / (1 - delta + eps))), delta clamped to [0, 1]."""
    delta = delta.clamp(0.0, 1.0)
    return torch.tanh(mu + torch.log(delta + DELTA_EPS) - torch.log(1.0 - delta + DELTA_EPS))


def pair_normalizer(height: int, width: int, normalization: str) -> int:
    """Z of Eq. 9 for one H x W image: HW ("pixels", authors' code) or (HW)^2 ("pairs", paper)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not allowed; use one of {NORMALIZATIONS}")
    return height * width if normalization == "pixels" else (height * width) ** 2


def match_image_to_probs(image: Tensor, probs: Tensor, resize: str = "area") -> Tensor:
    """Validate shapes and resize ``image`` [B,3,H',W'] to probs' [B,K,H,W] size.

    Returns [B,3,H,W] in probs' dtype. H' >= H and W' >= W are required.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r} is not allowed; use one of {RESIZE_MODES}")
    if probs.dim() != 4:
        raise ValueError(f"probs must be [B,K,H,W]; got shape {tuple(probs.shape)}")
    if image.dim() != 4 or image.shape[1] != 3 or image.shape[0] != probs.shape[0]:
        raise ValueError(
            f"image must be [B,3,H,W] RGB with B={probs.shape[0]}; got shape {tuple(image.shape)}"
        )
    size = tuple(probs.shape[-2:])
    if image.shape[-2] < size[0] or image.shape[-1] < size[1]:
        raise ValueError(
            f"image size {tuple(image.shape[-2:])} is smaller than probs size {size}; "
            "the image must be at least as large as the predictions"
        )
    image = image.to(probs.dtype)
    if tuple(image.shape[-2:]) == size:
        return image
    return RESIZERS[resize](image, size)


def feature_similarity_loss_dense(
    image: Tensor,
    probs: Tensor,
    sigma: float | Tensor,
    mu: float | Tensor,
    normalization: str = "pixels",
    *,
    resize: str = "area",
) -> Tensor:
    """Eq. 9 over all ordered pixel pairs, with autograd; O((HW)^2 * K) memory.

    image [B,3,H',W'] RGB in [0, 1]; probs [B,K,H,W]; sigma, mu floats or
    0-d tensors. Returns the batch mean of Eq. 9 (0-d). Reference for tests.
    """
    norm = pair_normalizer(*probs.shape[-2:], normalization)
    image = match_image_to_probs(image, probs, resize)
    sigma = torch.as_tensor(sigma, dtype=probs.dtype, device=probs.device)
    mu = torch.as_tensor(mu, dtype=probs.dtype, device=probs.device)
    _, _, height, width = probs.shape
    n = height * width
    a = probs.flatten(2).transpose(1, 2)  # [B,N,K]
    x = image.flatten(2).transpose(1, 2)  # [B,N,3]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=probs.device), torch.arange(width, device=probs.device), indexing="ij"
    )
    pos = torch.stack([ys, xs], dim=-1).reshape(n, 2).to(probs.dtype)
    w = gaussian_weight(((pos[:, None] - pos[None]) ** 2).sum(-1), sigma)  # [N,N]
    g = 0.5 * ((a[:, :, None] - a[:, None]) ** 2).sum(-1)  # [B,N,N]
    f = dissimilarity_sign((x[:, :, None] - x[:, None]).abs().sum(-1) / 3.0, mu)  # [B,N,N]
    return -(w * g * f).sum(dim=(1, 2)).div(norm).mean()


def _column_blocks(t: Tensor, dy: int, tile: int, pad: int, blocks: int) -> tuple[Tensor, Tensor]:
    """Split rows y (top) and y+dy (bottom) of channels-last t [B,H,W,C] into column blocks.

    Returns top [B,H-dy,blocks,tile,C] (columns b*tile + i) and bottom
    [B,H-dy,blocks,C,tile+2*pad] (columns b*tile - pad + j); out-of-image
    columns are zero.
    """
    _, height, width, _ = t.shape
    right = blocks * tile - width
    top = F.pad(t[:, : height - dy], (0, 0, 0, right))
    top = top.reshape(t.shape[0], height - dy, blocks, tile, t.shape[3])
    bottom = F.pad(t[:, dy:], (0, 0, pad, right + pad)).unfold(2, tile + 2 * pad, tile)
    return top, bottom


def _tiling(width: int, reach: int) -> tuple[int, int, int]:
    """(tile, pad, blocks) for pairs up to ``reach`` columns apart: whole rows when that wastes little."""
    tile = max(2 * reach + 1, MIN_COLUMN_TILE)
    if tile + 2 * reach >= width:
        return width, 0, 1
    return tile, reach, math.ceil(width / tile)


def _offset_weights(
    dy: int, tile: int, pad: int, blocks: int, width: int, radius: float, sigma: float, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Masked Eq. 10 weights w [blocks,tile,tile+2pad] of the half window at row offset dy,
    and c = (dw/dsigma) / w = rho^2/sigma^3 - 2/sigma."""
    i = torch.arange(tile, device=like.device)
    j = torch.arange(tile + 2 * pad, device=like.device)
    b = torch.arange(blocks, device=like.device)
    dx = (j[None, :] - pad - i[:, None]).to(like.dtype)  # [tile, tile+2pad]
    rho2 = dx**2 + dy**2
    inside = rho2 <= radius**2
    inside &= (dx > 0) if dy == 0 else torch.ones_like(inside)
    top_col = b[:, None] * tile + i[None, :]  # [blocks, tile]
    bottom_col = b[:, None] * tile - pad + j[None, :]  # [blocks, tile+2pad]
    valid = (top_col < width)[:, :, None] & ((bottom_col >= 0) & (bottom_col < width))[:, None, :]
    w = torch.exp(-rho2 / (2.0 * sigma**2)) / (2.0 * math.pi * sigma**2)
    w = torch.where(inside[None] & valid, w[None], torch.zeros((), dtype=like.dtype, device=like.device))
    return w, rho2 / sigma**3 - 2.0 / sigma


def _window_sums(
    image: Tensor, probs: Tensor, sigma: float, mu: float, radius: float, with_probs_grad: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-image S = sum_{ordered pairs in window} w g f and its derivatives.

    image [B,3,H,W], probs [B,K,H,W]. Returns S, dS/dsigma, dS/dmu (each [B])
    and dS/dprobs [B,K,H,W] (or None).
    """
    batch, _, height, width = probs.shape
    a = probs.permute(0, 2, 3, 1).contiguous()  # [B,H,W,K]
    x = image.permute(0, 2, 3, 1).contiguous()  # [B,H,W,3]
    sq_norm = (a * a).sum(-1, keepdim=True)  # [B,H,W,1]
    # tanh(mu + log u) = 1 - 2 / (1 + q u^2), q = exp(2 mu); tanh is saturated beyond |mu| = 80.
    q = math.exp(2.0 * min(max(mu, -80.0), 80.0))
    s_total = probs.new_zeros(batch)
    s_sigma = probs.new_zeros(batch)
    s_mu = probs.new_zeros(batch)
    grad = torch.zeros_like(a) if with_probs_grad else None
    for dy in range(min(int(radius), height - 1) + 1):
        reach = min(int(math.isqrt(int(radius**2 - dy**2))), width - 1)
        if reach == 0 and dy == 0:
            continue
        tile, pad, blocks = _tiling(width, reach)
        w, dlogw = _offset_weights(dy, tile, pad, blocks, width, radius, sigma, probs)
        a_top, a_bot = _column_blocks(a, dy, tile, pad, blocks)
        x_top, x_bot = _column_blocks(x, dy, tile, pad, blocks)
        n_top, n_bot = _column_blocks(sq_norm, dy, tile, pad, blocks)
        g = (n_top + n_bot) * 0.5 - a_top @ a_bot  # Eq. 11, [B,Hd,blocks,tile,tile+2pad]
        delta = (x_top[..., 0:1] - x_bot[..., 0:1, :]).abs_()
        delta += (x_top[..., 1:2] - x_bot[..., 1:2, :]).abs_()
        delta += (x_top[..., 2:3] - x_bot[..., 2:3, :]).abs_()
        delta.mul_(1.0 / 3.0).clamp_(0.0, 1.0)
        odds = (delta + DELTA_EPS).div_(delta.neg_().add_(1.0 + DELTA_EPS)).square_().mul_(q)
        f = odds.add_(1.0).reciprocal_().mul_(-2.0).add_(1.0)  # Eq. 12
        wf = f * w
        wfg = wf * g
        s_total += wfg.sum(dim=(1, 2, 3, 4))
        s_sigma += (wfg * dlogw).sum(dim=(1, 2, 3, 4))
        s_mu += (w * g).sub_(wfg.mul_(f)).sum(dim=(1, 2, 3, 4))  # w (1 - f^2) g
        if grad is not None:
            _accumulate_probs_grad(grad, wf, a_top, a_bot, dy, tile, pad, blocks)
    scale = 2.0  # the half window stands for both (i, j) and (j, i)
    grad = None if grad is None else grad.mul_(scale).permute(0, 3, 1, 2)
    return s_total * scale, s_sigma * scale, s_mu * scale, grad


def _accumulate_probs_grad(
    grad: Tensor, wf: Tensor, a_top: Tensor, a_bot: Tensor, dy: int, tile: int, pad: int, blocks: int
) -> None:
    """Add dS/da for one row offset: sum_j wf_ij (a_i - a_j) to i, and sum_i wf_ij (a_j - a_i) to j.

    grad, [B,H,W,K] channels-last, is updated in place.
    """
    batch, height, width, k = grad.shape
    rows = height - dy
    g_top = a_top * wf.sum(-1, keepdim=True) - wf @ a_bot.transpose(-1, -2)  # [B,Hd,blocks,tile,K]
    g_bot = a_bot * wf.sum(-2).unsqueeze(-2) - a_top.transpose(-1, -2) @ wf  # [B,Hd,blocks,K,tile+2pad]
    grad[:, :rows] += g_top.reshape(batch, rows, blocks * tile, k)[:, :, :width]
    span = tile + 2 * pad
    if blocks == 1:
        grad[:, dy:] += g_bot[:, :, 0].transpose(-1, -2)[:, :, pad : pad + width]
        return
    padded = grad.new_zeros(batch, rows, blocks * tile + 2 * pad, k)
    index = (torch.arange(blocks, device=grad.device)[:, None] * tile + torch.arange(span, device=grad.device)).flatten()
    padded.index_add_(2, index, g_bot.transpose(-1, -2).reshape(batch, rows, blocks * span, k))
    grad[:, dy:] += padded[:, :, pad : pad + width]


def _half_window_offsets(radius: float, sigma: float, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Offsets d = (dy, dx) of the disk of ``radius`` with dy > 0 or (dy = 0, dx > 0) that fit the image.

    Returns int64 dy [D], dx [D] and float64 w [D] (Eq. 10), c [D] = (dw/dsigma) / w.
    """
    reach = int(min(radius, max(height, width)))
    dy, dx = np.meshgrid(np.arange(0, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    rho2 = (dy**2 + dx**2).astype(np.float64)
    keep = (rho2 <= radius**2) & ((dy > 0) | (dx > 0)) & (dy < height) & (np.abs(dx) < width)
    rho2 = rho2[keep]
    w = np.exp(-rho2 / (2.0 * sigma**2)) / (2.0 * math.pi * sigma**2)
    return dy[keep].astype(np.int64), dx[keep].astype(np.int64), w, rho2 / sigma**3 - 2.0 / sigma


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _window_kernel(a, x, off_dy, off_dx, off_w, off_c, q, eps, row_sums, grad):  # pragma: no cover - compiled
    """Fused CPU kernel over the unordered pairs (i, i + d), d in the half window; one image row per task.

    a [B,H,W,K], x [B,H,W,3] channels-last (float64 colours); row_sums [B*H,3]
    receives per-row sum w f g, sum (dw/dsigma) f g and sum w (1 - f^2) g;
    grad [T,B,H,W,K] (one zeroed buffer per thread, a's dtype) receives
    w f (a_i - a_j) at i (accumulated in ``acc``) and its negative at j. The
    class loop runs in a's dtype (float32 vectorises twice as wide); the sums
    are float64.
    """
    batch, height, width, classes = a.shape
    for task in numba.prange(batch * height):
        b = task // height
        y = task % height
        out = grad[numba.get_thread_id(), b]
        cast = np.zeros(1, dtype=a.dtype)
        acc = np.zeros(classes, dtype=a.dtype)
        s_w = 0.0
        s_sigma = 0.0
        s_mu = 0.0
        for col in range(width):
            a_i = a[b, y, col]
            acc[:] = 0.0
            for d in range(off_dy.shape[0]):
                yy = y + off_dy[d]
                xx = col + off_dx[d]
                if yy >= height or xx < 0 or xx >= width:
                    continue
                delta = (
                    abs(x[b, y, col, 0] - x[b, yy, xx, 0])
                    + abs(x[b, y, col, 1] - x[b, yy, xx, 1])
                    + abs(x[b, y, col, 2] - x[b, yy, xx, 2])
                ) / 3.0
                delta = min(max(delta, 0.0), 1.0)
                odds = (delta + eps) / (1.0 - delta + eps)
                f = 1.0 - 2.0 / (1.0 + q * odds * odds)  # Eq. 12
                w = off_w[d]
                cast[0] = w * f
                wf = cast[0]
                g = wf - wf
                a_j = a[b, yy, xx]
                out_j = out[yy, xx]
                for k in range(classes):
                    diff = a_i[k] - a_j[k]
                    g += diff * diff
                    acc[k] += wf * diff
                    out_j[k] -= wf * diff
                half_g = 0.5 * g  # Eq. 11
                s_w += w * f * half_g
                s_sigma += w * f * off_c[d] * half_g
                s_mu += w * (1.0 - f * f) * half_g
            out_i = out[y, col]
            for k in range(classes):
                out_i[k] += acc[k]
        row_sums[task, 0] = s_w
        row_sums[task, 1] = s_sigma
        row_sums[task, 2] = s_mu


def _window_sums_numba(
    image: Tensor, probs: Tensor, sigma: float, mu: float, radius: float, with_probs_grad: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Same contract as ``_window_sums`` (CPU tensors), computed by the fused numba kernel.

    Classes are zero-padded to a multiple of 8 (whole SIMD lanes; zeros add nothing).
    """
    batch, classes, height, width = probs.shape
    padded = -(-classes // 8) * 8
    a = F.pad(probs.detach().permute(0, 2, 3, 1), (0, padded - classes)).contiguous().numpy()
    x = image.detach().permute(0, 2, 3, 1).to(torch.float64).contiguous().numpy()
    off_dy, off_dx, off_w, off_c = _half_window_offsets(radius, sigma, height, width)
    q = math.exp(2.0 * min(max(mu, -80.0), 80.0))
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    row_sums = np.zeros((batch * height, 3), dtype=np.float64)
    grad = np.zeros((threads, *a.shape), dtype=a.dtype)
    _window_kernel(a, x, off_dy, off_dx, off_w, off_c, q, DELTA_EPS, row_sums, grad)
    sums = torch.from_numpy(row_sums.reshape(batch, height, 3).sum(axis=1) * 2.0).to(probs.dtype)
    grad_probs = None
    if with_probs_grad:
        grad_probs = torch.from_numpy(grad.sum(axis=0)[..., :classes] * 2.0).permute(0, 3, 1, 2)
    return sums[:, 0], sums[:, 1], sums[:, 2], grad_probs


class _WindowFSL(torch.autograd.Function):
    """Eq. 9 (batch mean) on the truncated window with an analytic backward."""

    @staticmethod
    def forward(
        ctx, image: Tensor, probs: Tensor, sigma: Tensor, mu: Tensor, radius: float, backend: str, pairs: int
    ) -> Tensor:
        norm = -1.0 / (pairs * probs.shape[0])
        sums = _window_sums_numba if backend == "numba" else _window_sums
        s_total, s_sigma, s_mu, grad_probs = sums(
            image, probs, float(sigma), float(mu), radius, ctx.needs_input_grad[1]
        )
        ctx.save_for_backward(
            s_sigma.sum() * norm, s_mu.sum() * norm, grad_probs * norm if grad_probs is not None else None
        )
        return (s_total.sum() * norm).to(probs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        d_sigma, d_mu, d_probs = ctx.saved_tensors
        grad_probs = d_probs * grad_out if d_probs is not None else None
        grad_sigma = d_sigma * grad_out if ctx.needs_input_grad[2] else None
        grad_mu = (d_mu * grad_out) if ctx.needs_input_grad[3] else None
        return None, grad_probs, grad_sigma, grad_mu, None, None, None


def feature_similarity_loss(
    image: Tensor,
    probs: Tensor,
    sigma: float | Tensor,
    mu: float | Tensor,
    normalization: str = "pixels",
    *,
    mass: float = DEFAULT_MASS,
    resize: str = "area",
    backend: str = "auto",
) -> Tensor:
    """Eq. 9, batch mean, on the Gaussian window holding ``mass`` of w (production).

    image [B,3,H',W'] RGB in [0, 1] (H' >= H, W' >= W; resized to H x W);
    probs [B,K,H,W] (softmax CAMs, Eq. 1); sigma > 0 and mu floats or 0-d
    tensors, possibly requiring grad; normalization "pixels" (Z = HW, the
    authors' scale: equals 0.5 x their loss_fs) or "pairs" (Z = (HW)^2, Eq. 9
    as printed). Returns a 0-d tensor. Gradients flow to probs, sigma and mu
    (not to image). Agrees with ``feature_similarity_loss_dense`` up to the
    truncated tail of the Gaussian.
    """
    pairs = pair_normalizer(*probs.shape[-2:], normalization)
    image = match_image_to_probs(image, probs, resize)
    sigma = torch.as_tensor(sigma, dtype=probs.dtype, device=probs.device)
    mu = torch.as_tensor(mu, dtype=probs.dtype, device=probs.device)
    if sigma.dim() != 0 or mu.dim() != 0:
        raise ValueError(f"sigma and mu must be scalars; got shapes {tuple(sigma.shape)} and {tuple(mu.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed; use one of {BACKENDS}")
    if backend == "auto":
        backend = "numba" if probs.device.type == "cpu" else "torch"
    if backend == "numba" and probs.device.type != "cpu":
        raise ValueError(f"backend='numba' runs on CPU tensors only; probs are on {probs.device}")
    radius = window_radius(float(sigma.detach()), mass)
    return _WindowFSL.apply(image.detach(), probs, sigma, mu, radius, backend, pairs)


class FeatureSimilarityLoss(nn.Module):
    """Eqs. 9-12 with sigma and mu fixed (authors' code: arvijj/icam train_cam.py,
    sigma 5, mu 2.5) or learned (paper Sec. 3.3, ``learn=True``).

    sigma is log-parametrised (sigma = exp(log_sigma)) so it stays positive;
    mu is unconstrained. Both are parameters either way (same state dict);
    fixed ones do not require grad.
    """

    def __init__(
        self,
        sigma_init: float = 5.0,
        mu_init: float = 2.5,
        mass: float = DEFAULT_MASS,
        resize: str = "area",
        backend: str = "auto",
        *,
        normalization: str = "pixels",
        learn: bool = False,
    ) -> None:
        super().__init__()
        window_radius(sigma_init, mass)  # validates both
        pair_normalizer(1, 1, normalization)  # validates it
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize={resize!r} is not allowed; use one of {RESIZE_MODES}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not allowed; use one of {BACKENDS}")
        self.mass = mass
        self.resize = resize
        self.backend = backend
        self.normalization = normalization
        self.learn = learn
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)), requires_grad=learn)
        self.mu_parameter = nn.Parameter(torch.tensor(float(mu_init)), requires_grad=learn)

    @property
    def sigma(self) -> float:
        """Current Gaussian standard deviation (Eq. 10), in prediction pixels."""
        return float(self.log_sigma.detach().exp())

    @property
    def mu(self) -> float:
        """Current bias of Eq. 12."""
        return float(self.mu_parameter.detach())

    def forward(self, image: Tensor, probs: Tensor) -> Tensor:
        """image [B,3,H',W'] RGB in [0, 1], probs [B,K,H,W] -> 0-d loss (Eq. 9, batch mean)."""
        sigma = self.log_sigma.exp().to(probs.dtype)
        mu = self.mu_parameter.to(probs.dtype)
        return feature_similarity_loss(
            image, probs, sigma, mu, self.normalization, mass=self.mass, resize=self.resize, backend=self.backend
        )

    def extra_repr(self) -> str:
        return (
            f"sigma={self.sigma:.4g}, mu={self.mu:.4g}, learn={self.learn}, "
            f"normalization={self.normalization!r}, mass={self.mass}, resize={self.resize!r}"
        )
