"""Segmentation metrics of the paper (Sec. 4.1): area mIoU and contour F-score;
and the pointing game, a CAM localisation diagnostic.

mIoU and contour F accumulate integer counts over a dataset with
``update(pred, gt)`` on label maps [H, W] and reduce partial results from
worker processes with ``merge(other)`` (plain picklable state); the pointing
game counts hits with ``update(maps, classes, gt)``. All three report with
``compute() -> {"mean": float, "per_class": list[float], ...}``. Lists are
indexed by class id (0 = background), so ``per_class[c]`` is class c in all.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import cv2
import numpy as np

VOID_LABEL = 255
PREDICTED_IOU = 0.01
"""A class whose IoU on a split is below this counts as never predicted there."""

# Contour F of a class with no boundary pixels predicted or in the ground truth
# over a whole evaluation, by rule name. "one": scores 1 and counts in the mean
# (DAVIS; the authors' contour_fscore.py). "skip": left out of the mean, as
# MeanIoU leaves out a class absent from both maps. The rules differ only where
# a class never appears (4 of 20 classes in the 50-photo voc2012-mini val set).
ABSENT_CLASS_F: dict[str, float] = {"one": 1.0, "skip": math.nan}


def _as_label_map(array: Any, name: str) -> np.ndarray:
    """A numpy integer array from a numpy array or a (CPU or CUDA) torch tensor."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a label map [H, W]; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids; got dtype {array.dtype}")
    return array


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_label_map(pred, "pred"), _as_label_map(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}; they must match")
    return pred, gt


def _check_range(labels: np.ndarray, name: str, num_classes: int, allowed_extra: int | None) -> None:
    """Raise if a value is outside 0..num_classes-1 (and is not ``allowed_extra``)."""
    invalid = (labels < 0) | (labels >= num_classes)
    if allowed_extra is not None:
        invalid &= labels != allowed_extra
    if invalid.any():
        bad = int(labels[invalid].flat[0])
        extra = f" or {allowed_extra}" if allowed_extra is not None else ""
        raise ValueError(f"{name} contains class id {bad}; allowed are 0..{num_classes - 1}{extra}")


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 2 (background + foreground classes)")


class MeanIoU:
    """Area mIoU from a confusion matrix accumulated over the dataset.

    ``num_classes`` is K = C + 1 (background included). Pixels whose ground
    truth is ``ignore_index`` are not counted; predictions must be in 0..K-1.
    IoU_c = TP / (TP + FP + FN) over all updates. A class absent from both
    predictions and ground truth over the whole dataset has IoU NaN and is
    excluded from the mean (the standard VOC convention).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = VOID_LABEL) -> None:
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image: ``pred`` and ``gt`` integer label maps [H, W]."""
        pred, gt = _check_pair(pred, gt)
        _check_range(gt, "gt", self.num_classes, self.ignore_index)
        keep = gt != self.ignore_index if self.ignore_index is not None else np.ones(gt.shape, dtype=bool)
        _check_range(pred[keep], "pred", self.num_classes, None)
        index = gt[keep].astype(np.int64) * self.num_classes + pred[keep].astype(np.int64)
        counts = np.bincount(index, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def merge(self, other: MeanIoU) -> None:
        """Add the counts of ``other`` (same num_classes and ignore_index)."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge MeanIoU(num_classes={other.num_classes}, ignore_index={other.ignore_index}) "
                f"into MeanIoU(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        self.confusion += other.confusion

    def compute(self) -> dict[str, Any]:
        """{"mean": nan-mean IoU, "per_class": K IoUs (NaN if absent), "pixel_accuracy"}."""
        total = self.confusion.sum()
        if total == 0:
            raise ValueError("MeanIoU.compute() needs at least one update with a non-ignored pixel")
        true_positive = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, true_positive / union, np.nan)
        return {
            "mean": float(np.nanmean(iou)),
            "per_class": [float(value) for value in iou],
            "pixel_accuracy": float(true_positive.sum() / total),
        }


class PointingGame:
    """Where each class's CAM peaks: the pointing game (Zhang et al., ECCV 2016),
    with no tolerance, over a dataset.

    For every class c present in an image, a hit when the argmax of its map
    lies on a ground-truth pixel of class c. "per_class" is hits / images per
    class id (NaN where the class never occurs, and for the background); "mean"
    averages the foreground classes that occur. A class whose CAM peaks off the
    object (e.g. at the image border, where GMP can find a global cue) scores
    near 0 even when its CAM is high somewhere on the object.
    """

    def __init__(self, num_classes: int) -> None:
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.hits = np.zeros(num_classes, dtype=np.int64)
        self.images = np.zeros(num_classes, dtype=np.int64)

    def update(self, maps: np.ndarray, classes: Any, gt: Any) -> None:
        """Add one image: ``maps`` [C', H, W], one map per class id in ``classes`` (C' ids
        in 1..K-1), ``gt`` the ground-truth label map [H, W]."""
        gt = _as_label_map(gt, "gt")
        classes = [int(c) for c in classes]
        if maps.ndim != 3 or maps.shape[0] != len(classes) or maps.shape[1:] != gt.shape:
            raise ValueError(f"maps must be [{len(classes)}, {gt.shape[0]}, {gt.shape[1]}] (one map per class, "
                             f"the ground truth's size); got {maps.shape}")
        for k, c in enumerate(classes):
            if not 1 <= c < self.num_classes:
                raise ValueError(f"class id {c} is not allowed; use 1..{self.num_classes - 1}")
            y, x = np.unravel_index(int(np.argmax(maps[k])), gt.shape)
            self.hits[c] += int(gt[y, x] == c)
            self.images[c] += 1

    def compute(self) -> dict[str, Any]:
        """{"mean": hit rate over the foreground classes that occur, "per_class": K rates};
        NaN for a class that never occurred (always the background), and a NaN mean if none did."""
        seen = self.images > 0  # never the background: update() takes ids 1..K-1
        rate = np.full(self.num_classes, np.nan)
        rate[seen] = self.hits[seen] / self.images[seen]
        return {"mean": float(rate[seen].mean()) if seen.any() else math.nan,
                "per_class": [float(value) for value in rate]}


def boundary_radius(height: int, width: int, bound_th: float) -> int:
    """DAVIS matching tolerance in pixels: ceil(bound_th * diagonal) if bound_th < 1, else bound_th."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


@functools.lru_cache(maxsize=32)
def disk(radius: int) -> np.ndarray:
    """Structuring element [2r+1, 2r+1] uint8: 1 where dy^2 + dx^2 <= r^2 (as skimage's disk)."""
    offsets = np.arange(-radius, radius + 1)
    kernel = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)
    kernel.flags.writeable = False  # shared by the cache
    return kernel


def class_boundaries(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-pixel boundary maps of every label value at once, as sparse (class, flat index) pairs.

    For the binary mask m_c = (labels == c), pixel p is a boundary pixel of
    class c iff m_c(p) != m_c(q) for one of its east, south or south-east
    neighbours q inside the image: the seg2bmap rule of DAVIS (boundaries offset
    half a pixel towards the origin; the last row and column only look east and
    south respectively). Equivalently p is on the boundary of class c iff some
    neighbour q has labels(q) != labels(p) and c is labels(p) or labels(q).

    labels: int [H, W]. Returns (classes, flat_indices), unsorted and with
    repeats (a pixel is listed once per differing neighbour), for every label
    value that has a boundary, background and void included.
    """
    width = labels.shape[1]
    flat = labels.reshape(-1)
    parts_class, parts_index = [], []
    for step in (1, width, width + 1):  # east, south, south-east
        index = np.flatnonzero(flat[:-step] != flat[step:])
        if step != width:  # pairs that wrap from the last column to the next row are not neighbours
            index = index[index % width != width - 1]
        parts_class += [flat[index], flat[index + step]]
        parts_index += [index, index]
    return np.concatenate(parts_class), np.concatenate(parts_index)


def _match_in_box(
    pred_index: np.ndarray, gt_index: np.ndarray, shape: tuple[int, int], kernel: np.ndarray
) -> tuple[int, int, int, int]:
    """(matched pred, pred, matched gt, gt) boundary pixel counts of one class in one image.

    The boundary pixels (flat indices into ``shape``, repeats allowed) are drawn
    on a canvas covering their bounding box plus the kernel radius, which holds
    every pixel that a dilation by ``kernel`` can reach from them.
    """
    height, width = shape
    radius = kernel.shape[0] // 2
    ys, xs = np.divmod(np.concatenate([pred_index, gt_index]), width)
    y0, x0 = max(int(ys.min()) - radius, 0), max(int(xs.min()) - radius, 0)
    y1, x1 = min(int(ys.max()) + radius + 1, height), min(int(xs.max()) + radius + 1, width)
    local = (ys - y0) * (x1 - x0) + (xs - x0)
    pred_map = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    gt_map = np.zeros_like(pred_map)
    pred_map.reshape(-1)[local[: pred_index.size]] = 1
    gt_map.reshape(-1)[local[pred_index.size :]] = 1
    pred_total, gt_total = np.count_nonzero(pred_map), np.count_nonzero(gt_map)
    if pred_total == 0 or gt_total == 0:
        return 0, pred_total, 0, gt_total
    pred_matched = np.count_nonzero(pred_map & cv2.dilate(gt_map, kernel))
    gt_matched = np.count_nonzero(gt_map & cv2.dilate(pred_map, kernel))
    return pred_matched, pred_total, gt_matched, gt_total


class ContourFScore:
    """Contour F-score of the paper (Sec. 4.1), the DAVIS boundary measure over a dataset.

    For every foreground class c (1..K-1) and image, the one-pixel boundary
    maps of pred == c and gt == c are matched within a disk of radius
    ceil(bound_th * image diagonal) (bound_th pixels if bound_th >= 1), as
    davis2017-evaluation's f_measure does with a dilation. Matched and total
    boundary pixels are ACCUMULATED per class over the dataset; then per class
    precision P = matched pred / pred pixels, recall R = matched gt / gt pixels,
    F = 2PR / (P + R). A class with only predicted or only ground-truth boundary
    pixels scores 0; one with neither scores by the `absent` rule of compute()
    (ABSENT_CLASS_F). "mean" averages F over classes 1..K-1, leaving NaN out.
    Void (255) counts as background.

    Identical to evaluating every class of every image with full-image
    dilations (the authors' script), but only classes present in the image are
    visited, the boundaries of all classes come from one pass over each map,
    and each dilation covers only the class's boundary bounding box plus the
    radius.
    """

    def __init__(self, num_classes: int, bound_th: float = 0.008) -> None:
        _check_num_classes(num_classes)
        if not bound_th > 0 or (bound_th >= 1 and bound_th != int(bound_th)):
            raise ValueError(
                f"bound_th={bound_th!r} must be a fraction of the image diagonal in (0, 1) or a whole number of pixels >= 1"
            )
        self.num_classes = num_classes
        self.bound_th = bound_th
        self.pred_matched = np.zeros(num_classes, dtype=np.int64)
        self.pred_total = np.zeros(num_classes, dtype=np.int64)
        self.gt_matched = np.zeros(num_classes, dtype=np.int64)
        self.gt_total = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image: ``pred`` and ``gt`` integer label maps [H, W] (255 = void)."""
        pred, gt = _check_pair(pred, gt)
        height, width = gt.shape
        kernel = disk(boundary_radius(height, width, self.bound_th))
        pred_classes, pred_index = class_boundaries(pred)
        gt_classes, gt_index = class_boundaries(gt)
        # Every value of a non-constant map borders another value, so this checks all of them.
        _check_range(np.append(pred_classes, pred[0, 0]), "pred", self.num_classes, VOID_LABEL)
        _check_range(np.append(gt_classes, gt[0, 0]), "gt", self.num_classes, VOID_LABEL)
        pred_classes, gt_classes = pred_classes.astype(np.intp), gt_classes.astype(np.intp)
        bins = max(self.num_classes, VOID_LABEL + 1)
        present = np.bincount(pred_classes, minlength=bins) + np.bincount(gt_classes, minlength=bins)
        for c in np.flatnonzero(present[1 : self.num_classes]) + 1:
            counts = _match_in_box(pred_index[pred_classes == c], gt_index[gt_classes == c], (height, width), kernel)
            self.pred_matched[c] += counts[0]
            self.pred_total[c] += counts[1]
            self.gt_matched[c] += counts[2]
            self.gt_total[c] += counts[3]

    def merge(self, other: ContourFScore) -> None:
        """Add the counts of ``other`` (same num_classes and bound_th)."""
        if (other.num_classes, other.bound_th) != (self.num_classes, self.bound_th):
            raise ValueError(
                f"cannot merge ContourFScore(num_classes={other.num_classes}, bound_th={other.bound_th}) "
                f"into ContourFScore(num_classes={self.num_classes}, bound_th={self.bound_th})"
            )
        self.pred_matched += other.pred_matched
        self.pred_total += other.pred_total
        self.gt_matched += other.gt_matched
        self.gt_total += other.gt_total

    def compute(self, absent: str = "one") -> dict[str, Any]:
        """{"mean": F over classes 1..K-1, "per_class", "precision", "recall"} (K entries, index 0 NaN).

        absent: the ABSENT_CLASS_F rule for a class with no boundary pixels in
        any prediction or ground truth seen ("one": the authors' script).
        """
        if absent not in ABSENT_CLASS_F:
            raise ValueError(f"absent={absent!r} is invalid; allowed: {', '.join(ABSENT_CLASS_F)}")
        precision = np.full(self.num_classes, np.nan)
        recall = np.full(self.num_classes, np.nan)
        f_score = np.full(self.num_classes, np.nan)
        for c in range(1, self.num_classes):
            if self.pred_total[c] == 0 and self.gt_total[c] == 0:
                precision[c] = recall[c] = f_score[c] = ABSENT_CLASS_F[absent]
                continue
            precision[c], recall[c] = _precision_recall(
                self.pred_matched[c], self.pred_total[c], self.gt_matched[c], self.gt_total[c]
            )
            total = precision[c] + recall[c]
            f_score[c] = 0.0 if total == 0 else 2 * precision[c] * recall[c] / total
        scored = f_score[1:][~np.isnan(f_score[1:])]
        return {
            "mean": float(scored.mean()) if scored.size else math.nan,
            "per_class": [float(value) for value in f_score],
            "precision": [float(value) for value in precision],
            "recall": [float(value) for value in recall],
        }


def _precision_recall(pred_matched: int, pred_total: int, gt_matched: int, gt_total: int) -> tuple[float, float]:
    """DAVIS's precision and recall, including its conventions for one empty boundary."""
    if pred_total == 0:
        return 1.0, 0.0
    if gt_total == 0:
        return 0.0, 1.0
    return pred_matched / pred_total, gt_matched / gt_total
