"""Area mIoU and contour F-score (paper Sec. 4.1): hand-made cases, accumulation,
merging, and equality with the authors' per-class, per-image evaluation."""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from bench import metrics as bench
from wsss_core.metrics import ContourFScore, MeanIoU, PointingGame, boundary_radius, class_boundaries

VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"))


def stripe(height: int, width: int, start: int, label: int = 1) -> np.ndarray:
    """Label map [H, W]: ``label`` on columns >= start, background elsewhere."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[:, start:] = label
    return labels


def square(height: int, width: int, top: int, left: int, size: int, label: int = 1) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[top : top + size, left : left + size] = label
    return labels


# ---------------------------------------------------------------- MeanIoU


def test_miou_perfect_prediction_is_one():
    gt = np.array([[0, 1, 2], [2, 1, 0]])
    metric = MeanIoU(3)
    metric.update(gt, gt)
    result = metric.compute()
    assert result["mean"] == 1.0
    assert result["per_class"] == [1.0, 1.0, 1.0]


def test_miou_disjoint_prediction_is_zero_and_absent_class_is_nan():
    metric = MeanIoU(3)
    metric.update(np.full((4, 4), 2), np.full((4, 4), 1))
    result = metric.compute()
    assert np.isnan(result["per_class"][0])  # absent from pred and gt everywhere: excluded
    assert result["per_class"][1:] == [0.0, 0.0]
    assert result["mean"] == 0.0


def test_miou_hand_computed_partial_overlap():
    metric = MeanIoU(4)
    metric.update(np.array([[0, 1, 1, 1]]), np.array([[0, 0, 1, 1]]))
    result = metric.compute()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; classes 2, 3 absent -> NaN, not averaged
    assert result["per_class"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert np.isnan(result["per_class"][2]) and np.isnan(result["per_class"][3])
    assert result["mean"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)


def test_miou_ignore_index_pixels_are_not_counted():
    gt = np.array([[0, 1, 255, 255]])
    pred = np.array([[0, 1, 1, 7]])  # anything may be predicted on void, even an unknown id
    metric = MeanIoU(2)
    metric.update(pred, gt)
    assert metric.confusion.sum() == 2
    assert metric.compute()["mean"] == 1.0


def test_miou_accumulates_the_confusion_matrix_over_updates():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(3)]
    gts = [rng.integers(0, 5, (6, 7)) for _ in range(3)]
    incremental, at_once = MeanIoU(5), MeanIoU(5)
    for pred, gt in zip(preds, gts):
        incremental.update(pred, gt)
    at_once.update(np.hstack(preds), np.hstack(gts))
    assert np.array_equal(incremental.confusion, at_once.confusion)
    per_image = []
    for pred, gt in zip(preds, gts):
        single = MeanIoU(5)
        single.update(pred, gt)
        per_image.append(single.compute()["mean"])
    assert incremental.compute()["mean"] != pytest.approx(np.mean(per_image))  # dataset-level, not per image


def test_miou_merge_of_pickled_parts_equals_single_pass():
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 4, (5, 5)), rng.integers(0, 4, (5, 5))) for _ in range(6)]
    whole, part_a, part_b = MeanIoU(4), MeanIoU(4), MeanIoU(4)
    for i, (pred, gt) in enumerate(pairs):
        whole.update(pred, gt)
        (part_a if i % 2 else part_b).update(pred, gt)
    merged = pickle.loads(pickle.dumps(part_a))
    merged.merge(pickle.loads(pickle.dumps(part_b)))
    assert np.array_equal(merged.confusion, whole.confusion)
    assert merged.compute() == whole.compute()


def test_miou_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    metric = MeanIoU(3)
    metric.update(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]))
    assert metric.confusion[1, 2] == 1


@pytest.mark.skipif(not importlib.util.find_spec("torch") or not __import__("torch").cuda.is_available(),
                    reason="needs CUDA")
def test_metrics_accept_cuda_tensors():
    import torch

    gt = torch.from_numpy(square(40, 40, 10, 10, 15)).cuda()
    miou, contour = MeanIoU(2), ContourFScore(2)
    miou.update(gt, gt)
    contour.update(gt, gt)
    assert miou.compute()["mean"] == 1.0 and contour.compute()["mean"] == 1.0


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((2, 3), int), np.zeros((3, 2), int), "pred shape"),
        (np.zeros((2, 2), float), np.zeros((2, 2), int), "dtype float64"),
        (np.zeros(4, int), np.zeros(4, int), "label map"),
        (np.full((2, 2), 3), np.zeros((2, 2), int), "pred contains class id 3"),
        (np.zeros((2, 2), int), np.full((2, 2), -1), "gt contains class id -1"),
    ],
)
def test_miou_rejects_bad_input_with_one_line_message(pred, gt, message):
    with pytest.raises(ValueError, match=message) as error:
        MeanIoU(3).update(pred, gt)
    assert "\n" not in str(error.value)


def test_miou_rejects_merging_different_settings_and_empty_compute():
    with pytest.raises(ValueError, match="cannot merge"):
        MeanIoU(3).merge(MeanIoU(4))
    with pytest.raises(ValueError, match="at least one update"):
        MeanIoU(3).compute()
    with pytest.raises(ValueError, match="num_classes=1"):
        MeanIoU(1)


# ---------------------------------------------------------- ContourFScore


def test_boundary_radius_follows_the_image_diagonal():
    assert boundary_radius(100, 100, 0.008) == 2  # ceil(0.008 * 141.4)
    assert boundary_radius(375, 500, 0.008) == 5  # ceil(0.008 * 625)
    assert boundary_radius(375, 500, 3) == 3  # >= 1: pixels


def test_class_boundaries_match_seg2bmap_for_every_class():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (9, 11))
    labels[3, 4] = 255
    classes, indices = class_boundaries(labels)
    for c in (0, 1, 2, 3, 255):
        expected = np.flatnonzero(bench.seg2bmap(labels == c))
        assert np.array_equal(np.unique(indices[classes == c]), expected)


def test_contour_f_perfect_prediction_is_one():
    gt = square(60, 80, 10, 20, 30, label=1) + square(60, 80, 45, 5, 10, label=2)
    metric = ContourFScore(3)
    metric.update(gt, gt)
    result = metric.compute()
    assert result["mean"] == 1.0
    assert result["per_class"][1:] == [1.0, 1.0]
    assert np.isnan(result["per_class"][0])  # background is not scored


def test_contour_f_class_without_any_boundary_scores_one_and_one_sided_scores_zero():
    gt = square(50, 50, 5, 5, 20, label=1) + square(50, 50, 30, 30, 10, label=3)
    pred = square(50, 50, 5, 5, 20, label=1) + square(50, 50, 30, 5, 10, label=2)
    metric = ContourFScore(5)
    metric.update(pred, gt)
    per_class = metric.compute()["per_class"]
    assert per_class[1] == 1.0  # perfect
    assert per_class[2] == 0.0  # predicted only: precision 0
    assert per_class[3] == 0.0  # ground truth only: recall 0
    assert per_class[4] == 1.0  # neither: 1, as DAVIS
    assert metric.compute()["mean"] == pytest.approx(0.5)


def test_contour_f_skip_rule_leaves_only_classes_absent_everywhere_out_of_the_mean():
    gt = square(50, 50, 5, 5, 20, label=1) + square(50, 50, 30, 30, 10, label=3)
    pred = square(50, 50, 5, 5, 20, label=1) + square(50, 50, 30, 5, 10, label=2)
    metric = ContourFScore(5)
    metric.update(pred, gt)
    skipped = metric.compute(absent="skip")
    assert skipped["per_class"][1:4] == [1.0, 0.0, 0.0]  # a predicted-only class still scores 0
    assert np.isnan(skipped["per_class"][4]) and np.isnan(skipped["precision"][4])
    assert skipped["mean"] == pytest.approx(1 / 3)  # classes 1-3; "one" gives 0.5 (above)
    assert metric.compute(absent="one")["mean"] == pytest.approx(0.5)


def test_contour_f_skip_rule_with_no_class_anywhere_is_nan_and_bad_rule_is_named():
    metric = ContourFScore(3)
    metric.update(np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8))
    assert np.isnan(metric.compute(absent="skip")["mean"])
    with pytest.raises(ValueError, match=r"^absent='zero' is invalid; allowed: one, skip$"):
        metric.compute(absent="zero")


def test_contour_f_whole_image_class_has_no_boundary():
    metric = ContourFScore(2)
    metric.update(np.ones((20, 20), np.uint8), np.ones((20, 20), np.uint8))
    assert metric.pred_total[1] == metric.gt_total[1] == 0
    assert metric.compute()["mean"] == 1.0


@pytest.mark.parametrize(("shift", "expected"), [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0), (10, 0.0)])
def test_contour_f_shift_is_matched_only_within_the_tolerance(shift, expected):
    # 100 x 100: radius ceil(0.008 * 141.4) = 2; a straight vertical edge moved by `shift` columns
    metric = ContourFScore(2)
    metric.update(stripe(100, 100, 50 + shift), stripe(100, 100, 50))
    assert metric.compute()["per_class"][1] == expected


def test_contour_f_bound_th_in_pixels():
    metric = ContourFScore(2, bound_th=3)
    metric.update(stripe(100, 100, 53), stripe(100, 100, 50))
    assert metric.compute()["mean"] == 1.0


def test_contour_f_void_counts_as_background():
    gt = stripe(100, 100, 50)
    gt[:, 50:54] = 255  # void band: the object starts at column 54
    pred = stripe(100, 100, 50)
    with_void, as_background = ContourFScore(2), ContourFScore(2)
    with_void.update(pred, gt)
    as_background.update(pred, np.where(gt == 255, 0, gt))
    np.testing.assert_equal(with_void.compute(), as_background.compute())  # NaN == NaN here
    # edges 4 columns apart, beyond the radius of 2: not matched (void is no free pass)
    assert with_void.compute()["mean"] == 0.0


def test_contour_f_accumulates_matches_over_images_not_per_image_scores():
    big_gt = square(100, 100, 10, 10, 80)  # long boundary, predicted perfectly
    small_gt = square(100, 100, 40, 40, 10)  # short boundary, missed entirely
    empty = np.zeros((100, 100), np.uint8)
    metric = ContourFScore(2)
    metric.update(big_gt, big_gt)
    metric.update(empty, small_gt)
    n_big, n_small = np.flatnonzero(bench.seg2bmap(big_gt == 1)).size, np.flatnonzero(bench.seg2bmap(small_gt == 1)).size
    recall = n_big / (n_big + n_small)
    result = metric.compute()
    assert result["precision"][1] == 1.0
    assert result["recall"][1] == pytest.approx(recall)
    assert result["per_class"][1] == pytest.approx(2 * recall / (1 + recall))
    assert result["per_class"][1] > 0.8  # the mean of per-image F would be (1 + 0) / 2


def _random_blob_pair(rng: np.random.Generator, height: int, width: int, num_classes: int):
    gt = rng.integers(0, num_classes, (max(1, height // 6), max(1, width // 6)))
    gt = np.kron(gt, np.ones((6, 6), dtype=np.int64))[:height, :width]
    gt = np.pad(gt, ((0, height - gt.shape[0]), (0, width - gt.shape[1])), mode="edge")
    gt[rng.random((height, width)) < 0.03] = 255
    pred = np.roll(gt, rng.integers(-3, 4, size=2), axis=(0, 1))
    noise = rng.random((height, width)) < 0.05
    pred[noise] = rng.integers(0, num_classes, int(noise.sum()))
    return pred, gt


@pytest.mark.parametrize("bound_th", [0.008, 0.03, 2])
def test_contour_f_equals_the_authors_per_class_per_image_evaluation(bound_th):
    rng = np.random.default_rng(3)
    shapes = [(1, 9), (9, 1), (2, 2), (13, 17), (40, 31), (64, 64), (90, 120)]
    fast, reference = ContourFScore(6, bound_th), bench.ReferenceContourF(6, bound_th)
    for height, width in shapes:
        pred, gt = _random_blob_pair(rng, height, width, 6)
        fast.update(pred, gt)
        reference.update(pred, gt)
    for index in range(4):
        pred, gt = bench.voc_like_pair(index, num_classes=6)
        fast.update(pred, gt)
        reference.update(pred, gt)
    for name in ("pred_matched", "pred_total", "gt_matched", "gt_total"):
        assert np.array_equal(getattr(fast, name)[1:], getattr(reference, name)[1:]), name
    assert fast.compute()["per_class"][1:] == reference.per_class_f()
    assert 0 < fast.compute()["mean"] < 1


def test_contour_f_merge_of_pickled_parts_equals_single_pass():
    pairs = [bench.voc_like_pair(index) for index in range(4)]
    whole, part_a, part_b = ContourFScore(21), ContourFScore(21), ContourFScore(21)
    for i, (pred, gt) in enumerate(pairs):
        whole.update(pred, gt)
        (part_a if i < 2 else part_b).update(pred, gt)
    merged = pickle.loads(pickle.dumps(part_a))
    merged.merge(pickle.loads(pickle.dumps(part_b)))
    np.testing.assert_equal(merged.compute(), whole.compute())  # NaN == NaN here
    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(ContourFScore(21, bound_th=0.01))


@pytest.mark.parametrize("bound_th", [0, -0.1, 2.5])
def test_contour_f_rejects_bad_bound_th(bound_th):
    with pytest.raises(ValueError, match=f"bound_th={bound_th}"):
        ContourFScore(21, bound_th=bound_th)


def test_contour_f_rejects_unknown_class_ids_even_in_constant_maps():
    with pytest.raises(ValueError, match="gt contains class id 9; allowed are 0..2 or 255"):
        ContourFScore(3).update(np.zeros((5, 5), int), np.full((5, 5), 9))
    labels = np.zeros((5, 5), int)
    labels[2, 2] = 7
    with pytest.raises(ValueError, match="pred contains class id 7"):
        ContourFScore(3).update(labels, np.zeros((5, 5), int))


def test_metrics_on_real_voc_masks():
    masks = VOC_MINI / "VOC2012" / "SegmentationClassAug"
    if not masks.is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_MINI} (set WSSS_VOC_MINI)")
    from PIL import Image

    fast, reference, miou = ContourFScore(21), bench.ReferenceContourF(21), MeanIoU(21)
    kernel = np.ones((7, 7), np.uint8)
    for path in sorted(masks.glob("*.png"))[:8]:
        gt = np.array(Image.open(path))
        pred = bench.cv2.dilate(np.where(gt == 255, 0, gt).astype(np.uint8), kernel)  # fattened objects
        for metric in (fast, reference, miou):
            metric.update(pred, gt)
    assert fast.compute()["per_class"][1:] == reference.per_class_f()
    assert 0.3 < fast.compute()["mean"] < 1.0
    assert 0.3 < miou.compute()["mean"] < 1.0


def test_pointing_game_counts_a_hit_where_the_cam_peaks_on_its_object() -> None:
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[2:8, 2:8] = 1
    gt[12:18, 12:18] = 2
    gt[0, :] = 255
    maps = np.zeros((2, 20, 20), dtype=np.float32)
    maps[0, 5, 5] = 1.0    # class 1 peaks on its square: hit
    maps[1, 0, 19] = 1.0   # class 2 peaks at the image border: miss
    maps[1, 15, 15] = 0.9  # ... although it is high on its object
    game = PointingGame(num_classes=4)
    game.update(maps, [1, 2], gt)
    game.update(maps[:1], [1], gt)
    result = game.compute()
    assert result["per_class"][1:3] == [1.0, 0.0]
    assert np.isnan(result["per_class"][0]) and np.isnan(result["per_class"][3])
    assert result["mean"] == 0.5


@pytest.mark.parametrize("maps, classes, message", [
    (np.zeros((2, 20, 20)), [1], r"maps must be \[1, 20, 20\]"),
    (np.zeros((1, 10, 20)), [1], r"maps must be \[1, 20, 20\]"),
    (np.zeros((1, 20, 20)), [4], r"class id 4 is not allowed; use 1..3"),
    (np.zeros((1, 20, 20)), [0], r"class id 0 is not allowed; use 1..3"),
])
def test_pointing_game_rejects_maps_that_do_not_match(maps, classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        PointingGame(num_classes=4).update(maps, classes, np.zeros((20, 20), dtype=np.uint8))


def test_pointing_game_without_a_foreground_class_is_nan_not_an_error() -> None:
    result = PointingGame(num_classes=4).compute()
    assert np.isnan(result["mean"]) and all(np.isnan(r) for r in result["per_class"])
