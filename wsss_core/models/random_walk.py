"""Random-walk propagation of CAMs with a sparse semantic affinity matrix (psa)."""
from __future__ import annotations

import warnings

import torch


def transition_matrix(affinity: torch.Tensor, beta: float = 8.0) -> torch.Tensor:
    """affinity [B,N,N] in [0,1] (sparse COO or strided; absent entries are 0)
    -> T^T as a sparse CSR [B*N, B*N], block-diagonal over the batch, where
    T = A^beta (elementwise) with every column normalised to sum 1 (psa/SEAM:
    aff / aff.sum(dim=0), column convention); rows of T^T sum to 1 (or 0)."""
    b, n, _ = affinity.shape
    coo = (affinity.to_sparse() if affinity.layout == torch.strided else affinity).coalesce()
    batch, src, dst = coo.indices()
    values = coo.values().clamp_min(0) ** beta
    column = batch * n + dst
    column_sum = torch.zeros(b * n, dtype=values.dtype, device=values.device).index_add_(0, column, values)
    values = values / column_sum[column].clamp_min(1e-12)
    transposed = torch.sparse_coo_tensor(
        torch.stack([column, batch * n + src]), values, (b * n, b * n), check_invariants=True
    )
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta": CSR products are what we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return transposed.coalesce().to_sparse_csr()


def random_walk(
    cams: torch.Tensor, affinity: torch.Tensor, beta: float = 8.0, iterations: int = 256
) -> torch.Tensor:
    """Propagate CAMs along affinities (Ahn & Kwak 2018, Eq. 11).

    cams [B,K,h,w], affinity [B,hw,hw] (sparse COO as from `AffinityNet.affinity`,
    or strided) -> refined [B,K,h,w] with refined[:, :, j] = sum_i cams[:, :, i] (T^t)[i, j],
    t = iterations, T from `transition_matrix`. Applied as t sparse products
    with the [hw, K] CAM block, never forming a dense hw x hw matrix (psa/SEAM
    compute T^t by squaring: their logt = 6 is iterations = 64). Computed in
    float32 at least.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b, k, h, w = cams.shape
    n = h * w
    if affinity.shape != (b, n, n):
        raise ValueError(f"affinity must be [B, hw, hw] = {[b, n, n]}, got {list(affinity.shape)}")
    dtype = torch.promote_types(cams.dtype, torch.float32)
    with torch.autocast(cams.device.type, enabled=False):
        trans_t = transition_matrix(affinity.to(dtype), beta)
        walked = cams.to(dtype).flatten(2).transpose(1, 2).reshape(b * n, k)  # [B*hw, K]
        for _ in range(iterations):
            walked = trans_t @ walked
        return walked.view(b, n, k).transpose(1, 2).reshape(b, k, h, w)
