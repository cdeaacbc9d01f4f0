"""Deterministic synthetic WSSS data set, written as a VOC-layout folder.

Each foreground class has a distinct body shape and a small, highly
discriminative part: a textured patch in two class-specific saturated colours.
Bodies are plain (one random muted colour per instance, shared range across
classes), so a classifier can win on the part alone while segmentation must
cover the body. Backgrounds are smooth colour noise with grain and small clutter
strokes. 1-3 objects per image, a void band (255) along every label boundary as
in VOC, palette PNG masks, train/val lists, ``classes.txt`` and ``labels.json``
(the classes drawn per image, in the labels-file format of
`wsss_core.data.labels`). Equal parameters give byte-identical folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from wsss_core.data.voc import CLASS_NAMES_FILE, write_mask

GENERATOR_VERSION = 2
BACKGROUND_CELLS = 4
"""The background's smooth colour noise is bicubic over a BACKGROUND_CELLS^2 grid of
random colours. 4 matches real photos on FSL's pair statistic (`wsss diagnose
fsl-pairs`, demo geometry against the authors' on VOC photos): nearby
background pairs are about neutral on average, as VOC's background. A finer
grid makes the background busier, and FSL then rewards breaking it into
classes (CAM grid artefacts at lambda 1)."""
IGNORE_INDEX = 255


@dataclass(frozen=True)
class SyntheticClass:
    """A foreground class: body `shape`, and a part of `texture` in colours `part_colors`."""

    name: str
    shape: str
    texture: str
    part_colors: tuple[tuple[int, int, int], tuple[int, int, int]]


SYNTH_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("disc", "disc", "stripes_h", ((230, 20, 20), (250, 250, 250))),
    SyntheticClass("box", "box", "checker", ((20, 50, 230), (250, 225, 20))),
    SyntheticClass("triangle", "triangle", "dots", ((235, 20, 200), (20, 220, 40))),
    SyntheticClass("cross", "cross", "stripes_v", ((10, 230, 230), (10, 10, 10))),
    SyntheticClass("star", "star", "stripes_d", ((250, 130, 0), (110, 0, 180))),
)
SYNTH_CLASS_NAMES: tuple[str, ...] = ("background",) + tuple(c.name for c in SYNTH_CLASSES)


@dataclass(frozen=True)
class SynthParams:
    """Generator parameters; together with GENERATOR_VERSION they determine every byte written."""

    seed: int = 0
    num_train: int = 160
    num_val: int = 48
    size: int = 112
    max_objects: int = 3
    void_width: int = 1

    def __post_init__(self) -> None:
        for field_name, low in (("num_train", 1), ("num_val", 1), ("size", 48), ("max_objects", 1), ("void_width", 0)):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"synthetic {field_name}={value!r} is invalid; allowed: an integer >= {low}")


@dataclass(frozen=True)
class SynthImage:
    """One rendered image: image uint8 [S,S,3], mask int64 [S,S] (0, 1..C, 255),
    part_mask bool [S,S] (pixels of discriminative parts), classes drawn (1..C)."""

    image: np.ndarray
    mask: np.ndarray
    part_mask: np.ndarray
    classes: tuple[int, ...]


def write_synthetic_voc(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_train: int = 160,
    num_val: int = 48,
    size: int = 112,
    max_objects: int = 3,
    void_width: int = 1,
) -> Path:
    """Write the synthetic set under ``out_dir/VOC2012`` and return that folder.

    Images ``JPEGImages/{train,val}_NNNNN.jpg`` (quality 95), masks
    ``SegmentationClass/*.png`` (VOC palette), lists
    ``ImageSets/Segmentation/{train,val}.txt``.
    """
    params = SynthParams(seed, num_train, num_val, size, max_objects, void_width)
    root = Path(out_dir) / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[int]] = {}
    for split_code, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        names = [f"{split}_{i:05d}" for i in range(count)]
        for index, name in enumerate(names):
            rng = np.random.default_rng([seed, split_code, index])
            rendered = render_image(rng, size, max_objects=max_objects, void_width=void_width)
            Image.fromarray(rendered.image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            write_mask(root / "SegmentationClass" / f"{name}.png", rendered.mask)
            labels[name] = sorted(set(rendered.classes))
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (root / CLASS_NAMES_FILE).write_text("".join(f"{n}\n" for n in SYNTH_CLASS_NAMES))
    (root / "labels.json").write_text(json.dumps(labels, indent=0, sort_keys=True))
    (root / "synthetic.json").write_text(
        json.dumps({"generator_version": GENERATOR_VERSION, **asdict(params)}, indent=2, sort_keys=True)
    )
    return root


def render_image(rng: np.random.Generator, size: int, *, max_objects: int = 3, void_width: int = 1) -> SynthImage:
    """Render one image of 1..max_objects objects on a cluttered background.

    A later object may cover at most 20% of any earlier body and none of an
    earlier part (else it is re-drawn, up to 20 tries, then dropped), so every
    object drawn stays visible and keeps its part.
    """
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.int64)
    parts = np.zeros((size, size), dtype=bool)
    bodies: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        class_index = int(rng.integers(1, len(SYNTH_CLASSES) + 1))
        spec = SYNTH_CLASSES[class_index - 1]
        for _try in range(20):
            body, part = _object_masks(rng, spec.shape, size)
            covers_little = all((body & earlier).sum() < 0.2 * earlier.sum() for earlier in bodies)
            if covers_little and not (parts & ndimage.binary_dilation(body, iterations=2)).any():
                break
        else:
            continue
        image[body] = _plain_colour(rng, int(body.sum()))
        image[part] = _texture(spec, size)[part]
        mask[body] = class_index
        parts |= part
        bodies.append(body)
        classes.append(class_index)
    if void_width > 0:
        window = 2 * void_width + 1
        boundary = ndimage.maximum_filter(mask, size=window) != ndimage.minimum_filter(mask, size=window)
        mask[boundary] = IGNORE_INDEX
    return SynthImage(image=image, mask=mask, part_mask=parts, classes=tuple(classes))


def _object_masks(rng: np.random.Generator, shape: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Body bool [S,S] of `shape` (extent 35-60% of S, random pose) and its part: a
    disc of radius ~0.12 extent inside the body, at least its radius from the border."""
    extent = size * rng.uniform(0.35, 0.6)
    centre = rng.uniform(extent / 2, size - extent / 2, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    body = _draw_polygon(_shape_polygon(shape, rng, extent, centre, angle), size)
    radius = max(2.0, 0.12 * extent)
    inside = ndimage.distance_transform_edt(body) > radius + 1
    candidates = np.argwhere(inside if inside.any() else body)
    cy, cx = candidates[rng.integers(len(candidates))]
    yy, xx = np.mgrid[:size, :size]
    part = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & body
    return body, part


def _shape_polygon(shape: str, rng: np.random.Generator, extent: float, centre: np.ndarray, angle: float) -> np.ndarray:
    """Vertices [N, 2] (x, y) of the body outline; half-extent r = extent / 2."""
    r = extent / 2
    if shape == "disc":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        aspect = rng.uniform(0.8, 1.0)
        points = np.stack([r * np.cos(t), aspect * r * np.sin(t)], axis=1)
    elif shape == "box":
        aspect = rng.uniform(0.55, 0.9)
        points = np.array([[-r, -aspect * r], [r, -aspect * r], [r, aspect * r], [-r, aspect * r]])
    elif shape == "triangle":
        t = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        points = np.stack([r * np.cos(t), r * np.sin(t)], axis=1) * 1.15
    elif shape == "cross":
        a = 0.36 * r
        points = np.array([[-a, -r], [a, -r], [a, -a], [r, -a], [r, a], [a, a],
                           [a, r], [-a, r], [-a, a], [-r, a], [-r, -a], [-a, -a]])
    elif shape == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.55)
        points = np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)
    else:
        raise ValueError(f"unknown synthetic shape {shape!r}")
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T + centre


def _draw_polygon(points: np.ndarray, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.round(2).tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _texture(spec: SyntheticClass, size: int) -> np.ndarray:
    """The class's part pattern over the whole canvas, uint8 [S,S,3] (period 4 px)."""
    yy, xx = np.mgrid[:size, :size]
    patterns = {
        "stripes_h": (yy // 2) % 2 == 0,
        "stripes_v": (xx // 2) % 2 == 0,
        "stripes_d": ((xx + yy) // 2) % 2 == 0,
        "checker": ((yy // 2) + (xx // 2)) % 2 == 0,
        "dots": ((yy % 4) < 2) & ((xx % 4) < 2),
    }
    first, second = (np.array(c, dtype=np.uint8) for c in spec.part_colors)
    return np.where(patterns[spec.texture][..., None], first, second)


def _plain_colour(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` pixels [count, 3] of one muted random colour with slight grain."""
    colour = rng.uniform(60, 200, size=3)
    grey = colour.mean()
    colour = grey + 0.6 * (colour - grey)
    return np.clip(colour + rng.normal(0, 3, size=(count, 3)), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise + grain + 6-14 small muted clutter strokes, uint8 [S,S,3]."""
    coarse = rng.uniform(40, 215, size=(BACKGROUND_CELLS, BACKGROUND_CELLS, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    canvas = Image.fromarray(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(6, 15))):
        colour = tuple(int(c) for c in rng.uniform(50, 200, size=3))
        x0, y0 = rng.uniform(0, size, size=2)
        dx, dy = rng.uniform(-size / 8, size / 8, size=2)
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x0 + dx, y0 + dy)], fill=colour, width=int(rng.integers(1, 3)))
        else:
            draw.ellipse([min(x0, x0 + dx / 3), min(y0, y0 + dy / 3), max(x0, x0 + dx / 3), max(y0, y0 + dy / 3)],
                         fill=colour)
    return np.asarray(canvas, dtype=np.uint8).copy()
