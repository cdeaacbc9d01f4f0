"""FSL on - off at the CAM stage, per lambda, over seeds; and the classes each CAM run never learned.

    python bench/cam_fsl_seeds.py [CONFIG.yaml] [--seeds 0 1 2] [--lambdas 0 0.5 1] [--jobs 2] [--set key=value ...]

Runs only stage 1 (run_pipeline(until="cam")) of CONFIG (default: the demo
pipeline, search_spaces/pipelines/demo.yaml) for every seed x lambda x FSL
off/on, `--jobs` at a time with one thread each, on a fresh temporary cache
and feature memo. Prints one line per run (val mIoU, contour F, and the
foreground classes whose val IoU is below 1%: never predicted; and those whose
CAM peaks off the object in most val images, with their pointing-game hit
rate: GMP at lambda 0 can find a class from a global cue at the image border
instead of on the object), then per
lambda the mean FSL on - off difference in val contour F and mIoU (points),
its standard deviation over seeds (ddof 1) and how many seeds it is positive
in. `make demo` runs one seed; this shows how far its FSL comparison is from
the seed noise, and which cells of the sweep lose a class.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from wsss_core.data import build_dataset
from wsss_core.models.feature_memo import MEMO_ENV
from wsss_core.pipeline import run_pipeline
from wsss_core.pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipelines" / "demo.yaml"
NOT_PREDICTED_IOU = 0.01  # analysis.findings.PREDICTED_IOU (not imported: bench/study.py shadows the study package here)


def cam_run(config: str, out: str, cache: str, overrides: list[str]) -> dict:
    """Stage 1 of `config` with `overrides` -> its val metrics, pointing game included (in a pool worker)."""
    result = run_pipeline(config, out, cache_dir=cache, progress=False, overrides=overrides, until="cam")
    return result.stages[0].metrics["val"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(DEMO), help="pipeline config (default: the demo's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsss-fsl-seeds-") as tmp:
        os.environ[MEMO_ENV] = str(Path(tmp) / "feature_memo")
        cache = Path(tmp) / "cache"
        data = load_config(args.config, args.overrides).data
        names = build_dataset(data, "val", cache_dir=cache / "data").class_names  # generated once, before the pool
        build_dataset(data, "train", cache_dir=cache / "data")
        runs = [(lam, fsl, seed) for lam in args.lambdas for seed in args.seeds for fsl in (False, True)]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {
                run: pool.submit(cam_run, args.config, str(Path(tmp) / f"run-{i}"), str(cache), [
                    *args.overrides, f"cam.lam={run[0]}", f"cam.fsl={str(run[1]).lower()}", f"runtime.seed={run[2]}",
                    "runtime.threads=1", "eval.workers=0"])
                for i, run in enumerate(runs)
            }
            print(f"config: {args.config}" + (f" {' '.join(args.overrides)}" if args.overrides else ""))
            print(f"{'lambda':>6s} {'FSL':>4s} {'seed':>4s} {'val mIoU':>9s} {'val F':>7s}  classes never predicted"
                  f"  |  classes whose CAM peaks off the object in most val images (pointing game)")
            val = {}
            for (lam, fsl, seed), future in futures.items():
                val[lam, fsl, seed] = metrics = future.result()
                iou = np.asarray(metrics["per_class_iou"], dtype=float)
                missing = [names[k] for k in range(1, len(iou)) if np.isfinite(iou[k]) and iou[k] < NOT_PREDICTED_IOU]
                off = [f"{names[k]} {100 * r:.0f}%" for k, r in enumerate(metrics["per_class_pointing"]) if r is not None and r < 0.5]
                print(f"{lam:6g} {'on' if fsl else 'off':>4s} {seed:4d} {100 * metrics['miou']:9.1f} "
                      f"{100 * metrics['contour_f']:7.1f}  {', '.join(missing) or '-'}  |  {', '.join(off) or '-'}",
                      flush=True)
    print(f"\nFSL on - off (points), mean over {len(args.seeds)} seeds (± std), seeds positive")
    print(f"{'lambda':>6s} {'contour F':>18s} {'mIoU':>18s}")
    for lam in args.lambdas:
        cells = []
        for metric in ("contour_f", "miou"):
            diff = np.array([val[lam, True, s][metric] - val[lam, False, s][metric] for s in args.seeds]) * 100
            spread = f" ± {diff.std(ddof=1):4.1f}" if len(diff) > 1 else ""
            cells.append(f"{diff.mean():+5.1f}{spread} {int((diff > 0).sum())}/{len(diff)}")
        print(f"{lam:6g} {cells[0]:>18s} {cells[1]:>18s}")


if __name__ == "__main__":
    main()
