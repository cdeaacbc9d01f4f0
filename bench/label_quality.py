"""How good each stage's training labels are, on the train split: where a later stage loses to its labels.

    python bench/label_quality.py [CONFIG.yaml] [--cache DIR] [--set key=value ...]

Runs (or finds in the stage cache) stages 1-2 of CONFIG (default: the demo
pipeline, search_spaces/pipelines/demo.yaml) and scores the labels each hand-off
trains on against the train split's ground-truth masks:

- CAM -> AffinityNet: the confident CRF labels (psa's rule, cam.crf_alpha_low /
  crf_alpha_high; 255 = ignore): the share of pixels they label (coverage), the
  share of labelled pixels that are right (precision; background and
  foreground apart), and the share of each ground-truth region they label
  correctly (recall: background, foreground);
- AffinityNet -> DeepLab: the random-walk labels' train mIoU (the stage's own
  metric), next to the CAM pseudo-labels' train mIoU.

Pixels the ground truth ignores (255) are left out. With --cache the stages
are read from that stage cache (a study's is `<storage>/_cache`); without it,
from the default cache ($WSSS_CACHE or ~/.cache/wsss), computing what is
missing there.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from wsss_core.data import build_dataset, read_mask
from wsss_core.pipeline import ConfigError, StageResult, load_config, run_pipeline
from wsss_core.pipeline.cache import LocalStageStore, default_cache_dir
from wsss_core.pipeline.stage_cam import crf_label_path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipelines" / "demo.yaml"
IGNORE = 255


def confident_label_counts(label: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 label [H,W] (255 = unlabelled) and truth [H,W] -> counts
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


def train_miou(stage: StageResult) -> str:
    """A stage's train-split mIoU, or why there is none (eval.splits without "train")."""
    train = stage.metrics.get("train")
    return f"{train['miou']:.3f}" if train else "n/a (eval.splits has no train)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(DEMO), help="pipeline config (default: the demo's)")
    parser.add_argument("--cache", type=Path, help="stage cache to read and fill (default: the pipeline's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.cache is not None and not args.cache.is_dir():
        parser.error(f"--cache {args.cache} is not a folder")
    try:
        load_config(args.config, args.overrides)
    except ConfigError as error:
        parser.error(str(error))
    with tempfile.TemporaryDirectory(prefix="wsss-label-quality-") as out:
        result = run_pipeline(args.config, out, cache_dir=args.cache, progress=True,
                              overrides=args.overrides, until="affinity")
    cam, affinity = result.stages
    cache_root = args.cache if args.cache is not None else default_cache_dir()
    stage_dir = LocalStageStore(cache_root).fetch("cam", cam.key)
    dataset = build_dataset(result.config.data, "train", cache_dir=cache_root / "data")
    samples = (dataset[i] for i in range(len(dataset)))
    counts = sum(confident_label_counts(read_mask(crf_label_path(stage_dir, sample.name)), sample.mask)
                 for sample in samples if sample.mask is not None)
    if isinstance(counts, int):
        raise SystemExit("the train split has no ground-truth masks to score the labels against")
    valid, bg, bg_right, fg, fg_right, truth_bg, truth_fg = counts
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"train split, {len(dataset)} images, {valid} pixels with a ground-truth class")
    print(f"CAM pseudo-labels        train mIoU {train_miou(cam)}")
    print(f"confident CRF labels     coverage {ratio(bg + fg, valid):.3f}  precision {ratio(bg_right + fg_right, bg + fg):.3f}"
          f"  (background {ratio(bg_right, bg):.3f}, foreground {ratio(fg_right, fg):.3f})"
          f"  recall: background {ratio(bg_right, truth_bg):.3f}, foreground {ratio(fg_right, truth_fg):.3f}")
    print(f"random-walk labels       train mIoU {train_miou(affinity)}")


if __name__ == "__main__":
    main()
