"""Qualitative panels like the paper's Figs. 1 and 4:
image | CAM | pseudo-label | prediction | ground truth, side by side, as PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsss_core.data import voc_palette

COLUMNS = ("image", "CAM", "pseudo-label", "prediction", "ground truth")
TITLE_HEIGHT = 12
GAP = 2


def heatmap(cam: np.ndarray) -> np.ndarray:
    """cam float [H,W] in [0,1] -> uint8 [H,W,3], a jet-like colour ramp."""
    v = np.clip(cam, 0.0, 1.0)[..., None]
    anchors = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[0, 0, 128], [0, 200, 255], [255, 220, 0], [200, 0, 0]], dtype=np.float64)
    rgb = np.stack([np.interp(v[..., 0], anchors, colours[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def blend(image: np.ndarray, colour: np.ndarray, weight: float = 0.5) -> np.ndarray:
    return ((1 - weight) * image.astype(np.float64) + weight * colour).astype(np.uint8)


def colour_labels(label: np.ndarray) -> np.ndarray:
    """label [H,W] (0..C, 255 ignore) -> uint8 [H,W,3] in the VOC palette (ignore white)."""
    palette = voc_palette().copy()
    palette[255] = (255, 255, 255)
    return palette[np.asarray(label, dtype=np.int64).clip(0, 255)]


def overlay_panel(
    image: np.ndarray, cam: np.ndarray, pseudo_label: np.ndarray, prediction: np.ndarray, gt: np.ndarray | None
) -> np.ndarray:
    """image uint8 [H,W,3], cam float [H,W] (max over present classes), label maps
    [H,W] -> uint8 panel [H + title, 5 W + gaps, 3]."""
    height, width = image.shape[:2]
    tiles = [
        image,
        blend(image, heatmap(cam)),
        blend(image, colour_labels(pseudo_label), 0.6),
        blend(image, colour_labels(prediction), 0.6),
        np.zeros_like(image) if gt is None else blend(image, colour_labels(gt), 0.6),
    ]
    canvas = Image.new("RGB", (len(tiles) * (width + GAP) - GAP, height + TITLE_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, title) in enumerate(zip(tiles, COLUMNS)):
        x = i * (width + GAP)
        canvas.paste(Image.fromarray(tile), (x, TITLE_HEIGHT))
        draw.text((x + 2, 0), title, fill=(0, 0, 0))
    return np.asarray(canvas)


def save_panel(path: Path, panel: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(panel).save(path)
