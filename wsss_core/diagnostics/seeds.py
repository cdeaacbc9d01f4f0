"""FSL on - off at the CAM stage, per lambda, against the spread over seeds;
and the classes each CAM run never learns.

Stage 1 of a config trains for every seed x lambda x FSL off/on (cam_runs).
Each run gives its val mIoU and contour F, the foreground classes whose val
IoU stays below PREDICTED_IOU (never predicted), and those whose CAM peaks off
the object in most val images, with their pointing-game hit rate (GMP at
lambda 0 can find a class from a global cue at the image border instead of
on the object). Per lambda, the FSL on - off difference in val contour F and
mIoU is summarised by its mean over seeds, its standard deviation (ddof 1) and
the number of seeds where it is positive: a single-seed comparison (a study
of one seed) means little when the spread is as large as the difference.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.diagnostics.cam_runs import cam_overrides, cam_stages
from wsss_core.metrics import PREDICTED_IOU

POINTING_MAJORITY = 0.5
"""A class whose CAM peak lands on the object in less than this share of val images peaks off it."""
COMPARED = ("contour_f", "miou")


@dataclass(frozen=True)
class CamRun:
    """One trained CAM stage and its val metrics (run_pipeline's StageResult.metrics["val"])."""

    lam: float
    fsl: bool
    seed: int
    metrics: dict[str, Any]

    def never_predicted(self, names: Sequence[str]) -> list[str]:
        """Foreground classes present in val whose val IoU is below PREDICTED_IOU."""
        iou = np.asarray(self.metrics["per_class_iou"], dtype=float)
        return [names[k] for k in range(1, len(iou)) if np.isfinite(iou[k]) and iou[k] < PREDICTED_IOU]

    def peaks_off(self, names: Sequence[str]) -> list[str]:
        """"class rate%" of the classes whose CAM peaks on the object in less than half the val images."""
        rates = self.metrics.get("per_class_pointing") or []
        return [f"{names[k]} {100 * rate:.0f}%" for k, rate in enumerate(rates)
                if rate is not None and rate < POINTING_MAJORITY]

    def line(self, names: Sequence[str]) -> str:
        return (f"{self.lam:6g} {'on' if self.fsl else 'off':>4s} {self.seed:4d} {100 * self.metrics['miou']:9.1f} "
                f"{100 * self.metrics['contour_f']:7.1f}  {', '.join(self.never_predicted(names)) or '-'}  |  "
                f"{', '.join(self.peaks_off(names)) or '-'}")


HEADER = (f"{'lambda':>6s} {'FSL':>4s} {'seed':>4s} {'val mIoU':>9s} {'val F':>7s}  classes never predicted"
          "  |  classes whose CAM peaks off the object in most val images (pointing game)")


def planned_runs(seeds: Sequence[int], lambdas: Sequence[float]) -> list[tuple[float, bool, int]]:
    """(lambda, FSL, seed) of every run, lambda-major, FSL off before on for each seed."""
    return [(lam, fsl, seed) for lam in lambdas for seed in seeds for fsl in (False, True)]


def seed_runs(config: str, overrides: list[str], seeds: Sequence[int], lambdas: Sequence[float], cache_dir: Path,
              jobs: int) -> Iterator[CamRun]:
    """Train (or read from `cache_dir`) every planned run, `jobs` at a time; yields them in plan order."""
    plan = planned_runs(seeds, lambdas)
    runs = [[*overrides, *cam_overrides(lam, fsl, seed)] for lam, fsl, seed in plan]
    for (lam, fsl, seed), (metrics, _) in zip(plan, cam_stages(config, runs, cache_dir, jobs)):
        yield CamRun(lam, fsl, seed, metrics)


def spread_lines(runs: Sequence[CamRun]) -> list[str]:
    """Per lambda: the FSL on - off difference (points) in val contour F and mIoU:
    mean ± std over seeds, and the seeds where it is positive."""
    by_key = {(run.lam, run.fsl, run.seed): run.metrics for run in runs}
    lambdas = list(dict.fromkeys(run.lam for run in runs))
    seeds = list(dict.fromkeys(run.seed for run in runs))
    rows = [f"FSL on - off (points), mean over {len(seeds)} seeds (± std), seeds positive",
            f"{'lambda':>6s} {'contour F':>18s} {'mIoU':>18s}"]
    for lam in lambdas:
        cells = []
        for metric in COMPARED:
            diff = np.array([by_key[lam, True, s][metric] - by_key[lam, False, s][metric] for s in seeds]) * 100
            spread = f" ± {diff.std(ddof=1):4.1f}" if len(diff) > 1 else ""
            cells.append(f"{diff.mean():+5.1f}{spread} {int((diff > 0).sum())}/{len(diff)}")
        rows.append(f"{lam:6g} {cells[0]:>18s} {cells[1]:>18s}")
    return rows
