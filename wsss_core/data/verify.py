"""Fast checks of every file of a dataset, before any expensive work.

Each image and mask must open (a readable header), be complete (a JPEG ends
with its end-of-image marker, a PNG with its IEND chunk) and each mask must
have its image's size. Pixel data is decoded at load, which names the file
if it fails (`read_image`, `read_mask`); a truncated file is caught here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image
from tqdm import tqdm

from wsss_core.data.errors import DataError

TAIL_BYTES = 1024
JPEG_END = b"\xff\xd9"
PNG_END = b"IEND\xaeB`\x82"


class FileListing(Protocol):
    def files(self) -> list[tuple[Path, Path | None]]: ...


@dataclass(frozen=True)
class DataSummary:
    """What the checks learnt: how many images, the largest image side (px)."""

    images: int
    largest_side: int


def verify_dataset(dataset: FileListing, *, desc: str = "checking images", progress: bool = False) -> DataSummary:
    """Check every (image, mask) of `dataset.files()`; DataError or
    FileNotFoundError naming the first bad file."""
    largest = 0
    files = dataset.files()
    for image_path, mask_path in tqdm(files, desc=desc, disable=not progress, leave=False, unit="img"):
        size = image_size(image_path, "image")
        if mask_path is not None:
            mask_size = image_size(mask_path, "mask")
            if mask_size != size:
                raise DataError(f"{mask_path}: mask size {mask_size[0]}x{mask_size[1]} differs from its image "
                                f"{image_path.name} ({size[0]}x{size[1]}, width x height)")
        largest = max(largest, *size)
    return DataSummary(len(files), largest)


def image_size(path: Path, kind: str = "image") -> tuple[int, int]:
    """(width, height) of an image file whose header reads and whose data is
    complete; FileNotFoundError or DataError naming it otherwise."""
    try:
        with Image.open(path) as image:
            fmt, size = image.format, image.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: not a readable {kind} ({reason(error)})") from None
    with open(path, "rb") as handle:
        handle.seek(max(0, handle.seek(0, 2) - TAIL_BYTES))
        tail = handle.read()
    end = {"JPEG": JPEG_END, "PNG": PNG_END}.get(fmt or "")
    if end is not None and end not in tail:
        raise DataError(f"{path}: truncated {kind} ({fmt} data ends before its end marker)")
    return size


def reason(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
