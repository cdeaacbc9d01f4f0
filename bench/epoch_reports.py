"""Times what per-epoch reports and trackers add to a stage: one tiny trial
whose CAM stage trains `--epochs` epochs, run without trackers and with
MLflow (SQLite store), TensorBoard and W&B (offline).

Target: the gap between epochs at most 3x the checkpoint write alone
(run_pipeline without Tune) without trackers; trackers add at most 1 s per epoch.

Printed per run: its wall time, the CAM epochs' median wall seconds, and the
median gap between one epoch's end and the next one's start (from the
`history` table), which holds the epoch checkpoint write and the epoch report:
pipeline.log uploaded, then `tune.report` waiting for the driver to write the
history row and run the trackers. The first line runs the stage through
run_pipeline without Tune: its gap is the checkpoint write alone. The gap over
the epoch time is the share the reports add to a stage; on a GPU an epoch
takes minutes, here a fraction of a second.

    python -m bench.epoch_reports [--epochs 8]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import pandas as pd
import ray

from study.runner import run_study
from study.spec import parse_spec

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")


def timed_study(storage: Path, name: str, epochs: int, tracking: list[str]) -> dict[str, float]:
    """Wall seconds of a one-trial study, and its CAM epochs' median seconds and gap."""
    spec = parse_spec({"name": name, "base": TINY, "resources": {"cpus": 1}, "seeds": [len(tracking)],
                       "fixed": {"cam.epochs": epochs, "runtime.threads": 1}, "tracking": tracking})
    start = time.perf_counter()
    run_study(spec, storage=storage, verbose=0)
    wall = time.perf_counter() - start
    cam = pd.read_parquet(storage / name / "history").query("stage == 'cam'").sort_values("epoch")
    gaps = (cam["started_at"].iloc[1:].to_numpy() - cam["finished_at"].iloc[:-1].to_numpy()) / pd.Timedelta(seconds=1)
    later = cam["seconds"].iloc[1:]  # the first epoch also builds the data loader and warms up
    return {"wall": wall, "epoch": statistics.median(later), "gap": statistics.median(gaps), "rows": len(cam)}


def timed_pipeline(folder: Path, epochs: int) -> dict[str, float]:
    """The same CAM stage run by run_pipeline in this process, without Tune: the
    gap between epochs holds the checkpoint write alone (on_epoch only notes the time)."""
    from wsss_core.pipeline import run_pipeline

    ends: list[tuple[float, float]] = []
    start = time.perf_counter()
    run_pipeline(TINY, folder / "pipeline", cache_dir=folder / "cache", progress=False, until="cam",
                 overrides=[f"cam.epochs={epochs}", "runtime.threads=1", "runtime.seed=99"],
                 on_epoch=lambda record: ends.append((time.time(), record.seconds)))
    wall = time.perf_counter() - start
    gaps = [(end - seconds) - previous for (previous, _), (end, seconds) in itertools.pairwise(ends)]
    return {"wall": wall, "epoch": statistics.median(s for _, s in ends[1:]), "gap": statistics.median(gaps),
            "rows": len(ends)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsss-bench-epochs-") as folder:
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=folder)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            runs = {"run_pipeline, no Tune": timed_pipeline(Path(folder), args.epochs),
                    "no trackers": timed_study(Path(folder), "plain", args.epochs, []),
                    "mlflow+tensorboard+wandb": timed_study(Path(folder), "tracked", args.epochs,
                                                            ["mlflow", "tensorboard", "wandb"])}
        finally:
            ray.shutdown()
    print(f"one trial, CAM stage {args.epochs} epochs (tiny config, CPU)")
    for label, run in runs.items():
        print(f"{label:>26}: {run['wall']:.1f} s; CAM epoch median {run['epoch'] * 1000:.0f} ms, "
              f"gap between epochs median {run['gap'] * 1000:.0f} ms "
              f"({run['gap'] / run['epoch']:.0%} of an epoch); {run['rows']} CAM epochs")


if __name__ == "__main__":
    main()
