"""PASCAL VOC-layout dataset: real VOC 2012 (optionally SBD-augmented) or the synthetic set.

Layout (``root`` may be the VOC2012 folder itself, its parent, or the folder
holding ``VOCdevkit/``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png      (official masks)
    VOC2012/SegmentationClassAug/<id>.png   (SBD-augmented masks, for train_aug)
    VOC2012/ImageSets/Segmentation/<split>.txt
    VOC2012/classes.txt                     (optional: K class names, index 0 first)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsss_core.data.errors import DataError
from wsss_core.data.labels import labels_from_mask, lookup_labels, read_label_file
from wsss_core.data.sample import Sample
from wsss_core.data.verify import reason

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
MASK_DIRS: tuple[str, ...] = ("SegmentationClassAug", "SegmentationClass")
CLASS_NAMES_FILE = "classes.txt"


def voc_palette() -> np.ndarray:
    """The VOC colour map: uint8 [256, 3], colour of class index i at row i."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def read_image(path: Path) -> np.ndarray:
    """Decode an image file -> uint8 [H, W, 3] RGB; FileNotFoundError or
    DataError naming the file when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot decode image ({reason(error)})") from None


def read_mask(path: Path) -> np.ndarray:
    """Decode a class mask PNG -> int64 [H, W] of class indices.

    Palette ("P") and greyscale ("L") PNGs hold the indices directly; RGB PNGs
    are decoded through the VOC palette (a colour outside it is an error).
    A missing or undecodable file raises FileNotFoundError / DataError naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L"):
                return np.asarray(image, dtype=np.int64)
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot decode mask ({reason(error)})") from None
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    palette = voc_palette().astype(np.int64)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_codes)
    position = np.clip(np.searchsorted(palette_codes[order], codes), 0, 255)
    found = palette_codes[order][position] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise DataError(f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at ({y}, {x}) is not in the VOC palette")
    return order[position].astype(np.int64)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a class mask [H, W] (values 0..255) as a VOC palette PNG."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path, optimize=False)


def resolve_voc_root(root: str | Path) -> Path:
    """The folder holding JPEGImages: `root`, `root/VOC2012` or `root/VOCdevkit/VOC2012`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOC root not found: {root}")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(f"VOC folder not found: {root / 'JPEGImages'} (nor VOC2012/JPEGImages below {root})")


class VOCDataset:
    """Images of one split of a VOC-layout folder, as `Sample`s.

    split: a list name in ImageSets/Segmentation (e.g. "train", "val", "train_aug").
    label_source: "masks" derives image labels from the masks (values other
        than 0 and 255); otherwise a path to a labels file (see
        `wsss_core.data.labels` for the formats, including cls_labels.npy).
    mask_dir: "SegmentationClass" or "SegmentationClassAug" (or any folder name
        under the root); every listed image must then have a mask. None
        auto-detects: the first of SegmentationClassAug, SegmentationClass that
        holds every mask of the split; with a labels file and no such folder,
        samples carry mask None.
    transform: applied to each `Sample` in __getitem__ (for seeded random
        transforms wrap the dataset in `TransformedDataset` instead).
    Missing folders or files raise FileNotFoundError naming the first missing path.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        label_source: str | Path = "masks",
        transform: Callable[[Sample], Any] | None = None,
        mask_dir: str | None = None,
    ) -> None:
        self.root = resolve_voc_root(root)
        self.split = split
        self.transform = transform
        self.class_names = _read_class_names(self.root)
        self.num_classes = len(self.class_names)
        self.names = _read_split(self.root, split)
        missing_image = _first_missing(self.root / "JPEGImages", self.names, ".jpg")
        if missing_image is not None:
            raise FileNotFoundError(f"image not found: {missing_image}")
        from_masks = str(label_source) == "masks"
        self.mask_root = _choose_mask_dir(self.root, self.names, mask_dir, required=from_masks)
        self.label_file = None if from_masks else Path(label_source)
        self._label_table = (
            None if self.label_file is None else read_label_file(self.label_file, self.num_classes - 1)
        )
        if self._label_table is not None:
            for name in self.names:
                lookup_labels(self._label_table, name, self.label_file)

    def image_path(self, name: str) -> Path:
        return self.root / "JPEGImages" / f"{name}.jpg"

    def mask_path(self, name: str) -> Path | None:
        return None if self.mask_root is None else self.mask_root / f"{name}.png"

    def files(self) -> list[tuple[Path, Path | None]]:
        """(image path, mask path or None) of every image, in order."""
        return [(self.image_path(name), self.mask_path(name)) for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> Sample:
        """The untransformed sample at `index`."""
        name = self.names[index]
        rgb = read_image(self.image_path(name))
        mask_path = self.mask_path(name)
        mask = None if mask_path is None else read_mask(mask_path)
        if mask is not None and mask.shape != rgb.shape[:2]:
            raise DataError(f"{mask_path}: mask size {mask.shape} differs from image size {rgb.shape[:2]}")
        if self._label_table is None:
            labels = labels_from_mask(mask, self.num_classes - 1, source=str(mask_path))
        else:
            labels = lookup_labels(self._label_table, name, self.label_file)
        return Sample(image=rgb, mask=mask, labels=labels, name=name)

    def __getitem__(self, index: int) -> Any:
        sample = self.load(index)
        return sample if self.transform is None else self.transform(sample)


def _read_class_names(root: Path) -> tuple[str, ...]:
    path = root / CLASS_NAMES_FILE
    if not path.is_file():
        return VOC_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) < 2 or names[0] != "background":
        raise DataError(f"{path}: expected 'background' then at least one class name, one per line")
    return names


def _read_split(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"split list is empty: {path}")
    return names


def _choose_mask_dir(root: Path, names: list[str], mask_dir: str | None, *, required: bool) -> Path | None:
    if mask_dir is not None:
        return _check_masks(root / mask_dir, names)
    complete = [root / d for d in MASK_DIRS if _first_missing(root / d, names, ".png") is None]
    if complete:
        return complete[0]
    if not required:
        return None
    existing = [root / d for d in MASK_DIRS if (root / d).is_dir()]
    return _check_masks(existing[0] if existing else root / MASK_DIRS[-1], names)


def _check_masks(folder: Path, names: list[str]) -> Path:
    missing = _first_missing(folder, names, ".png")
    if missing is not None:
        raise FileNotFoundError(f"mask not found: {missing}")
    return folder


def _first_missing(folder: Path, names: list[str], suffix: str) -> Path | None:
    """The first of folder/<name><suffix> that does not exist (the folder itself if absent)."""
    if not folder.is_dir():
        return folder
    present = {p.name for p in folder.iterdir()}
    for name in names:
        if f"{name}{suffix}" not in present:
            return folder / f"{name}{suffix}"
    return None
