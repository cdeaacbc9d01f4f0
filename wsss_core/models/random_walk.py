"""Random-walk propagation of CAMs with a semantic affinity matrix (psa)."""
from __future__ import annotations

import torch


def transition_matrix(affinity: torch.Tensor, beta: float = 8.0) -> torch.Tensor:
    """affinity [B,N,N] in [0,1] -> T [B,N,N] = A^beta (elementwise) with every
    column normalised to sum 1 (psa's T = D^-1 A^beta, column convention)."""
    powered = affinity.clamp_min(0) ** beta
    return powered / powered.sum(dim=1, keepdim=True).clamp_min(1e-12)


def random_walk(
    cams: torch.Tensor, affinity: torch.Tensor, beta: float = 8.0, iterations: int = 256
) -> torch.Tensor:
    """Propagate CAMs along affinities (Ahn & Kwak 2018, Eq. 11).

    cams [B,K,h,w], affinity [B,hw,hw] (e.g. `AffinityNet.affinity`) ->
    refined [B,K,h,w] with refined[:, :, j] = sum_i cams[:, :, i] (T^t)[i, j].
    t = iterations; T^t is computed by repeated squaring, so the psa/SEAM
    default logt = 8 is iterations = 2**8 = 256 and beta = 8. Computed in
    float32 at least (the matrix power is sensitive to half precision).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b, k, h, w = cams.shape
    if affinity.shape != (b, h * w, h * w):
        raise ValueError(f"affinity must be [B, hw, hw] = {[b, h * w, h * w]}, got {list(affinity.shape)}")
    dtype = torch.promote_types(cams.dtype, torch.float32)
    with torch.autocast(cams.device.type, enabled=False):
        trans = torch.linalg.matrix_power(transition_matrix(affinity.to(dtype), beta), iterations)
        return (cams.to(dtype).flatten(2) @ trans).view(b, k, h, w)
