"""DataConfig and build_dataset: the one entry point the pipeline uses for data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from wsss_core.cache_dir import DATA_FOLDER, default_cache_dir
from wsss_core.data.coco import CROWD_MODES, CocoDataset
from wsss_core.data.synth import GENERATOR_VERSION, SynthParams, write_synthetic_voc
from wsss_core.data.voc import VOCDataset

DATA_KINDS = ("synthetic", "voc", "coco")
COCO_YEARS = (2014, 2017)


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load.

    kind: "synthetic" (the embedded default), "voc" or "coco".
    root: data folder; for "synthetic" None generates (once) into a cache
        folder keyed by the generator parameters; a given root is loaded as is.
    train_split / val_split: list names ("train_aug" for SBD-augmented VOC).
    label_source: "masks" or the path of a labels file (VOC layout only).
    mask_dir: VOC mask folder name, None to auto-detect.
    year, crowd: COCO only.
    synth_*: generator parameters (see `write_synthetic_voc`).
    """

    kind: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    label_source: str = "masks"
    mask_dir: str | None = None
    year: int = 2014
    crowd: str = "class"
    synth_seed: int = 0
    synth_num_train: int = 160
    synth_num_val: int = 48
    synth_size: int = 112

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data kind={self.kind!r} is invalid; allowed: {', '.join(DATA_KINDS)}")
        if self.kind != "synthetic" and not self.root:
            raise ValueError(f"data root is required for kind={self.kind!r}; allowed: a folder path")
        if self.kind == "coco":
            if self.year not in COCO_YEARS:
                raise ValueError(f"data year={self.year!r} is invalid; allowed: 2014, 2017")
            if self.label_source != "masks":
                raise ValueError(f"data label_source={self.label_source!r} is invalid for coco; allowed: masks")
        if self.crowd not in CROWD_MODES:
            raise ValueError(f"data crowd={self.crowd!r} is invalid; allowed: {', '.join(CROWD_MODES)}")
        for name in ("train_split", "val_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"data {name}={getattr(self, name)!r} is invalid; allowed: a non-empty list name")
        self.synth_params()

    def synth_params(self) -> SynthParams:
        return SynthParams(
            seed=self.synth_seed, num_train=self.synth_num_train, num_val=self.synth_num_val, size=self.synth_size
        )


def build_dataset(config: DataConfig, split: str, *, cache_dir: str | Path | None = None) -> VOCDataset | CocoDataset:
    """The dataset of `split`: "train" / "val" name the config's train_split /
    val_split; any other value is used as a list name as is.

    cache_dir: where generated synthetic sets live (default: data/ in the
    cache, $WSSS_CACHE/data or ~/.cache/wsss/data, where run_pipeline puts them).
    """
    split_name = {"train": config.train_split, "val": config.val_split}.get(split, split)
    if config.kind == "coco":
        return CocoDataset(config.root, split_name, config.year, crowd=config.crowd)
    root = config.root
    if config.kind == "synthetic" and root is None:
        root = cached_synthetic_voc(config.synth_params(), _default_cache(cache_dir))
    return VOCDataset(root, split_name, label_source=config.label_source, mask_dir=config.mask_dir)


def cached_synthetic_voc(params: SynthParams, cache_dir: str | Path) -> Path:
    """The synthetic VOC folder for `params` under ``cache_dir/synthetic/<key>``,
    generated on first use. The key hashes the parameters and the generator
    version; the folder appears atomically (written aside, then renamed), so
    concurrent trials never read a partial set."""
    key = hashlib.sha256(
        json.dumps({"generator_version": GENERATOR_VERSION, **asdict(params)}, sort_keys=True).encode()
    ).hexdigest()[:16]
    target = Path(cache_dir) / "synthetic" / key
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            write_synthetic_voc(staging, **asdict(params))
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "VOC2012"


def _default_cache(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return default_cache_dir() / DATA_FOLDER
