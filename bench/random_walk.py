"""Times the sparse random walk (production) against a dense matrix power, per image.

Target: the walk at least 10x faster on the 56x56 map, with the same labels.

Setting: a VOC photo at CPU sizes gives a stride-8 map of about 40x40 to
56x56; AffinityNet features of 448 channels, radius 5, beta 8, 64 iterations
(SEAM's logt 6), 21 classes of which 3 are present, so the walk propagates
background + 3 CAMs. Both paths start from the same features and time
everything after them: the pair affinities, the affinity matrix and the walk.
The dense path is the walk as psa and SEAM write it: a dense hw x hw
affinity, T = column-normalised A^beta, T^64 by `torch.linalg.matrix_power`.
The sparse path is production (`sparse_affinity` + `random_walk`). "total"
times from the features, "walk" from the ready affinity matrix. Best of
`--repeats` (dense and sparse alternate), 2 threads by default; the ratios and
the label agreement are measured within one run. The sparse walk is 64 small
parallel products: on a machine whose cores are busy with other processes, 2
threads wait on each other at every product, and `--threads 1` gives steadier
figures.

    python -m bench.random_walk [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import torch

from wsss_core.models import random_walk
from wsss_core.models.affinity_net import pair_affinity, pair_offsets, sparse_affinity

SIZES, CHANNELS, RADIUS, BETA, ITERATIONS, PRESENT, RW_ALPHA = ((40, 40), (56, 56)), 448, 5, 8.0, 64, 3, 6.0
TARGET_MAP, TARGET_WALK_RATIO = (56, 56), 10.0


def dense_affinity(features: torch.Tensor) -> torch.Tensor:
    """The dense affinity: features [1,C,h,w] -> dense [hw, hw], pair
    affinities at (i, j) and (j, i), ones on the diagonal."""
    _, _, h, w = features.shape
    pairs = pair_affinity(features, RADIUS)[0]  # [P,h,w]
    index = torch.arange(h * w).view(h, w)
    dense = torch.zeros(h * w, h * w)
    for p, (dy, dx) in enumerate(pair_offsets(RADIUS)):
        ys, xs = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
        src, dst = index[ys, xs].flatten(), (index + dy * w + dx)[ys, xs].flatten()
        dense[src, dst] = dense[dst, src] = pairs[p, ys, xs].flatten()
    dense.diagonal().fill_(1.0)
    return dense


def dense_walk(affinity: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """The dense walk: cams [1,K,h,w] @ (column-normalised A^beta)^64 -> [1,K,h,w]."""
    trans = affinity**BETA
    trans = trans / trans.sum(dim=0, keepdim=True)
    return (cams.flatten(2) @ torch.linalg.matrix_power(trans, ITERATIONS)).view_as(cams)


def sparse_walk(affinity: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """Production: `iterations` sparse products."""
    return random_walk(cams, affinity, beta=BETA, iterations=ITERATIONS)


def inputs(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [1,448,h,w] (smooth regions plus noise) and CAMs [1,1+3,h,w]:
    3 present-class blobs and SEAM's background (1 - max fg)^6."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, CHANNELS, 4, 4, generator=gen)
    features = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)
    features = features + 0.2 * torch.randn(1, CHANNELS, h, w, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    centres = torch.rand(PRESENT, 2, generator=gen)
    fg = torch.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 0.05)  # [3,h,w]
    bg = (1 - fg.max(dim=0, keepdim=True).values) ** RW_ALPHA
    return features, torch.cat([bg, fg])[None]


def dense_path(features: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    return dense_affinity(features), dense_walk


def sparse_path(features: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    return sparse_affinity(features, RADIUS), sparse_walk


def measure(features: torch.Tensor, cams: torch.Tensor, repeats: int) -> tuple[dict, dict]:
    """Best seconds of each path, dense and sparse alternating so that load
    from other processes hits both alike -> ({'dense total': s, 'dense walk': s,
    ...}, {'dense': walked [1,K,h,w], 'sparse': walked}); 'total' starts from
    the features, 'walk' from the ready affinity matrix."""
    best: dict[str, float] = {}
    walked: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, path in (("dense", dense_path), ("sparse", sparse_path)):
            start = time.perf_counter()
            affinity, walk = path(features)
            built = time.perf_counter()
            walked[name] = walk(affinity, cams)
            end = time.perf_counter()
            best[f"{name} total"] = min(best.get(f"{name} total", float("inf")), end - start)
            best[f"{name} walk"] = min(best.get(f"{name} walk", float("inf")), end - built)
    return best, walked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"radius {RADIUS}, beta {BETA}, {ITERATIONS} iterations, 21 classes / {PRESENT} present, "
          f"{args.threads} threads")
    for h, w in SIZES:
        features, cams = inputs(h, w, seed=h * w)
        with torch.no_grad():
            best, walked = measure(features, cams, args.repeats)
        for part in ("total", "walk"):
            dense_s, sparse_s = best[f"dense {part}"], best[f"sparse {part}"]
            target = f" (target >= {TARGET_WALK_RATIO:g}x)" if (h, w) == TARGET_MAP and part == "walk" else ""
            print(
                f"map {h}x{w} {part:>5}: dense {dense_s:.3f} s/image, sparse {sparse_s:.4f} s/image, "
                f"{dense_s / sparse_s:.0f}x faster{target}"
            )
        same = (walked["dense"].argmax(dim=1) == walked["sparse"].argmax(dim=1)).float().mean().item()
        diff = (walked["dense"] - walked["sparse"]).abs().max().item()
        print(f"map {h}x{w}: same labels {100 * same:.2f}% (target 100%), max |walked dense - sparse| {diff:.1e}")


if __name__ == "__main__":
    main()
