"""The synthetic VOC-layout generator and the `wsss data synth` command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsss_core.data.cli import main as data_cli
from wsss_core.data.synth import SYNTH_CLASS_NAMES, SYNTH_CLASSES, render_image, write_synthetic_voc
from wsss_core.data.voc import VOCDataset, read_mask
from wsss_core.diagnostics import fsl_pairs

SMALL = dict(num_train=6, num_val=3, size=64)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_voc(tmp_path_factory.mktemp("synth"), seed=3, **SMALL)


def test_equal_seeds_give_identical_bytes(synth_root: Path, tmp_path: Path) -> None:
    again = write_synthetic_voc(tmp_path / "again", seed=3, **SMALL)
    assert _digest(again) == _digest(synth_root)


def test_different_seeds_give_different_images(synth_root: Path, tmp_path: Path) -> None:
    other = _digest(write_synthetic_voc(tmp_path / "other", seed=4, **SMALL))
    ours = _digest(synth_root)
    images = [k for k in ours if k.startswith("JPEGImages")]
    assert all(ours[k] != other[k] for k in images)


def test_layout_lists_and_class_names(synth_root: Path) -> None:
    lists = synth_root / "ImageSets" / "Segmentation"
    assert len((lists / "train.txt").read_text().split()) == 6
    assert len((lists / "val.txt").read_text().split()) == 3
    assert (synth_root / "classes.txt").read_text().split() == list(SYNTH_CLASS_NAMES)
    with Image.open(synth_root / "SegmentationClass" / "train_00000.png") as mask:
        assert mask.mode == "P" and mask.size == (64, 64)
    with Image.open(synth_root / "JPEGImages" / "train_00000.jpg") as image:
        assert image.mode == "RGB" and image.size == (64, 64)


def test_masks_agree_with_labels(synth_root: Path) -> None:
    drawn = json.loads((synth_root / "labels.json").read_text())
    for split in ("train", "val"):
        dataset = VOCDataset(synth_root, split)
        for index in range(len(dataset)):
            sample = dataset[index]
            expected = np.zeros(len(SYNTH_CLASSES), dtype=np.float32)
            expected[np.array(drawn[sample.name]) - 1] = 1
            assert 1 <= len(drawn[sample.name]) <= 3
            np.testing.assert_array_equal(sample.labels, expected, err_msg=sample.name)


def test_void_band_separates_objects_from_background(synth_root: Path) -> None:
    for path in sorted((synth_root / "SegmentationClass").glob("*.png")):
        mask = read_mask(path)
        assert (mask == 255).any(), path
        objects = (mask > 0) & (mask < 255)
        touching_background = ndimage.binary_dilation(objects) & (mask == 0)
        assert not touching_background.any(), path


def test_every_class_has_a_small_discriminative_part_and_a_plain_body() -> None:
    rng = np.random.default_rng(0)
    part_pixels: dict[int, list[np.ndarray]] = {c: [] for c in range(1, len(SYNTH_CLASSES) + 1)}
    fractions: dict[int, list[float]] = {c: [] for c in part_pixels}
    for _ in range(60):
        rendered = render_image(rng, 96, max_objects=1, void_width=0)
        (c,) = rendered.classes
        obj = rendered.mask == c
        body = obj & ~ndimage.binary_dilation(rendered.part_mask, iterations=2)
        assert rendered.part_mask.any() and body.any()
        fractions[c].append(rendered.part_mask.sum() / obj.sum())
        part_pixels[c].append(rendered.image[rendered.part_mask])
        assert rendered.image[ndimage.binary_erosion(body, iterations=2)].std(axis=0).max() < 8  # plain body
    for c, spec in enumerate(SYNTH_CLASSES, start=1):
        assert fractions[c], f"class {spec.name} never drawn"
        assert 0.01 < np.mean(fractions[c]) < 0.2, spec.name  # small part, large body
        colours = np.concatenate(part_pixels[c]).astype(np.int64)
        # every part pixel is one of the class's two colours
        distance = np.min([np.abs(colours - np.array(col)).sum(1) for col in spec.part_colors], axis=0)
        assert (distance == 0).all(), spec.name
    all_part_colours = [col for spec in SYNTH_CLASSES for col in spec.part_colors]
    assert len(set(all_part_colours)) == len(all_part_colours)  # parts identify their class


def test_cli_writes_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = data_cli(["data", "synth", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "48"])
    assert code == 0
    assert len(list((tmp_path / "VOC2012" / "JPEGImages").glob("*.jpg"))) == 3
    assert "wrote 2 train + 1 val" in capsys.readouterr().out


def test_cli_rejects_bad_size_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data_cli(["data", "synth", "--out", str(tmp_path), "--size", "8"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "size=8" in error and ">= 48" in error


def test_background_meets_fsl_premise_as_real_photos_do() -> None:
    """FSL (Eqs. 9-12) pushes apart nearby pixels whose colours differ. On VOC photos nearby
    background pairs are about neutral on average (`wsss diagnose fsl-pairs`); a background
    much busier than that makes FSL split it into classes.
    Demo geometry: 112 px -> 224 -> a 28 x 28 map, sigma 3, mu 2.5."""
    totals = {kind: np.zeros(3) for kind in fsl_pairs.PAIR_TYPES}
    for index in range(12):
        rendered = render_image(np.random.default_rng([0, 1, index]), 112)
        x, mask = fsl_pairs.map_inputs(rendered.image, rendered.mask, 224, 8, "bilinear_corners")
        for kind, sums in fsl_pairs.pair_sums(x, mask, 3.0, 2.5).items():
            totals[kind] += sums
    background = totals["background"][0] / totals["background"][2]
    across = totals["different"][0] / totals["different"][2]
    assert -0.15 < background < 0.15
    assert across > background + 0.3
