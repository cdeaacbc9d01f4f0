"""Training / evaluation transforms and a seeded torch Dataset wrapper.

TrainTransform follows the reference codebases (psa, SEAM): random resize of
the long side, colour jitter, normalisation, horizontal flip, random crop with
padding. Randomness comes only from the np.random.Generator passed in, so a
(seed, epoch, index) triple fixes the result whatever the DataLoader's
num_workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, ImageEnhance

from wsss_core.data.sample import Sample, SampleSource

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


@dataclass(frozen=True)
class TransformedSample:
    """image float32 [3,h,w] normalised; rgb float32 [3,h,w] in [0,1] (for FSL);
    mask int64 [h,w] (255 = void or padding) or None; labels float32 [C]; name."""

    image: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor | None
    labels: torch.Tensor
    name: str


SampleTransform = Callable[[Sample, np.random.Generator], TransformedSample]


@dataclass(frozen=True)
class Batch:
    """Collated TransformedSamples: image/rgb [B,3,h,w], mask [B,h,w] or None, labels [B,C]."""

    image: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor | None
    labels: torch.Tensor
    names: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        mask = None if self.mask is None else fn(self.mask)
        return Batch(fn(self.image), fn(self.rgb), mask, fn(self.labels), self.names)


def collate_samples(samples: Sequence[TransformedSample]) -> Batch:
    """Stack equally sized samples into a Batch (mask None unless every sample has one)."""
    masks = [s.mask for s in samples]
    return Batch(
        image=torch.stack([s.image for s in samples]),
        rgb=torch.stack([s.rgb for s in samples]),
        mask=None if any(m is None for m in masks) else torch.stack(masks),
        labels=torch.stack([s.labels for s in samples]),
        names=[s.name for s in samples],
    )


@dataclass(frozen=True)
class ColorJitter:
    """Brightness, contrast, saturation factors drawn from [1-x, 1+x] and a hue
    shift from [-hue, hue] (fraction of the colour circle), applied in random
    order like torchvision's ColorJitter (the psa/SEAM setting is 0.3, 0.3, 0.3, 0.1)."""

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.1

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"color_jitter {name}={getattr(self, name)!r} is invalid; allowed: 0 <= x < 1")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"color_jitter hue={self.hue!r} is invalid; allowed: 0 <= hue <= 0.5")

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        factors = {
            "brightness": rng.uniform(1 - self.brightness, 1 + self.brightness),
            "contrast": rng.uniform(1 - self.contrast, 1 + self.contrast),
            "saturation": rng.uniform(1 - self.saturation, 1 + self.saturation),
            "hue": rng.uniform(-self.hue, self.hue),
        }
        for op in rng.permutation(list(factors)):
            image = _adjust(image, str(op), float(factors[op]))
        return image


class TrainTransform:
    """Random resize (long side in `resize_long`), colour jitter, flip, crop to
    `crop_size` x `crop_size` (psa/SEAM). Padding where the image is smaller
    than the crop: 0 in the normalised image (so `rgb` holds the mean colour
    there, keeping image == (rgb - mean) / std everywhere) and 255 in the mask.
    color_jitter None disables jitter.
    """

    def __init__(
        self,
        crop_size: int,
        resize_long: tuple[int, int] | None = (448, 768),
        flip: bool = True,
        color_jitter: ColorJitter | None = ColorJitter(),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size={crop_size!r} is invalid; allowed: a positive integer")
        if resize_long is not None and not (1 <= resize_long[0] <= resize_long[1]):
            raise ValueError(f"resize_long={resize_long!r} is invalid; allowed: (lo, hi) with 1 <= lo <= hi")
        self.crop_size = crop_size
        self.resize_long = resize_long
        self.flip = flip
        self.color_jitter = color_jitter
        self.normalize = Normalize(mean, std)

    def __call__(self, sample: Sample, rng: np.random.Generator | int | None = None) -> TransformedSample:
        """Geometry and colour draw from separate child streams of `rng`, in a
        fixed order, so switching jitter or flip off leaves the other draws unchanged."""
        geometry, colour = np.random.default_rng(rng).spawn(2)
        resize_draw, flip_draw, crop_y, crop_x = geometry.random(4)
        image = Image.fromarray(sample.image)
        mask = sample.mask
        if self.resize_long is not None:
            low, high = self.resize_long
            long_side = low + min(int(resize_draw * (high - low + 1)), high - low)
            image, mask = _resize(image, mask, long_side / max(image.size))
        if self.color_jitter is not None:
            image = self.color_jitter(image, colour)
        rgb = np.asarray(image, dtype=np.float32) / 255.0
        if self.flip and flip_draw < 0.5:
            rgb = rgb[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        rgb, mask = _crop(rgb, mask, self.crop_size, (crop_y, crop_x), fill=self.normalize.mean)
        return self.normalize.finish(rgb, mask, sample)


class EvalTransform:
    """Normalisation only, after an optional rescale by `scale` (bilinear image, nearest mask)."""

    def __init__(
        self, scale: float = 1.0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale={scale!r} is invalid; allowed: a positive number")
        self.scale = scale
        self.normalize = Normalize(mean, std)

    def __call__(self, sample: Sample, rng: np.random.Generator | int | None = None) -> TransformedSample:
        """`rng` is accepted for a common signature with TrainTransform and unused."""
        image, mask = Image.fromarray(sample.image), sample.mask
        if self.scale != 1.0:
            image, mask = _resize(image, mask, self.scale)
        return self.normalize.finish(np.asarray(image, dtype=np.float32) / 255.0, mask, sample)


class Normalize:
    """(rgb - mean) / std per channel and conversion to a TransformedSample."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean={tuple(mean)!r}, std={tuple(std)!r} are invalid; allowed: 3 values each, std > 0")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def finish(self, rgb: np.ndarray, mask: np.ndarray | None, sample: Sample) -> TransformedSample:
        """rgb float32 [h,w,3] in [0,1], mask [h,w] or None -> TransformedSample."""
        rgb_chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        image = (rgb_chw - self.mean[:, None, None]) / self.std[:, None, None]
        return TransformedSample(
            image=torch.from_numpy(image),
            rgb=torch.from_numpy(rgb_chw),
            mask=None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
            labels=torch.from_numpy(np.asarray(sample.labels, dtype=np.float32)),
            name=sample.name,
        )


class TransformedDataset(torch.utils.data.Dataset):
    """Applies `transform(sample, rng)` with rng seeded by (seed, epoch, index).

    Deterministic for any DataLoader num_workers: call `set_epoch(e)` before
    creating each epoch's iterator (workers copy the dataset at that moment).
    Use `collate_samples` as the DataLoader's collate_fn. `dataset` must return
    plain Samples (built without its own transform).
    """

    def __init__(self, dataset: SampleSource, transform: SampleTransform, *, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> TransformedSample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(self.dataset[index], rng)


def _adjust(image: Image.Image, op: str, factor: float) -> Image.Image:
    if op == "brightness":
        return ImageEnhance.Brightness(image).enhance(factor)
    if op == "contrast":
        return ImageEnhance.Contrast(image).enhance(factor)
    if op == "saturation":
        return ImageEnhance.Color(image).enhance(factor)
    return _shift_hue(image, factor)


def _shift_hue(image: Image.Image, fraction: float) -> Image.Image:
    """Rotate the hue by `fraction` of the colour circle, as torchvision's
    adjust_hue on PIL images (the hue byte of 8-bit HSV shifted modulo 256),
    through OpenCV's 8-bit HSV: several times faster than PIL's HSV round trip,
    and as close to the exact rotation (bench/transforms.py times both)."""
    hsv = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] += np.uint8(round(fraction * 255) % 256)  # uint8 arithmetic wraps modulo 256
    return Image.fromarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL))


def _resize(image: Image.Image, mask: np.ndarray | None, factor: float) -> tuple[Image.Image, np.ndarray | None]:
    """Scale by `factor`: bicubic image (as psa/SEAM), nearest mask."""
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.Resampling.NEAREST), dtype=np.int64)
    return image, mask


def _crop(
    rgb: np.ndarray, mask: np.ndarray | None, crop: int, draws: tuple[float, float], fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop [h,w,...] to [crop,crop,...] at the offset given by `draws` in [0,1) per axis;
    a smaller image is placed at such an offset inside a canvas filled with `fill`
    (rgb) and 255 (mask), as psa/SEAM's RandomCrop."""
    height, width = rgb.shape[:2]
    src_y, dst_y, span_y = _crop_offsets(height, crop, draws[0])
    src_x, dst_x, span_x = _crop_offsets(width, crop, draws[1])
    out_rgb = np.empty((crop, crop, 3), dtype=np.float32)
    out_rgb[:] = fill
    out_rgb[dst_y:dst_y + span_y, dst_x:dst_x + span_x] = rgb[src_y:src_y + span_y, src_x:src_x + span_x]
    if mask is None:
        return out_rgb, None
    out_mask = np.full((crop, crop), IGNORE_INDEX, dtype=np.int64)
    out_mask[dst_y:dst_y + span_y, dst_x:dst_x + span_x] = mask[src_y:src_y + span_y, src_x:src_x + span_x]
    return out_rgb, out_mask


def _crop_offsets(length: int, crop: int, draw: float) -> tuple[int, int, int]:
    """(source start, destination start, span) along one axis; `draw` in [0,1) picks the offset."""
    slack = abs(length - crop)
    offset = min(int(draw * (slack + 1)), slack)
    if length >= crop:
        return offset, 0, crop
    return 0, offset, length
