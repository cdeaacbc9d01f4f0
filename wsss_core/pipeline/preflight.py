"""Input checks before any expensive work: output folders, every data file of
both splits, and crops that fit the training images. Each failure is one line
(ConfigError, DataError or FileNotFoundError) naming what is wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss_core.data import verify_dataset
from wsss_core.pipeline.config import ConfigError, PipelineConfig
from wsss_core.stages import STAGES



def check_folder(path: str | Path, name: str) -> Path:
    """`path` as a Path if it is a folder or does not exist yet; ConfigError naming `name` if it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={str(path)!r} is a file; allowed: a folder (created if missing)")
    return path


def check_inputs(config: PipelineConfig, datasets: dict[str, Any], *, progress: bool = False) -> None:
    """`check_data`, then `check_crops` against the largest training image."""
    check_crops(config, check_data(datasets, progress=progress))


def check_data(datasets: dict[str, Any], *, progress: bool = False) -> int:
    """Verify every image and mask of `datasets` ({"train": .., "val": ..});
    returns the longest side (px) of the training images."""
    summaries = {
        split: verify_dataset(dataset, desc=f"checking {split} images", progress=progress)
        for split, dataset in datasets.items()
    }
    return summaries["train"].largest_side


def check_crops(config: PipelineConfig, largest_side: int) -> None:
    """Each trained stage's crop must not exceed every training image it sees
    (after the random resize when resize_long is set); else all crops are padding."""
    for section in STAGES:
        train = getattr(config, section)
        if train.resize_long is None:
            limit, seen = largest_side, "train image"
        else:
            limit, seen = train.resize_long[1], f"train image after {section}.resize_long"
        if train.crop_size > limit:
            raise ConfigError(
                f"{section}.crop_size={train.crop_size} is larger than every {seen} (longest side {limit} px); "
                f"allowed: an integer <= {limit}"
            )
