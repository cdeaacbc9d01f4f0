"""Views of a dataset for the stages: image-level labels only (stage 1, so no
ground-truth mask can leak into training), or pseudo-labels as masks."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from wsss_core.data import Sample, read_mask
from wsss_core.data.sample import SampleSource


class ImageLevelView:
    """Samples of `dataset` with mask None: weak supervision only."""

    def __init__(self, dataset: SampleSource) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return replace(self.dataset[index], mask=None)


class PseudoLabelView:
    """Samples of `dataset` whose mask is the pseudo-label PNG `label_dir/<name>.png`
    (int64 [H,W], 255 = ignore)."""

    def __init__(self, dataset: SampleSource, label_dir: Path) -> None:
        self.dataset = dataset
        self.label_dir = Path(label_dir)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        return replace(sample, mask=read_mask(self.label_dir / f"{sample.name}.png"))


def eval_indices(length: int, max_images: int | None) -> list[int]:
    """The first max_images indices (all when None)."""
    return list(range(length if max_images is None else min(length, max_images)))


def present_classes(labels: np.ndarray) -> np.ndarray:
    """labels float [C] -> int64 class indices 1..C of the present classes."""
    return np.flatnonzero(labels > 0.5).astype(np.int64) + 1
