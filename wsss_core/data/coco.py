"""MS-COCO 2014/2017 through pycocotools: instance annotations -> semantic masks and image labels.

Layout under ``root``::

    annotations/instances_<split><year>.json
    <split><year>/<file_name>          (or images/<split><year>/<file_name>)

Category ids (1..90 with gaps in COCO) map to contiguous class indices 1..C in
increasing id order (C = 80 for COCO). Overlapping instances: instances are
painted in order of decreasing area, so where they overlap the smaller (painted
later) wins and small objects are not hidden by large ones. Crowd regions
(iscrowd=1) get their class by default (crowd="class") or void 255
(crowd="void"). Image labels are the classes of the annotations of the image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.data.errors import DataError
from wsss_core.data.sample import Sample
from wsss_core.data.verify import reason
from wsss_core.data.voc import read_image

IGNORE_INDEX = 255
CROWD_MODES = ("class", "void")


class CocoDataset:
    """COCO images of `split` ("train" | "val") and `year` (2014 | 2017) as `Sample`s.

    annotation_file / image_dir override the standard layout. drop_unlabelled
    removes images without annotations (WSSS training needs >= 1 class).
    `.num_classes` is C + 1 and `.class_names` starts with "background".
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        year: int = 2014,
        *,
        transform: Callable[[Sample], Any] | None = None,
        annotation_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        crowd: str = "class",
        drop_unlabelled: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        if crowd not in CROWD_MODES:
            raise ValueError(f"crowd={crowd!r} is invalid; allowed: {', '.join(CROWD_MODES)}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"COCO root not found: {root}")
        annotation_path = (
            Path(annotation_file) if annotation_file else root / "annotations" / f"instances_{split}{year}.json"
        )
        if not annotation_path.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_path}")
        self.image_dir = Path(image_dir) if image_dir else _find_image_dir(root, f"{split}{year}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(annotation_path))
        except (ValueError, KeyError, TypeError, AssertionError) as error:
            raise DataError(f"{annotation_path}: not a COCO annotation file ({reason(error)})") from None
        category_ids = sorted(self.coco.getCatIds())
        self.class_index = {cat: i + 1 for i, cat in enumerate(category_ids)}
        self.class_names = ("background",) + tuple(self.coco.loadCats(c)[0]["name"] for c in category_ids)
        self.num_classes = len(self.class_names)
        self.split = split
        self.transform = transform
        self.crowd = crowd
        image_ids = sorted(self.coco.getImgIds())
        if drop_unlabelled:
            image_ids = [i for i in image_ids if self.coco.getAnnIds(imgIds=i)]
        self.image_ids = image_ids
        self.names = [Path(self.coco.imgs[i]["file_name"]).stem for i in image_ids]
        present = {p.name for p in self.image_dir.iterdir()}
        for image_id in image_ids:
            file_name = self.coco.imgs[image_id]["file_name"]
            if file_name not in present:
                raise FileNotFoundError(f"image not found: {self.image_dir / file_name}")

    def files(self) -> list[tuple[Path, None]]:
        """(image path, None) of every image, in order (masks come from the annotations)."""
        return [(self.image_dir / self.coco.imgs[i]["file_name"], None) for i in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> Sample:
        """The untransformed sample at `index`."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        rgb = read_image(path)
        if rgb.shape[:2] != (info["height"], info["width"]):
            raise DataError(f"{path}: image size {rgb.shape[:2]} differs from its annotation "
                            f"({info['height']}, {info['width']})")
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
        mask = self.semantic_mask(annotations, info["height"], info["width"])
        labels = np.zeros(self.num_classes - 1, dtype=np.float32)
        for annotation in annotations:
            labels[self.class_index[annotation["category_id"]] - 1] = 1.0
        return Sample(image=rgb, mask=mask, labels=labels, name=self.names[index])

    def semantic_mask(self, annotations: list[dict], height: int, width: int) -> np.ndarray:
        """int64 [H, W]: instances painted largest first (smaller wins on overlap)."""
        mask = np.zeros((height, width), dtype=np.int64)
        for annotation in sorted(annotations, key=lambda a: -a["area"]):
            pixels = self.coco.annToMask(annotation).astype(bool)
            crowd_void = annotation.get("iscrowd", 0) and self.crowd == "void"
            mask[pixels] = IGNORE_INDEX if crowd_void else self.class_index[annotation["category_id"]]
        return mask

    def __getitem__(self, index: int) -> Any:
        sample = self.load(index)
        return sample if self.transform is None else self.transform(sample)


def _find_image_dir(root: Path, folder: str) -> Path:
    for candidate in (root / folder, root / "images" / folder):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"COCO image folder not found: {root / folder}")
