"""Every kind of bad data is one error naming the file: missing folders,
lists and files, truncated, garbage and undecodable images and masks, masks
of the wrong size or with values outside the classes, bad label files and
COCO annotations. `wsss pipeline run` refuses them (and a crop larger than
every image) before any work: exit 2, one line, nothing written."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_core.data import DataError, VOCDataset, read_image, read_mask, verify_dataset, write_synthetic_voc
from wsss_core.data.labels import read_label_file

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=4, num_val=2, size=48)


@pytest.fixture
def voc(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of a 4 + 2 image VOC-layout folder (classes.txt: 6 classes)."""
    return Path(shutil.copytree(pristine, tmp_path / "VOC2012"))


def first(voc: Path, split: str = "val") -> str:
    return (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[0]


def undecodable_png(size: tuple[int, int]) -> bytes:
    """A PNG whose header and end chunk are intact but whose pixel data is corrupt."""
    buffer = io.BytesIO()
    Image.fromarray((np.arange(size[0] * size[1]) % 5).astype(np.uint8).reshape(size[::-1]), "L").save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 8
    data[start:start + 20] = bytes(b ^ 0x5A for b in data[start:start + 20])
    return bytes(data)


def check(voc: Path, split: str = "val") -> None:
    """What the pipeline does before any work: open the split, check every file."""
    verify_dataset(VOCDataset(voc, split))


@pytest.mark.parametrize("damage, error, message", [
    (lambda v: shutil.rmtree(v / "JPEGImages"), FileNotFoundError, "VOC folder not found: {v}/JPEGImages"),
    (lambda v: (v / "ImageSets/Segmentation/val.txt").unlink(), FileNotFoundError,
     "split list not found: {v}/ImageSets/Segmentation/val.txt"),
    (lambda v: (v / "ImageSets/Segmentation/val.txt").write_text("\n"), DataError,
     "split list is empty: {v}/ImageSets/Segmentation/val.txt"),
    (lambda v: (v / f"JPEGImages/{first(v)}.jpg").unlink(), FileNotFoundError, "image not found: {v}/JPEGImages/{n}.jpg"),
    (lambda v: (v / f"SegmentationClass/{first(v)}.png").unlink(), FileNotFoundError,
     "mask not found: {v}/SegmentationClass/{n}.png"),
    (lambda v: (v / "classes.txt").write_text("cat\ndog\n"), DataError,
     "{v}/classes.txt: expected 'background' then at least one class name"),
], ids=["no-images-folder", "no-split-list", "empty-split-list", "missing-image", "missing-mask", "bad-classes"])
def test_missing_or_malformed_layout_names_the_path(voc: Path, damage, error, message) -> None:
    name = first(voc)
    damage(voc)
    with pytest.raises(error) as raised:
        check(voc)
    assert str(raised.value).startswith(message.format(v=voc, n=name))


def truncate(path: Path) -> None:
    """Cut the file's last 30 bytes, as an interrupted copy or download does."""
    path.write_bytes(path.read_bytes()[:-30])


@pytest.mark.parametrize("damage, kind, message", [
    (truncate, "jpg", "truncated image (JPEG data ends before its end marker)"),
    (lambda p: p.write_bytes(b"this is not an image" * 10), "jpg", "not a readable image"),
    (lambda p: p.write_bytes(b""), "jpg", "not a readable image"),
    (truncate, "png", "truncated mask (PNG data ends before its end marker)"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "png", "not a readable mask"),
    (lambda p: Image.new("P", (7, 5)).save(p), "png", "mask size 7x5 differs from its image"),
], ids=["truncated-jpeg", "garbage-jpeg", "empty-jpeg", "truncated-png-mask", "garbage-mask", "mask-size"])
def test_corrupt_files_are_found_before_any_work_naming_the_file(voc: Path, damage, kind, message) -> None:
    folder = "JPEGImages" if kind == "jpg" else "SegmentationClass"
    path = voc / folder / f"{first(voc)}.{kind}"
    damage(path)
    with pytest.raises(DataError) as raised:
        check(voc)
    assert str(raised.value).startswith(f"{path}: {message}")
    assert "\n" not in str(raised.value)


def test_undecodable_pixels_fail_at_load_naming_the_file(voc: Path) -> None:
    name = first(voc)
    image, mask = voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClass" / f"{name}.png"
    size = Image.open(image).size
    image.write_bytes(undecodable_png(size))
    mask.write_bytes(undecodable_png(size))
    check(voc)  # headers and end markers are intact: only a decode can tell
    with pytest.raises(DataError, match=rf"^{image}: cannot decode image \(broken data stream"):
        read_image(image)
    with pytest.raises(DataError, match=rf"^{mask}: cannot decode mask \(broken data stream"):
        read_mask(mask)
    with pytest.raises(DataError, match=rf"^{image}: cannot decode image"):
        VOCDataset(voc, "val")[0]


def test_mask_contents_outside_the_classes_name_the_mask(voc: Path) -> None:
    name = first(voc)
    mask = voc / "SegmentationClass" / f"{name}.png"
    values = read_mask(mask)
    Image.fromarray(np.full_like(values, 99, dtype=np.uint8), "L").save(mask)
    with pytest.raises(DataError, match=rf"^{mask}: mask value 99 is not a class index; allowed 0..5 and 255"):
        VOCDataset(voc, "val")[0]
    Image.fromarray(np.full((*values.shape, 3), (1, 2, 3), dtype=np.uint8), "RGB").save(mask)
    with pytest.raises(DataError, match=rf"^{mask}: colour \(1, 2, 3\) at \(0, 0\) is not in the VOC palette"):
        VOCDataset(voc, "val")[0]


@pytest.mark.parametrize("suffix, text, message", [
    (".json", "{not json", "not valid JSON"),
    (".json", '["a list"]', "expected a JSON object of image id -> list of class indices"),
    (".json", '{"x": [9]}', "class index 9 out of range; allowed 1..5"),
    (".txt", "x 1 two\n", "line 1 is 'x 1 two'; allowed: an image id, then class indices"),
    (".npy", "not numpy", "not a readable .npy file"),
    (".csv", "x,1", "unknown suffix '.csv'"),
], ids=["json-syntax", "json-shape", "json-class", "txt-field", "npy", "suffix"])
def test_bad_label_files_name_the_file(tmp_path: Path, suffix: str, text: str, message: str) -> None:
    path = tmp_path / f"labels{suffix}"
    path.write_text(text)
    with pytest.raises(DataError) as raised:
        read_label_file(path, 5)
    assert path.name in str(raised.value) and message in str(raised.value) and "\n" not in str(raised.value)


def test_an_image_missing_from_the_labels_file_is_named(voc: Path) -> None:
    (voc / "labels.json").write_text(json.dumps({"someone_else": [1]}))
    with pytest.raises(DataError, match=rf"image {first(voc)} has no entry in labels file {voc}/labels.json"):
        VOCDataset(voc, "val", label_source=voc / "labels.json")


def test_bad_coco_annotations_and_images_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from wsss_core.data import CocoDataset

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2014").mkdir()
    annotations = tmp_path / "annotations" / "instances_val2014.json"
    annotations.write_text("{broken")
    with pytest.raises(DataError, match=rf"^{annotations}: not a COCO annotation file"):
        CocoDataset(tmp_path, "val")
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 64, "width": 64}],
        "annotations": [], "categories": [{"id": 1, "name": "cat"}],
    }))
    noise = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((64, 64)).save(tmp_path / "val2014" / "a.jpg")
    truncate(tmp_path / "val2014" / "a.jpg")
    with pytest.raises(DataError, match=rf"^{tmp_path}/val2014/a.jpg: truncated image"):
        verify_dataset(CocoDataset(tmp_path, "val"))


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-W", "ignore", "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(TINY),
           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]
    for item in overrides:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_pipeline_refuses_a_truncated_val_image_before_training(voc: Path, tmp_path: Path) -> None:
    image = voc / "JPEGImages" / f"{first(voc)}.jpg"
    truncate(image)
    proc = run_cli(tmp_path, "data.kind=voc", f"data.root={voc}", "eval.workers=2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"wsss pipeline run: {image}: truncated image (JPEG data ends before its end marker)"
    assert not (tmp_path / "out").exists(), "nothing is written for a bad input"
    assert not (tmp_path / "cache").exists(), "no stage started"


def test_pipeline_refuses_a_crop_larger_than_every_image(voc: Path, tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "data.kind=voc", f"data.root={voc}", "affinity.resize_long=null", "affinity.crop_size=64")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wsss pipeline run: affinity.crop_size=64 is larger than every train image "
                                   "(longest side 48 px); allowed: an integer <= 48")
    proc = run_cli(tmp_path, "cam.crop_size=96")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wsss pipeline run: cam.crop_size=96 is larger than every train image after "
                                   "cam.resize_long (longest side 80 px); allowed: an integer <= 80")
    assert not (tmp_path / "out").exists()
