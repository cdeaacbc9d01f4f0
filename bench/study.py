"""Times Ray Tune's overhead: N short trials of the tiny pipeline (distinct seeds,
so nothing is shared through the cache), one at a time and then two at a time.

Target: 2 concurrent trials at least 1.5x faster than 1 on 2 CPUs.

Prints the study's wall time against the sum of the trials' own times (stage
seconds measured inside the pipeline) and the speed-up of 2 concurrent trials
over 1.

    python -m bench.study [--trials 4]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import pyarrow.dataset as ds
import ray

from study.runner import run_study
from study.spec import parse_spec

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")
TARGET_SPEEDUP = 1.5


def timed_study(trials: int, concurrent: int, storage: Path) -> tuple[float, float]:
    """(study wall seconds, sum of the trials' stage seconds)."""
    spec = parse_spec({
        "name": f"bench{concurrent}",
        "base": TINY,
        "fixed": {"runtime.threads": 1},
        "seeds": list(range(trials)),
        "search": {"max_concurrent": concurrent},
        "resources": {"cpus": 1},
    })
    start = time.perf_counter()
    run_study(spec, storage=storage, verbose=0)
    wall = time.perf_counter() - start
    table = ds.dataset(storage / spec.name / "results").to_table(filter=ds.field("split") == "val")
    return wall, sum(table.column("seconds").to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f}s (paid once per study run)")
    walls = {}
    with tempfile.TemporaryDirectory() as folder:
        for concurrent in (1, 2):
            wall, trial_sum = timed_study(args.trials, concurrent, Path(folder) / f"c{concurrent}")
            walls[concurrent] = wall
            print(f"{args.trials} trials, {concurrent} at a time: study wall {wall:.1f}s, sum of trial times "
                  f"{trial_sum:.1f}s, wall/sum {wall / trial_sum:.2f}, overhead {wall - trial_sum / concurrent:+.1f}s "
                  f"vs perfect packing")
    ray.shutdown()
    print(f"speed-up of 2 concurrent trials over 1: {walls[1] / walls[2]:.2f}x (target >= {TARGET_SPEEDUP:g}x)")


if __name__ == "__main__":
    main()
