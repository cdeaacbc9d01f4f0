"""The item every dataset returns, whatever its source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One image with its annotations.

    image: uint8 [H, W, 3] RGB.
    mask: int64 [H, W] class indices (0 background, 1..C foreground, 255 void),
        or None where the dataset has no pixel annotation.
    labels: float32 [C] image-level labels (1 where foreground class c+1 is present).
    name: the image id (file stem).
    """

    image: np.ndarray
    mask: np.ndarray | None
    labels: np.ndarray
    name: str


class SampleSource(Protocol):
    """What TransformedDataset consumes: an indexable set of Samples
    (VOCDataset, CocoDataset, or a plain list)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
