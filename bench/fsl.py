"""Times the production feature similarity loss (local window) against a dense baseline.

Target: at least 10x faster and 5x less peak memory than the dense baseline.

Setting: B=8, K=21, 56x56, sigma=5, forward + backward on 2 CPU threads. The
dense baseline is Eq. 9 over all (HW)^2 pairs written with torch.cdist (L2
for the prediction distances, L1 for the RGB distances) and autograd, at the
production default's scale and logit smoothing (normalization "pixels": / HW,
as the authors' code). Each measurement runs in a fresh subprocess; peak
memory is the growth of the process's peak RSS (ru_maxrss) over its RSS just
before the first loss call. Both ratios are measured within one run.

    python -m bench.fsl [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

BATCH, CLASSES, SIZE, SIGMA, MU, THREADS = 8, 21, 56, 5.0, 0.0, 2


def dense_cdist_loss(image, probs, sigma, mu):
    """Eq. 9 (batch mean, / HW per image) with torch.cdist over all pairs; autograd backward."""
    import torch

    _, _, height, width = probs.shape
    n = height * width
    a = probs.flatten(2).transpose(1, 2)
    x = image.flatten(2).transpose(1, 2)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack([ys, xs], dim=-1).reshape(n, 2).to(probs.dtype)
    w = torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    g = 0.5 * torch.cdist(a, a) ** 2
    delta = (torch.cdist(x, x, p=1) / 3).clamp(0, 1)
    f = torch.tanh(mu + torch.log(delta + 1e-5) - torch.log(1 - delta + 1e-5))
    return -(w * g * f).sum(dim=(1, 2)).div(n).mean()


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(impl: str, repeats: int) -> dict:
    """Run one implementation in this process: best wall time and peak RSS growth."""
    import torch

    from wsss_core.losses import feature_similarity_loss

    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen)
    logits = torch.randn(BATCH, CLASSES, SIZE, SIZE, generator=gen)
    loss_fn = dense_cdist_loss if impl == "dense" else feature_similarity_loss
    rss_before = _current_rss_mib()
    times = []
    for _ in range(repeats):
        probs = logits.softmax(1).requires_grad_()
        sigma = torch.tensor(SIGMA, requires_grad=True)
        mu = torch.tensor(MU, requires_grad=True)
        start = time.perf_counter()
        loss = loss_fn(image, probs, sigma, mu)
        loss.backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "seconds": min(times), "peak_mib": peak - rss_before, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["dense", "window"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return
    results = {}
    for impl in ("dense", "window"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", impl, "--repeats", str(args.repeats)],
            check=True, capture_output=True, text=True,
        )
        results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    dense, window = results["dense"], results["window"]
    print(f"FSL forward+backward, B={BATCH} K={CLASSES} {SIZE}x{SIZE} sigma={SIGMA}, {THREADS} threads")
    for r in (dense, window):
        print(f"  {r['impl']:>6}: {r['seconds']:.3f} s  peak RSS +{r['peak_mib']:.1f} MiB  loss={r['loss']:.6e}")
    print(f"speed ratio (dense / window): {dense['seconds'] / window['seconds']:.1f}x (target >= 10x)")
    print(f"memory ratio (dense / window): {dense['peak_mib'] / max(window['peak_mib'], 1e-3):.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
