"""Per-image work done in the process pool: CRF and scoring.

Numpy only: this module and what it imports (wsss_core.crf, wsss_core.metrics)
never import torch, so pool workers start fast and hold no torch threads.
Label maps travel as uint8 [H, W] (255 = ignore).
"""
from __future__ import annotations

import numpy as np

from wsss_core.crf import CRFConfig, crf_label_with_background_power, dense_crf
from wsss_core.metrics import ContourFScore, MeanIoU

IGNORE = 255
Scores = dict[str, tuple[MeanIoU, ContourFScore]]


def score_chunk(
    items: list[tuple[dict[str, np.ndarray], np.ndarray]], num_classes: int, bound_th: float
) -> Scores:
    """items: (predictions {variant: [H,W]}, ground truth [H,W]) per image ->
    {variant: (MeanIoU, ContourFScore)} accumulated over the chunk (merge them)."""
    scores: Scores = {}
    for predictions, gt in items:
        for variant, pred in predictions.items():
            if variant not in scores:
                scores[variant] = (MeanIoU(num_classes), ContourFScore(num_classes, bound_th))
            miou, contour = scores[variant]
            miou.update(pred, gt)
            contour.update(pred, gt)
    return scores


def confident_crf_label(
    image: np.ndarray, fg_cams: np.ndarray, present: np.ndarray, alpha_low: float, alpha_high: float, crf: CRFConfig
) -> np.ndarray:
    """Stage-2 training labels (psa, with the paper's alpha 2 / 4).

    image uint8 [H,W,3]; fg_cams float [C',H,W] max-normalised CAMs of the
    present classes `present` (int [C'], values 1..C). For each alpha the
    background score is (1 - max_c cam_c)^alpha and the dense CRF labels the
    pixels. Low alpha amplifies the background, so its foreground is
    confident; high alpha weakens it, so its background is confident. Returns
    uint8 [H,W]: the low-alpha foreground, 0 where the high-alpha CRF says
    background, 255 (ignore) elsewhere.
    """
    low = crf_label_with_background_power(image, fg_cams, present, alpha_low, crf).astype(np.uint8)
    high = crf_label_with_background_power(image, fg_cams, present, alpha_high, crf)
    label = low.copy()
    label[low == 0] = IGNORE
    label[high == 0] = 0
    return label


def crf_argmax(image: np.ndarray, probs: np.ndarray, crf: CRFConfig) -> np.ndarray:
    """image uint8 [H,W,3], probs float [K,H,W] -> uint8 [H,W] argmax of the CRF marginals."""
    refined = dense_crf(image, np.ascontiguousarray(probs, dtype=np.float32), crf)
    return np.argmax(refined, axis=0).astype(np.uint8)
