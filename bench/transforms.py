"""Times the training augmentation per image, and the hue shift against PIL's.

Target: the hue shift at least 5x faster than PIL's HSV round trip, at most
1 grey level apart on average.

    python -m bench.transforms

Times TrainTransform (resize, colour jitter, flip, crop) per image on a
synthetic demo image (112 px, long side 224-256, crop 224) and on a VOC-sized
photo (500 x 375, long side 448-768, crop 448), then the hue shift alone on
the resized image: OpenCV's 8-bit HSV (ours) against PIL's HSV round trip
(torchvision's adjust_hue on PIL images), with their mean and largest
difference in grey levels. Each transform call runs the data loader's work
once; with the feature memo a frozen-backbone stage runs it twice per batch
(warming the memo, then training).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import numpy as np
from PIL import Image

from wsss_core.data import Sample, TrainTransform
from wsss_core.data.transforms import _shift_hue

TARGET_SPEEDUP, TARGET_MEAN_DIFF = 5.0, 1.0


def per_call_ms(fn, repeats: int) -> float:
    start = time.perf_counter()
    for i in range(repeats):
        fn(i)
    return (time.perf_counter() - start) / repeats * 1e3


def pil_hsv_hue(image: Image.Image, fraction: float) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] += np.uint8(round(fraction * 255) % 256)
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"target: hue speed-up >= {TARGET_SPEEDUP:g}x, mean diff <= {TARGET_MEAN_DIFF:g}")
    cases = [("demo 112 px", (112, 112), 224, (224, 256)), ("VOC 500x375", (375, 500), 448, (448, 768))]
    print(f"{'image':12s} {'transform ms':>13s} {'hue PIL ms':>11s} {'hue ours ms':>12s} {'speed-up':>9s} "
          f"{'mean diff':>10s} {'max diff':>9s}")
    for name, (h, w), crop, resize_long in cases:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sample = Sample(image=pixels, mask=None, labels=np.zeros(20, dtype=np.float32), name=name)
        transform = TrainTransform(crop, resize_long)
        transform_ms = per_call_ms(lambda i: transform(sample, i), 50)
        scale = resize_long[1] / max(h, w)
        resized = Image.fromarray(pixels).resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
        pil_ms = per_call_ms(lambda i: pil_hsv_hue(resized, 0.07), 50)
        ours_ms = per_call_ms(lambda i: _shift_hue(resized, 0.07), 50)
        diff = np.abs(np.asarray(pil_hsv_hue(resized, 0.07), dtype=np.int64)
                      - np.asarray(_shift_hue(resized, 0.07), dtype=np.int64))
        print(f"{name:12s} {transform_ms:13.2f} {pil_ms:11.2f} {ours_ms:12.2f} {pil_ms / ours_ms:8.1f}x "
              f"{diff.mean():10.2f} {diff.max():9d}")


if __name__ == "__main__":
    main()
