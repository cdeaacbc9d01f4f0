"""Times one pipeline run per stage, then the stage cache's reruns against it.

Target: the all-cache-hit rerun at most 0.01 of the first run, and the rerun
that shares every stage's training (inference and evaluation only) at most
0.2 of it.

    python -m bench.pipeline [CONFIG.yaml] [--set key=value ...]

Without CONFIG: the demo pipeline (search_spaces/pipelines/demo.yaml), then the
real-photo CPU preset (search_spaces/pipelines/voc_cpu.yaml) on a small VOC
set of real photos at $WSSS_VOC_MINI (skipped, with a message, when it is
absent). --set applies to every config run.

Each config runs with a fresh temporary cache and feature memo (a frozen
backbone's maps are computed in the timed run; nothing is left behind in the
system temp folder), then again to time the all-cache-hit path, then once
more with one more overlay (eval.overlays, read only after training): every
stage re-runs inference and evaluation on its shared trained weights. Prints,
per stage, the wall seconds, the training seconds and training images/s
(training images seen / training seconds), the val mIoU and contour F, and the
wall seconds with shared training; and the ratios of the cached and the
shared-training runs' totals to the first run's, all measured within this one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

from wsss_core.models.feature_memo import MEMO_ENV
from wsss_core.pipeline import load_config, run_pipeline

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipelines" / "demo.yaml"
REAL = REPO / "search_spaces" / "pipelines" / "voc_cpu.yaml"
VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI") or REPO.parent / "shared" / "data" / "voc2012-mini")
TARGET_CACHED, TARGET_SHARED = 0.01, 0.2


def bench(config: Path | str, overrides: list[str]) -> None:
    """Run `config` three times (fresh cache, all cache hits, shared training) and print the table."""
    with tempfile.TemporaryDirectory(prefix="wsss-bench-") as tmp:
        os.environ[MEMO_ENV] = str(Path(tmp) / "feature_memo")
        start = time.perf_counter()
        first = run_pipeline(config, Path(tmp) / "run1", cache_dir=Path(tmp) / "cache",
                             progress=False, overrides=overrides)
        total = time.perf_counter() - start
        start = time.perf_counter()
        run_pipeline(config, Path(tmp) / "run2", cache_dir=Path(tmp) / "cache", progress=False,
                     overrides=overrides)
        cached = time.perf_counter() - start
        overlays = f"eval.overlays={load_config(config, overrides).eval.overlays + 1}"
        start = time.perf_counter()
        shared = run_pipeline(config, Path(tmp) / "run3", cache_dir=Path(tmp) / "cache", progress=False,
                              overrides=[*overrides, overlays])
        reused = time.perf_counter() - start
    print(f"config: {config}" + (f" {' '.join(overrides)}" if overrides else ""))
    print(f"{'stage':13s} {'wall s':>8s} {'train s':>8s} {'train img/s':>12s} {'val mIoU':>9s} {'val F':>7s} "
          f"{'shared-training wall s':>22s}")
    for stage, again in zip(first.stages, shared.stages):
        images, seconds = stage.extra.get("train_images", 0), stage.extra.get("train_seconds", 0.0)
        rate = images / seconds if seconds else float("nan")
        print(f"{stage.stage:13s} {stage.seconds:8.1f} {seconds:8.1f} {rate:12.1f} "
              f"{stage.metrics['val']['miou']:9.4f} {stage.metrics['val']['contour_f']:7.4f} {again.seconds:22.1f}")
    print(f"{'total':13s} {total:8.1f}")
    print(f"cached rerun: {cached:.2f} s ({cached / total:.3f} of the first run; target <= {TARGET_CACHED:g})")
    print(f"shared-training rerun ({overlays}): {reused:.1f} s ({reused / total:.3f} of the first run; "
          f"target <= {TARGET_SHARED:g})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=None,
                        help="pipeline config (default: the demo, then the real-photo preset on the mini set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.config is not None:
        bench(args.config, args.overrides)
        return
    bench(DEMO, args.overrides)
    print()
    if not (VOC_MINI / "VOC2012").is_dir():
        print(f"real photos: skipped, no VOC set at {VOC_MINI} (set WSSS_VOC_MINI)")
        return
    print(f"real photos: {REAL.name} on {VOC_MINI}")
    bench(REAL, [f"data.root={VOC_MINI}", *args.overrides])


if __name__ == "__main__":
    main()
