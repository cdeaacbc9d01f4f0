"""Times the contour F-score against the authors' per-class, per-image evaluation.

Target: at least 10x faster, with identical per-class counts and F.

The paper (Sec. 4.1) adapts davis2017-evaluation's f_measure: for EVERY class
of EVERY image it builds the two one-pixel boundary maps (seg2bmap) and
dilates each over the full image with a disk of radius ceil(0.008 * diagonal),
then accumulates matches per class. ``ReferenceContourF`` below is that
approach written out; ``wsss_core.metrics.ContourFScore`` must give identical
per-class counts and F. The data are 1,449
(VOC val size) deterministic VOC-like mask pairs: ~500x375, 1-3 classes of
blobs per image, a void band around objects, prediction = perturbed ground
truth. Only the metric updates are timed; both times and their ratio are
measured within one run.

    python -m bench.metrics [--num-images 1449] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import cv2
import numpy as np

from wsss_core.metrics import ContourFScore

NUM_CLASSES = 21  # VOC: background + 20 foreground classes
VOID = 255
SIZES = ((375, 500), (500, 375), (333, 500), (500, 333), (366, 500), (281, 500))


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask [H, W], DAVIS/Berkeley style.

    A pixel is on the boundary if it differs from its east, south or
    south-east neighbour; the last row compares east only, the last column
    south only, and the bottom-right pixel is never a boundary.
    """
    mask = mask.astype(bool)
    east = np.zeros_like(mask)
    south = np.zeros_like(mask)
    south_east = np.zeros_like(mask)
    east[:, :-1] = mask[:, 1:]
    south[:-1, :] = mask[1:, :]
    south_east[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    boundary[-1, :] = mask[-1, :] ^ east[-1, :]
    boundary[:, -1] = mask[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def skimage_disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk(radius) as uint8 (x^2 + y^2 <= r^2 on [-r, r]^2)."""
    offsets = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(offsets, offsets)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


class ReferenceContourF:
    """The authors' approach: every class of every image, full-image dilations."""

    def __init__(self, num_classes: int, bound_th: float = 0.008) -> None:
        self.num_classes = num_classes
        self.bound_th = bound_th
        self.pred_matched = np.zeros(num_classes, dtype=np.int64)
        self.pred_total = np.zeros(num_classes, dtype=np.int64)
        self.gt_matched = np.zeros(num_classes, dtype=np.int64)
        self.gt_total = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        bound_pix = self.bound_th if self.bound_th >= 1 else np.ceil(self.bound_th * np.linalg.norm(gt.shape))
        kernel = skimage_disk(bound_pix)
        for c in range(1, self.num_classes):
            pred_boundary = seg2bmap(pred == c)
            gt_boundary = seg2bmap(gt == c)  # void (255) is not c: it counts as background
            pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel)
            gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
            self.pred_matched[c] += np.sum(pred_boundary * gt_dilated)
            self.gt_matched[c] += np.sum(gt_boundary * pred_dilated)
            self.pred_total[c] += np.sum(pred_boundary)
            self.gt_total[c] += np.sum(gt_boundary)

    def per_class_f(self) -> list[float]:
        """F per class 1..K-1 from the accumulated matches, with DAVIS's empty-boundary rules."""
        scores = []
        for c in range(1, self.num_classes):
            n_pred, n_gt = self.pred_total[c], self.gt_total[c]
            if n_pred == 0 and n_gt > 0:
                precision, recall = 1.0, 0.0
            elif n_pred > 0 and n_gt == 0:
                precision, recall = 0.0, 1.0
            elif n_pred == 0 and n_gt == 0:
                precision, recall = 1.0, 1.0
            else:
                precision = self.pred_matched[c] / float(n_pred)
                recall = self.gt_matched[c] / float(n_gt)
            scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        return scores


def voc_like_pair(index: int, seed: int = 0, num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (pred, gt) pair of uint8 label maps [H, W] resembling VOC val masks."""
    rng = np.random.default_rng([seed, index])
    height, width = SIZES[rng.integers(len(SIZES))]
    objects = np.zeros((height, width), dtype=np.uint8)
    classes = rng.choice(np.arange(1, num_classes), size=rng.integers(1, 4), replace=False)
    for c in classes:
        for _ in range(rng.integers(1, 3)):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(15, width // 3)), int(rng.integers(15, height // 3)))
                cv2.ellipse(objects, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(c), thickness=-1)
            else:
                angles = np.sort(rng.uniform(0, 2 * math.pi, size=rng.integers(5, 10)))
                radii = rng.uniform(20, min(height, width) / 3, size=angles.size)
                points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
                cv2.fillPoly(objects, [points.astype(np.int32)], int(c))
    gt = objects.copy()
    band_width = int(rng.integers(3, 6))
    band = cv2.morphologyEx(objects, cv2.MORPH_GRADIENT, np.ones((band_width, band_width), np.uint8))
    gt[band > 0] = VOID
    return _perturb(objects, rng, num_classes), gt


def _perturb(objects: np.ndarray, rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """A plausible prediction: shifted, eroded or dilated per class, a few spurious blobs."""
    height, width = objects.shape
    shift = np.float32([[1, 0, rng.integers(-8, 9)], [0, 1, rng.integers(-8, 9)]])
    pred = cv2.warpAffine(objects, shift, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
    for c in np.unique(pred)[1:]:
        size = int(rng.integers(1, 6)) * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        mask = (pred == c).astype(np.uint8)
        if rng.random() < 0.5:
            pred[cv2.dilate(mask, kernel) > 0] = c
        else:
            pred[(mask > 0) & (cv2.erode(mask, kernel) == 0)] = 0
    for _ in range(rng.poisson(0.7)):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(pred, centre, int(rng.integers(3, 40)), int(rng.integers(1, num_classes)), thickness=-1)
    return pred


def run(num_images: int, seed: int) -> dict[str, float]:
    """Time both implementations on the same pairs; assert identical counts and per-class F."""
    reference = ReferenceContourF(NUM_CLASSES)
    fast = ContourFScore(NUM_CLASSES)
    reference_seconds = fast_seconds = 0.0
    for index in range(num_images):
        pred, gt = voc_like_pair(index, seed)
        start = time.perf_counter()
        reference.update(pred, gt)
        middle = time.perf_counter()
        fast.update(pred, gt)
        fast_seconds += time.perf_counter() - middle
        reference_seconds += middle - start
    for name in ("pred_matched", "pred_total", "gt_matched", "gt_total"):
        assert np.array_equal(getattr(reference, name)[1:], getattr(fast, name)[1:]), f"{name} differs"
    fast_f = fast.compute()["per_class"][1:]
    assert fast_f == reference.per_class_f(), "per-class F differs"
    return {
        "images": num_images,
        "reference_s": reference_seconds,
        "fast_s": fast_seconds,
        "speedup": reference_seconds / fast_seconds,
        "mean_f": float(np.mean(fast_f)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1449)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.num_images, args.seed)
    print(
        f"contour F on {result['images']} VOC-like mask pairs: identical per-class F (mean {result['mean_f']:.4f})\n"
        f"reference (every class, every image): {result['reference_s']:.2f} s\n"
        f"wsss_core.metrics.ContourFScore:      {result['fast_s']:.2f} s\n"
        f"speedup: {result['speedup']:.1f}x (target >= 10x)"
    )


if __name__ == "__main__":
    main()
