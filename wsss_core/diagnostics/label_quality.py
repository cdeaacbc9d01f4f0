"""How good the labels each stage hand-off trains on are, on the train split.

Stages 1-2 of a config run (or are read from the stage cache), and the labels
each later stage learns from are scored against the train split's
ground-truth masks:

- CAM -> AffinityNet: the confident CRF labels (psa's rule, cam.crf_alpha_low /
  crf_alpha_high; 255 = unlabelled): the share of pixels they label
  (coverage), the share of labelled pixels that are right (precision;
  background and foreground apart), and the share of each ground-truth region
  they label correctly (recall: background, foreground);
- AffinityNet -> DeepLab: the random-walk labels' train mIoU (the stage's own
  metric), next to the CAM pseudo-labels' train mIoU.

Pixels the ground truth ignores (255) are left out. A later stage can do no
better than its labels: where it loses, these say which hand-off to mend.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_core.cache_dir import DATA_FOLDER
from wsss_core.data import DataError, build_dataset, read_mask
from wsss_core.pipeline.cache import LocalStageStore
from wsss_core.pipeline.config import PipelineConfig
from wsss_core.pipeline.runner import StageResult, run_pipeline
from wsss_core.pipeline.stage_cam import crf_label_path

IGNORE = 255
COUNTS = ("valid", "labelled bg", "right bg", "labelled fg", "right fg", "truth bg", "truth fg")
"""What confident_label_counts counts, in order."""


def confident_label_counts(label: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 label [H,W] (255 = unlabelled) and truth [H,W] -> int64 counts in COUNTS order:
    [valid, labelled bg, right bg, labelled fg, right fg, truth bg, truth fg]."""
    valid = truth != IGNORE
    label, truth = label[valid], truth[valid]
    labelled = label != IGNORE
    right = labelled & (label == truth)
    bg, fg = label == 0, labelled & (label != 0)
    return np.array([valid.sum(), bg.sum(), (right & bg).sum(), fg.sum(), (right & fg).sum(),
                     (truth == 0).sum(), (truth != 0).sum()], dtype=np.int64)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN for an empty denominator (e.g. no pixel labelled background)."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def train_miou(stage: StageResult) -> float | None:
    """A stage's train-split mIoU; None when eval.splits leaves out train."""
    train = stage.metrics.get("train")
    return float(train["miou"]) if train else None


@dataclass(frozen=True)
class LabelQuality:
    """Confident CRF label counts summed over the train split (COUNTS order),
    and the train mIoU of the CAM pseudo-labels and of the random-walk labels."""

    images: int
    counts: np.ndarray
    cam_miou: float | None
    walk_miou: float | None

    def lines(self) -> list[str]:
        valid, bg, bg_right, fg, fg_right, truth_bg, truth_fg = self.counts.tolist()
        return [
            f"train split, {self.images} images, {valid} pixels with a ground-truth class",
            f"CAM pseudo-labels        train mIoU {_miou(self.cam_miou)}",
            f"confident CRF labels     coverage {ratio(bg + fg, valid):.3f}  precision "
            f"{ratio(bg_right + fg_right, bg + fg):.3f}  (background {ratio(bg_right, bg):.3f}, foreground "
            f"{ratio(fg_right, fg):.3f})  recall: background {ratio(bg_right, truth_bg):.3f}, foreground "
            f"{ratio(fg_right, truth_fg):.3f}",
            f"random-walk labels       train mIoU {_miou(self.walk_miou)}",
        ]


def label_quality(config: PipelineConfig, cache_dir: Path, progress: bool = True) -> LabelQuality:
    """Run (or read from `cache_dir`) stages 1-2 of `config` and score their labels.
    DataError when the train split has no ground-truth masks."""
    with tempfile.TemporaryDirectory(prefix="wsss-diagnose-labels-") as out:
        result = run_pipeline(config, out, cache_dir=cache_dir, progress=progress, until="affinity")
    cam, affinity = result.stages
    stage_dir = LocalStageStore(cache_dir).fetch("cam", cam.key)
    dataset = build_dataset(config.data, "train", cache_dir=cache_dir / DATA_FOLDER)
    counts = np.zeros(len(COUNTS), dtype=np.int64)
    images = 0
    for index in range(len(dataset)):
        sample = dataset.load(index)
        if sample.mask is not None:
            counts += confident_label_counts(read_mask(crf_label_path(stage_dir, sample.name)), sample.mask)
            images += 1
    if not images:
        raise DataError("the train split has no ground-truth masks to score the labels against")
    return LabelQuality(images, counts, train_miou(cam), train_miou(affinity))


def _miou(value: float | None) -> str:
    return "n/a (eval.splits has no train)" if value is None else f"{value:.3f}"
