"""Dense CRF (Kraehenbuehl and Koltun, the paper's [22]) through pydensecrf2.

Used at stage 1 for AffinityNet labels (``crf_label_with_background_power``)
and at stage 3 on DeepLab-v1 predictions (``dense_crf``), with the defaults of
the reference codebases (psa / SEAM ``crf_inference``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from PIL import Image


@dataclasses.dataclass(frozen=True)
class CRFConfig:
    """Kernel parameters and iterations; defaults as in psa / SEAM.

    Gaussian (smoothness) kernel: ``gauss_sxy``, ``gauss_compat``. Bilateral
    (appearance) kernel: ``bilateral_sxy``, ``bilateral_srgb``,
    ``bilateral_compat``. Unaries are -log(max(probs, unary_clip)).
    ``scale`` < 1 runs the CRF on the image and scores resized by it (kernel
    widths ``gauss_sxy`` / ``bilateral_sxy`` scaled alike, so they cover the
    same part of the photo) and resizes the result back: about 1/scale^2
    cheaper (a CPU option; 1 = full size, the reference).
    """

    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 10
    unary_clip: float = 1e-5
    scale: float = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"CRFConfig.{field.name}={value!r} must be a positive number")
        if not isinstance(self.iterations, int):
            raise ValueError(f"CRFConfig.iterations={self.iterations!r} must be a positive int")
        if self.unary_clip >= 1:
            raise ValueError(f"CRFConfig.unary_clip={self.unary_clip!r} must be in (0, 1)")
        if self.scale > 1:
            raise ValueError(f"CRFConfig.scale={self.scale!r} must be in (0, 1]")


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype {image.dtype} is not allowed; the CRF needs uint8 RGB [H, W, 3]")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image shape {image.shape} is not allowed; the CRF needs RGB [H, W, 3]")
    return np.require(image, np.uint8, ["C", "W"])  # pydensecrf refuses read-only buffers (PIL arrays)


def dense_crf(image: np.ndarray, probs: np.ndarray, config: CRFConfig = CRFConfig()) -> np.ndarray:
    """Mean-field dense CRF inference.

    image: uint8 RGB [H, W, 3]. probs: float [K, H, W] class scores in [0, 1]
    (need not sum to 1: the reference codebases pass background-power scores
    unnormalised). Returns float32 [K, H, W], a distribution over K per pixel.
    """
    image = _check_image(image)
    probs = np.asarray(probs)
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs dtype {probs.dtype} is not allowed; pass float scores [K, H, W]")
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs shape {probs.shape} is not allowed; pass [K, H, W] with K >= 1")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs spatial size {probs.shape[1:]} differs from image size {image.shape[:2]}; they must match")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or inf; pass finite scores in [0, 1]")
    num_labels, height, width = probs.shape
    if config.scale < 1:
        return _reduced_crf(image, probs, config)
    unary = -np.log(np.clip(probs, config.unary_clip, 1.0)).reshape(num_labels, -1)
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=config.gauss_sxy, compat=config.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy, srgb=config.bilateral_srgb, rgbim=image, compat=config.bilateral_compat
    )
    return np.asarray(crf.inference(config.iterations), dtype=np.float32).reshape(num_labels, height, width)


def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of float maps [K, h, w] -> float32 [K, height, width]."""
    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR))
        for m in maps
    ])


def _reduced_crf(image: np.ndarray, probs: np.ndarray, config: CRFConfig) -> np.ndarray:
    """dense_crf at config.scale of the size (kernel widths scaled alike), resized back."""
    height, width = image.shape[:2]
    small_h, small_w = max(1, round(height * config.scale)), max(1, round(width * config.scale))
    small_image = np.asarray(Image.fromarray(image).resize((small_w, small_h), Image.BILINEAR))
    small = dataclasses.replace(config, scale=1.0, gauss_sxy=config.gauss_sxy * config.scale,
                                bilateral_sxy=config.bilateral_sxy * config.scale)
    refined = dense_crf(small_image, _resize_maps(probs, small_h, small_w), small)
    return _resize_maps(refined, height, width)


def crf_label_with_background_power(
    image: np.ndarray,
    fg_cams: np.ndarray,
    present_classes: Sequence[int],
    alpha: float,
    config: CRFConfig = CRFConfig(),
) -> np.ndarray:
    """AffinityNet label generation step: background score (1 - max_c fg)^alpha, then CRF, then argmax.

    As ``crf_with_alpha`` in psa / SEAM. A small alpha amplifies the background
    (the paper's alpha low = 2: what remains foreground is confident
    foreground); a large one weakens it (alpha high = 4: what remains
    background is confident background). The paper uses 2 and 4 because its
    CAMs sit close to 0 or 1 (psa / SEAM use larger values).

    image: uint8 RGB [H, W, 3]; fg_cams: float [C', H, W] normalised CAMs in
    [0, 1] of the present classes (the background score is clipped to [0, 1]);
    present_classes: the class id (1..C) of each row. Returns int64 [H, W]
    with values in {0} and present_classes.
    """
    fg_cams = np.asarray(fg_cams)
    if fg_cams.ndim != 3:
        raise ValueError(f"fg_cams shape {fg_cams.shape} is not allowed; pass [C', H, W]")
    ids = np.asarray(present_classes, dtype=np.int64)
    if ids.ndim != 1 or ids.size != fg_cams.shape[0]:
        raise ValueError(f"present_classes has {ids.size} ids for {fg_cams.shape[0]} CAMs; give one id per CAM")
    if (ids < 1).any():
        raise ValueError(f"present_classes {ids.tolist()} must be foreground ids >= 1 (0 is background)")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be positive")
    if ids.size == 0:
        return np.zeros(fg_cams.shape[1:], dtype=np.int64)
    background = np.power(np.clip(1.0 - fg_cams.max(axis=0, keepdims=True), 0.0, 1.0), alpha)
    scores = dense_crf(image, np.concatenate([background, fg_cams]).astype(np.float32), config)
    return np.concatenate([[0], ids])[scores.argmax(axis=0)]
