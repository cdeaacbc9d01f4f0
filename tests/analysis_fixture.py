"""Writes realistic study results in the real Parquet layout, for the analysis tests.

`<root>/<study>/results/trial-<trial_id>.parquet` through `study.store.ResultsStore`,
schema `study.schema.RESULT_SCHEMA`, plus overlay PNGs under
`<root>/<study>/trials/<trial_id>/overlays/<stage>/` (paths in rows relative to the study). Metric values follow a
smooth model of the paper's trends with seed noise; every written row is
returned so tests compute their expectations from the data, not from constants.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from study.schema import SCHEMA_VERSION, SPLITS, STAGES, row_id
from study.store import ResultsStore

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
LAMBDA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
NUM_SAMPLES_GRID = (1, 2, 5, 10, 20, 50, 100)
SEEDS = (0, 1)
STAGE_BASE = {"cam": (0.50, 0.30), "affinity": (0.58, 0.40), "segmentation": (0.63, 0.42)}
START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FixtureStudy:
    path: Path
    rows: pd.DataFrame  # every row written, same columns as RESULT_SCHEMA


def _config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "lambda": 0.8, "pooling": "gap", "num_samples": 1, "naive": False, "fsl": True, "fsl_weight": 1.0,
        "fsl_sigma_init": 0.1, "fsl_mu_init": 0.5, "cam_mode": "seam", "seed": 0,
        "backbone": "resnet38d", "dataset": "voc2012", "cam.lr": 0.01,
    }
    config.update(overrides)
    return config


def _quality(config: dict[str, object]) -> float:
    """Smooth model of the paper's trends: GAP peaks at lambda 0.8, GMP rises to 1, FSL helps."""
    lam = float(config["lambda"])  # type: ignore[arg-type]
    effect = -0.25 * (lam - 0.8) ** 2 if config["pooling"] == "gap" else -0.20 * (1.0 - lam)
    effect += 0.02 * float(config["fsl_weight"]) if config["fsl"] else 0.0  # type: ignore[arg-type]
    if config["naive"] and lam > 0:
        effect -= 0.30
    effect += 0.002 * np.log10(float(config["num_samples"]))  # type: ignore[arg-type]
    effect -= 0.05 * abs(np.log10(float(config["cam.lr"]) / 0.01))  # type: ignore[arg-type]
    return effect


def _stage_rows(study: str, trial: str, index: int, config: dict[str, object], stage_stop: int,
                fail_stage: int | None, trial_dir: Path, node: str, start: datetime, rng: np.random.Generator,
                collapsed: str | None = None) -> list[dict]:
    rows = []
    clock = start
    lam = float(config["lambda"])  # type: ignore[arg-type]
    sigma = float(0.1 + 0.05 * lam + rng.normal(0, 0.005)) if config["fsl"] else None  # learned in stage 1, per trial
    mu = float(0.5 - 0.1 * lam + rng.normal(0, 0.01)) if config["fsl"] else None
    for stage_index, stage in enumerate(STAGES, start=1):
        stopped = stage_index == stage_stop + 1  # ASHA: one "stopped" row set for the first stage not run
        failed = fail_stage == stage_index  # as study.callback writes them: no metrics, no start time
        unfinished = stopped or failed
        seconds = float(rng.uniform(60, 300))
        finished = clock + timedelta(seconds=seconds)
        overlay_dir = trial_dir / "overlays" / stage
        if not unfinished:
            overlay_dir.mkdir(parents=True, exist_ok=True)
            for image in range(2):
                colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
                Image.new("RGB", (24, 16), colour).save(overlay_dir / f"2007_00{index:04d}_{image}.png")
        for split in SPLITS:
            iou_base, f_base = STAGE_BASE[stage]
            shift = _quality(config) + (0.05 if split == "train" else 0.0) + float(rng.normal(0, 0.01))
            per_iou = np.clip(iou_base + shift + rng.normal(0, 0.05, len(VOC_CLASSES)), 0, 1)
            per_f = np.clip(f_base + 0.7 * shift + rng.normal(0, 0.05, len(VOC_CLASSES)), 0, 1)
            if stage == collapsed:  # predicts background everywhere: every foreground IoU and F is 0
                per_iou[1:], per_f[:] = 0.0, 0.0
            per_f[0] = np.nan  # contour F is not defined for the background class
            # the CAM stage's pointing game: where the class's CAM peaks, close to its IoU; none for background
            pointing = [None] + np.clip(1.2 * per_iou[1:], 0, 1).tolist() if stage == "cam" and not unfinished else None
            status = "failed" if failed else ("stopped" if stopped else "completed")
            rows.append({
                "row_id": row_id(study, trial, stage, split), "schema_version": SCHEMA_VERSION, "study": study,
                "trial_id": trial, "stage": stage, "stage_index": stage_index, "split": split, "status": status,
                "error": "RuntimeError: CUDA out of memory" if failed else None,
                **{k: v for k, v in config.items() if k != "cam.lr"},
                "config_json": json.dumps({f"cam.{k}" if k != "seed" else "runtime.seed": v for k, v in config.items() if k != "cam.lr"} | {"cam.lr": config["cam.lr"]}),
                "miou": None if unfinished else float(per_iou.mean()),
                "contour_f": None if unfinished else float(np.nanmean(per_f)),
                "class_names": None if unfinished else VOC_CLASSES,
                "per_class_iou": None if unfinished else per_iou.tolist(),
                "per_class_f": None if unfinished else per_f.tolist(),
                "pointing": None if pointing is None else float(np.mean(pointing[1:])), "per_class_pointing": pointing,
                "fsl_sigma": sigma, "fsl_mu": mu,
                "seconds": None if unfinished else seconds, "started_at": None if unfinished else clock,
                "finished_at": finished, "cache_hit": None if unfinished else False, "node": node,
                "trial_dir": f"trials/{trial}", "overlay_dir": None if unfinished else f"trials/{trial}/overlays/{stage}",
                "code_version": "abc1234",
            })
        clock = finished
        if unfinished:
            break
    return rows


def write_study(root: Path, name: str, configs: list[dict[str, object]], *, stops: dict[int, int] | None = None,
                failures: dict[int, int] | None = None, collapses: dict[int, str] | None = None, seed: int = 0) -> FixtureStudy:
    """Write one study: trial i runs up to stage `stops[i]` (ASHA) or fails at stage `failures[i]`;
    at stage `collapses[i]` it predicts only background."""
    rng = np.random.default_rng(seed)
    study_dir = root / name
    rows: list[dict] = []
    for index, config in enumerate(configs):
        trial = f"{name}_{index:05d}"
        start = START + timedelta(minutes=7 * (index // 2))
        rows += _stage_rows(name, trial, index, config, (stops or {}).get(index, len(STAGES)),
                            (failures or {}).get(index), study_dir / "trials" / trial, f"node-{index % 2 + 1}", start, rng,
                            (collapses or {}).get(index))
    ResultsStore(str(study_dir)).write(rows)
    return FixtureStudy(study_dir, pd.DataFrame(rows))


def voc_ablation_configs() -> list[dict[str, object]]:
    """Figs. 2, 3, 5-8 grid (lambda x FSL x GMP/GAP x seeds), Table 6 (num_samples at lambda 1) and Table 5 (naive)."""
    grid = [_config(**{"lambda": lam}, fsl=fsl, pooling=pooling, seed=seed)
            for pooling in ("gmp", "gap") for fsl in (False, True) for lam in LAMBDA_GRID for seed in SEEDS]
    pixels = [_config(**{"lambda": 1.0}, num_samples=n, seed=seed) for n in NUM_SAMPLES_GRID[1:] for seed in SEEDS]
    naive = [_config(**{"lambda": lam}, fsl=fsl, naive=True, seed=seed)
             for lam, fsl in ((0.8, False), (0.0, True)) for seed in SEEDS]
    return grid + pixels + naive


def write_voc_ablation(root: Path) -> FixtureStudy:
    """The paper's VOC ablations in one study, with two failed trials (one GMP, one GAP)."""
    configs = voc_ablation_configs()
    failures = {len(configs): 2, len(configs) + 1: 1}
    configs += [_config(**{"lambda": 0.5}, pooling="gmp"), _config(**{"lambda": 0.3})]
    return write_study(root, "voc_ablation", configs, failures=failures, seed=1)


def write_coco_lambda(root: Path) -> FixtureStudy:
    """Table 1: lambda on COCO 2014 and 2017 with GAP and FSL."""
    configs = [_config(**{"lambda": lam}, dataset=dataset, backbone="resnet38d")
               for dataset in ("coco2014", "coco2017") for lam in (0.8, 0.9, 1.0)]
    return write_study(root, "coco_lambda", configs, seed=2)


def write_optuna_search(root: Path, num_trials: int = 24) -> FixtureStudy:
    """Random configs as Optuna TPE would propose, a third stopped by ASHA after stage 1."""
    rng = np.random.default_rng(3)
    configs = [_config(**{"lambda": float(rng.uniform(0, 1))}, pooling=str(rng.choice(["gap", "gmp"])),
                       fsl=bool(rng.random() < 0.5), fsl_weight=float(10 ** rng.uniform(-1, 0.5)),
                       seed=int(rng.integers(0, 1000)), **{"cam.lr": float(10 ** rng.uniform(-3, -1))})
               for _ in range(num_trials)]
    stops = {index: 1 for index in range(0, num_trials, 3)}
    return write_study(root, "optuna_search", configs, stops=stops, seed=4)


def write_demo(root: Path, *, name: str = "demo", collapse: str | None = None) -> FixtureStudy:
    """The `make demo` grid: GMP, lambda in {0, 0.5, 1} x FSL off/on, one seed; every trial predicts
    only background at stage `collapse` (None: no collapse)."""
    configs = [_config(**{"lambda": lam}, pooling="gmp", fsl=fsl, cam_mode="plain", backbone="efficientnet_lite0",
                       dataset="synthetic") for lam in (0.0, 0.5, 1.0) for fsl in (False, True)]
    return write_study(root, name, configs, collapses={i: collapse for i in range(len(configs))} if collapse else None, seed=5)
