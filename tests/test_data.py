"""VOC-layout and COCO loaders, labels files and build_dataset."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_core.data import (
    VOC_CLASSES,
    CocoDataset,
    DataConfig,
    DataError,
    VOCDataset,
    build_dataset,
    read_mask,
    voc_palette,
    write_synthetic_voc,
)
from wsss_core.data.labels import lookup_labels, read_label_file

VOC_MINI = Path(
    os.environ.get("WSSS_VOC_MINI") or Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"
)
needs_voc_mini = pytest.mark.skipif(not VOC_MINI.is_dir(), reason=f"real VOC sample not found at {VOC_MINI}")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_voc(tmp_path_factory.mktemp("synth"), seed=1, num_train=5, num_val=3, size=64)


@pytest.fixture
def voc_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the synthetic folder, inside VOCdevkit/ like a real download."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(synth_root, root)
    return root


def _one_line(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message


# ---------------------------------------------------------------- VOC layout


def test_voc_loader_on_synthetic_folder(synth_root: Path) -> None:
    train, val = VOCDataset(synth_root, "train"), VOCDataset(synth_root, "val")
    assert (len(train), len(val)) == (5, 3)
    assert train.num_classes == 6 and train.class_names[0] == "background"
    sample = train[0]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (64, 64, 3)
    assert sample.mask.dtype == np.int64 and sample.mask.shape == (64, 64)
    assert sample.labels.dtype == np.float32 and sample.labels.shape == (5,)
    present = set(np.unique(sample.mask)) - {0, 255}
    assert set(np.flatnonzero(sample.labels) + 1) == present
    assert sample.name == "train_00000"


@pytest.mark.parametrize("level", ["VOC2012", "VOCdevkit", "parent"])
def test_root_may_be_voc2012_or_a_parent(voc_copy: Path, level: str) -> None:
    root = {"VOC2012": voc_copy, "VOCdevkit": voc_copy.parent, "parent": voc_copy.parent.parent}[level]
    assert VOCDataset(root, "val").root == voc_copy


def test_missing_root_folder_split_image_and_mask_are_named(voc_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(tmp_path / "nowhere", "train")
    _one_line(error, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "test")
    _one_line(error, voc_copy / "ImageSets" / "Segmentation" / "test.txt")
    (voc_copy / "SegmentationClass" / "train_00002.png").unlink()
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "train")
    _one_line(error, voc_copy / "SegmentationClass" / "train_00002.png")
    (voc_copy / "JPEGImages" / "train_00001.jpg").unlink()
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "train")
    _one_line(error, voc_copy / "JPEGImages" / "train_00001.jpg")
    shutil.rmtree(voc_copy / "JPEGImages")
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "train")
    _one_line(error, voc_copy / "JPEGImages")


def test_mask_value_outside_classes_is_rejected(voc_copy: Path) -> None:
    path = voc_copy / "SegmentationClass" / "val_00000.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 9
    Image.fromarray(mask, mode="L").save(path)
    with pytest.raises(ValueError) as error:
        VOCDataset(voc_copy, "val")[0]
    _one_line(error, path)
    assert "value 9" in str(error.value)


def test_rgb_masks_decode_through_the_voc_palette(synth_root: Path, tmp_path: Path) -> None:
    indices = read_mask(synth_root / "SegmentationClass" / "train_00000.png")
    Image.fromarray(voc_palette()[indices]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), indices)
    Image.fromarray(np.full((4, 4, 3), 7, dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="not in the VOC palette"):
        read_mask(tmp_path / "bad.png")


# ---------------------------------------------------------------- labels files


def _labels_by_name(dataset: VOCDataset) -> dict[str, np.ndarray]:
    return {dataset.names[i]: dataset[i].labels for i in range(len(dataset))}


@pytest.mark.parametrize("fmt", ["json", "tsv", "npy"])
def test_labels_file_formats_match_mask_labels(synth_root: Path, tmp_path: Path, fmt: str) -> None:
    from_masks = _labels_by_name(VOCDataset(synth_root, "train"))
    indices = {name: [int(c) + 1 for c in np.flatnonzero(v)] for name, v in from_masks.items()}
    if fmt == "json":
        path = tmp_path / "labels.json"
        path.write_text(json.dumps(indices))
    elif fmt == "tsv":
        path = tmp_path / "labels.tsv"
        path.write_text("".join("\t".join([n, *map(str, c)]) + "\n" for n, c in indices.items()))
    else:
        path = tmp_path / "cls_labels.npy"
        np.save(path, from_masks)  # psa / SEAM format: {id: float vector [C]}
    from_file = _labels_by_name(VOCDataset(synth_root, "train", label_source=path))
    assert from_file.keys() == from_masks.keys()
    for name in from_masks:
        np.testing.assert_array_equal(from_file[name], from_masks[name])


def test_cls_labels_npy_with_irn_integer_keys(tmp_path: Path) -> None:
    path = tmp_path / "cls_labels.npy"
    vector = np.eye(20, dtype=np.float32)[14]
    np.save(path, {2007000032: vector})  # IRN: int of the id without "_"
    table = read_label_file(path, 20)
    np.testing.assert_array_equal(lookup_labels(table, "2007_000032", path), vector)
    with pytest.raises(ValueError, match="has 20 entries; expected 5"):
        read_label_file(path, 5)


def test_labels_file_errors_are_one_line(synth_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"train_00000": [1]}))
    with pytest.raises(DataError, match="train_00001 has no entry"):
        VOCDataset(synth_root, "train", label_source=path)
    path.write_text(json.dumps({"train_00000": [6]}))
    with pytest.raises(ValueError, match="class index 6 out of range; allowed 1..5"):
        VOCDataset(synth_root, "train", label_source=path)
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(synth_root, "train", label_source=tmp_path / "absent.json")
    _one_line(error, tmp_path / "absent.json")


def test_synthetic_labels_json_is_a_valid_labels_file(synth_root: Path) -> None:
    dataset = VOCDataset(synth_root, "val", label_source=synth_root / "labels.json")
    from_masks = _labels_by_name(VOCDataset(synth_root, "val"))
    for name, labels in _labels_by_name(dataset).items():
        np.testing.assert_array_equal(labels, from_masks[name])


# ---------------------------------------------------------------- SBD train_aug


def test_train_aug_reads_augmented_masks(voc_copy: Path) -> None:
    aug = voc_copy / "SegmentationClassAug"
    shutil.copytree(voc_copy / "SegmentationClass", aug)
    for path in (voc_copy / "SegmentationClass").glob("train_*.png"):
        path.unlink()  # official masks exist for val only, as in VOC + SBD
    lists = voc_copy / "ImageSets" / "Segmentation"
    names = lists.joinpath("train.txt").read_text().split() + lists.joinpath("val.txt").read_text().split()[:1]
    lists.joinpath("train_aug.txt").write_text("\n".join(names) + "\n")
    dataset = VOCDataset(voc_copy, "train_aug")
    assert len(dataset) == 6 and dataset.mask_root == aug
    assert all(dataset[i].mask is not None for i in range(len(dataset)))
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "train_aug", mask_dir="SegmentationClass")
    _one_line(error, voc_copy / "SegmentationClass" / "train_00000.png")
    config = DataConfig(kind="voc", root=str(voc_copy.parent.parent), train_split="train_aug")
    assert build_dataset(config, "train").names == names


def test_labels_file_without_masks_gives_mask_none(voc_copy: Path) -> None:
    shutil.rmtree(voc_copy / "SegmentationClass")
    dataset = VOCDataset(voc_copy, "train", label_source=voc_copy / "labels.json")
    assert dataset[0].mask is None and dataset[0].labels.sum() >= 1
    with pytest.raises(FileNotFoundError) as error:
        VOCDataset(voc_copy, "train")
    _one_line(error, voc_copy / "SegmentationClass")


# ---------------------------------------------------------------- real VOC sample


@needs_voc_mini
def test_voc_mini_counts_labels_and_palette() -> None:
    train, val = VOCDataset(VOC_MINI, "train"), VOCDataset(VOC_MINI, "val")
    assert (len(train), len(val)) == (150, 50)
    assert train.class_names == VOC_CLASSES and train.num_classes == 21
    assert train.mask_root.name == "SegmentationClassAug"
    seen = np.zeros(20)
    for dataset in (train, val):
        for index in range(0, len(dataset), 10):
            sample = dataset[index]
            assert sample.mask.shape == sample.image.shape[:2]
            values = set(np.unique(sample.mask).tolist())
            assert values <= set(range(21)) | {255}
            assert sample.labels.sum() >= 1
            np.testing.assert_array_equal(np.flatnonzero(sample.labels) + 1, sorted(values - {0, 255}))
            seen += sample.labels
    assert (seen > 0).sum() >= 5  # several classes, decoded as indices, not colours


@needs_voc_mini
def test_voc_mini_palette_png_equals_its_rgb_rendering(tmp_path: Path) -> None:
    val = VOCDataset(VOC_MINI, "val")
    path = val.mask_path(val.names[0])
    indices = read_mask(path)
    with Image.open(path) as image:
        image.convert("RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), indices)


# ---------------------------------------------------------------- COCO


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """Three images 40x30; categories with COCO-style gapped ids 1, 18, 90."""
    from pycocotools import mask as mask_utils

    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    images = []
    for image_id in (1, 2, 3):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(np.full((30, 40), 90 * image_id % 255, dtype=np.uint8)).save(tmp_path / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "height": 30, "width": 40})
    crowd = np.zeros((30, 40), dtype=np.uint8, order="F")
    crowd[25:, 30:] = 1
    rle = mask_utils.encode(crowd)
    rle["counts"] = rle["counts"].decode()

    def box(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    annotations = [
        {"id": 1, "image_id": 1, "category_id": 18, "segmentation": box(0, 0, 30, 20), "area": 600.0,
         "bbox": [0, 0, 30, 20], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 90, "segmentation": box(5, 5, 12, 12), "area": 49.0,
         "bbox": [5, 5, 7, 7], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "segmentation": rle, "area": 50.0,
         "bbox": [30, 25, 10, 5], "iscrowd": 1},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2
def test_coco_masks_labels_and_overlap_rule(coco_root: Path) -> None:
    dataset = CocoDataset(coco_root, "val", 2017)
    assert dataset.class_names == ("background", "person", "dog", "toothbrush")
    assert len(dataset) == 3 and dataset.num_classes == 4
    first = dataset[0]
    assert first.image.shape == (30, 40, 3) and first.mask.shape == (30, 40)
    np.testing.assert_array_equal(first.labels, [0, 1, 1])
    assert first.mask[8, 8] == 3  # the small toothbrush painted over the large dog
    assert first.mask[15, 20] == 2 and first.mask[28, 5] == 0
    second = dataset[1]
    np.testing.assert_array_equal(second.labels, [1, 0, 0])
    assert second.mask[27, 35] == 1  # crowd region keeps its class by default
    assert dataset[2].labels.sum() == 0
    assert CocoDataset(coco_root, "val", 2017, crowd="void")[1].mask[27, 35] == 255
    assert len(CocoDataset(coco_root, "val", 2017, drop_unlabelled=True)) == 2


def test_coco_errors_name_the_missing_path(coco_root: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        CocoDataset(coco_root, "train", 2017)
    _one_line(error, coco_root / "annotations" / "instances_train2017.json")
    (coco_root / "val2017" / "000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError) as error:
        CocoDataset(coco_root, "val", 2017)
    _one_line(error, coco_root / "val2017" / "000000000002.jpg")
    with pytest.raises(ValueError, match="crowd='skip' is invalid"):
        CocoDataset(coco_root, "val", 2017, crowd="skip")


def test_build_dataset_coco(coco_root: Path) -> None:
    dataset = build_dataset(DataConfig(kind="coco", root=str(coco_root), year=2017), "val")
    assert isinstance(dataset, CocoDataset) and len(dataset) == 3


# ---------------------------------------------------------------- DataConfig / build_dataset


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "cityscapes"}, "data kind='cityscapes' is invalid; allowed: synthetic, voc, coco"),
        ({"kind": "voc"}, "data root is required for kind='voc'"),
        ({"kind": "coco", "root": "x", "year": 2015}, "data year=2015 is invalid; allowed: 2014, 2017"),
        ({"synth_size": 10}, "synthetic size=10 is invalid"),
        ({"train_split": ""}, "data train_split='' is invalid"),
    ],
)
def test_data_config_rejects_bad_values_in_one_line(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        DataConfig(**fields)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_synthetic_default_is_generated_once_into_a_content_addressed_cache(tmp_path: Path) -> None:
    config = DataConfig(synth_num_train=3, synth_num_val=2, synth_size=48)
    train = build_dataset(config, "train", cache_dir=tmp_path)
    assert isinstance(train, VOCDataset) and len(train) == 3
    assert len(build_dataset(config, "val", cache_dir=tmp_path)) == 2
    assert train.root.parent.parent == tmp_path / "synthetic"
    stamp = (train.root / "labels.json").stat().st_mtime_ns
    assert build_dataset(config, "train", cache_dir=tmp_path).root == train.root
    assert (train.root / "labels.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    other = build_dataset(DataConfig(synth_num_train=3, synth_num_val=2, synth_size=48, synth_seed=1), "train",
                          cache_dir=tmp_path)
    assert other.root != train.root
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == sorted(
        [train.root.parent.name, other.root.parent.name]
    )  # no staging folders left behind


def test_build_dataset_synthetic_with_root_uses_the_voc_loader(synth_root: Path) -> None:
    dataset = build_dataset(DataConfig(root=str(synth_root.parent)), "val")
    assert isinstance(dataset, VOCDataset) and len(dataset) == 3
