"""Per-stage wall seconds and training throughput of one pipeline run.

    python bench/pipeline.py [CONFIG.yaml] [--set key=value ...]

Runs the config (default: search_spaces/pipeline_demo.yaml) with a fresh
temporary cache, then runs it again to time the all-cache-hit path. Prints,
per stage, the wall seconds, the training seconds and training images/s
(training images seen / training seconds), and the ratio of the cached run's
total to the first run's, all measured within this one run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from wsss_core.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(REPO / "search_spaces" / "pipeline_demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsss-bench-") as tmp:
        start = time.perf_counter()
        first = run_pipeline(args.config, Path(tmp) / "run1", cache_dir=Path(tmp) / "cache",
                             progress=False, overrides=args.overrides)
        total = time.perf_counter() - start
        start = time.perf_counter()
        run_pipeline(args.config, Path(tmp) / "run2", cache_dir=Path(tmp) / "cache", progress=False,
                     overrides=args.overrides)
        cached = time.perf_counter() - start
    print(f"config: {args.config}")
    print(f"{'stage':13s} {'wall s':>8s} {'train s':>8s} {'train img/s':>12s} {'val mIoU':>9s} {'val F':>7s}")
    for stage in first.stages:
        images, seconds = stage.extra.get("train_images", 0), stage.extra.get("train_seconds", 0.0)
        rate = images / seconds if seconds else float("nan")
        print(f"{stage.stage:13s} {stage.seconds:8.1f} {seconds:8.1f} {rate:12.1f} "
              f"{stage.metrics['val']['miou']:9.4f} {stage.metrics['val']['contour_f']:7.4f}")
    print(f"{'total':13s} {total:8.1f}")
    print(f"cached rerun: {cached:.2f} s ({cached / total:.3f} of the first run)")


if __name__ == "__main__":
    main()
