"""Times what the feature memo (runtime.feature_memo) saves a sweep of the demo.

Target: the second trial at least 1.5x faster than the first in total, and
scoring exactly as a run without the memo.

    python -m bench.feature_memo [--set key=value ...]

Runs the demo pipeline (search_spaces/pipelines/demo.yaml, frozen backbones in
every stage) twice with a fresh stage cache and an empty memo: first as one
trial (cam.lam=0.5), then as a second trial of a sweep (cam.lam=0.0), which
feeds the frozen backbones the same crops. Prints per stage the wall seconds
of both runs and their ratio, the memo's size on disk, and whether the second
trial scored as a third run without the memo does (the memo is exact).
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
from wsss_core.pipeline import run_pipeline

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "demo.yaml"
TARGET_RATIO = 1.5


def timed_run(tmp: Path, name: str, overrides: list[str]):
    start = time.perf_counter()
    result = run_pipeline(DEMO, tmp / name, cache_dir=tmp / f"cache-{name}", progress=False, overrides=overrides)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsss-bench-memo-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ[MEMO_ENV] = str(tmp / "memo")
        memo = [*args.overrides, "runtime.feature_memo=true"]
        first, first_s = timed_run(tmp, "first", [*memo, "cam.lam=0.5"])
        second, second_s = timed_run(tmp, "second", [*memo, "cam.lam=0.0"])
        size = sum(p.stat().st_size for p in (tmp / "memo").rglob("*.pt"))
        plain, plain_s = timed_run(tmp, "plain", [*args.overrides, "cam.lam=0.0"])
    print(f"config: {DEMO}" + (f" {' '.join(args.overrides)}" if args.overrides else ""))
    print(f"{'stage':13s} {'trial 1 s':>10s} {'trial 2 s':>10s} {'ratio':>7s} {'no memo s':>10s}")
    for one, two, without in zip(first.stages, second.stages, plain.stages):
        print(f"{one.stage:13s} {one.seconds:10.1f} {two.seconds:10.1f} {one.seconds / two.seconds:6.1f}x "
              f"{without.seconds:10.1f}")
    print(f"{'total':13s} {first_s:10.1f} {second_s:10.1f} {first_s / second_s:6.1f}x {plain_s:10.1f}  "
          f"(target >= {TARGET_RATIO:g}x)")
    print(f"memo on disk: {size / 2**30:.2f} GiB")
    same = all(a.metrics == b.metrics for a, b in zip(second.stages, plain.stages))
    print(f"trial 2 scores as the run without the memo: {same} (target: True)")


if __name__ == "__main__":
    main()
