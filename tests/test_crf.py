"""Dense CRF: output is a distribution, it snaps labels to image edges, the
background-power labelling of AffinityNet, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from wsss_core.crf import CRFConfig, crf_label_with_background_power, dense_crf

VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"))


def two_region_scene(height: int = 48, width: int = 64, edge: int = 32, seed: int = 0):
    """A dark left half and a bright right half (edge at column ``edge``), with noise.

    Returns (image uint8 [H, W, 3], truth int [H, W]: 0 left of the edge, 1 right of it).
    """
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 40, dtype=np.float64)
    image[:, edge:] = 210
    image += rng.normal(0, 6, image.shape)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, edge:] = 1
    return np.clip(image, 0, 255).astype(np.uint8), truth


def blurry_probs(height: int, width: int, edge: float) -> np.ndarray:
    """Soft [2, H, W] scores whose decision boundary sits at ``edge`` with a wide ramp."""
    columns = np.arange(width, dtype=np.float32)
    foreground = 1 / (1 + np.exp(-(columns - edge) / 4))
    foreground = np.broadcast_to(foreground, (height, width))
    return np.stack([1 - foreground, foreground]).astype(np.float32)


def test_default_config_is_the_reference_setting():
    assert dataclasses.astuple(CRFConfig())[:6] == (3, 3, 80, 13, 10, 10)


def test_output_is_a_distribution_per_pixel():
    image, _ = two_region_scene()
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=image.shape[:2]).transpose(2, 0, 1).astype(np.float32)
    out = dense_crf(image, probs)
    assert out.shape == probs.shape and out.dtype == np.float32
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)


def test_crf_moves_the_label_boundary_onto_the_image_edge():
    image, truth = two_region_scene(edge=32)
    probs = blurry_probs(*truth.shape, edge=38)  # boundary 6 px off the real edge
    before = (probs.argmax(axis=0) == truth).mean()
    after = (dense_crf(image, probs).argmax(axis=0) == truth).mean()
    assert before < 0.9
    assert after > 0.99


def test_negligible_pairwise_terms_leave_the_unaries_in_charge():
    image, truth = two_region_scene(edge=32)
    probs = blurry_probs(*truth.shape, edge=38.5)  # no ties for argmax
    weak = CRFConfig(gauss_compat=1e-3, bilateral_compat=1e-3, iterations=1)
    unary_only = dense_crf(image, probs, weak).argmax(axis=0)
    assert np.array_equal(unary_only, probs.argmax(axis=0))  # with no pairwise pull, the unaries decide


def test_background_power_labels_follow_alpha():
    image, truth = two_region_scene(edge=32)
    cam = np.where(truth == 1, 0.6, 0.15).astype(np.float32)[None]  # one foreground class, id 7
    amplified = crf_label_with_background_power(image, cam, [7], alpha=0.5)  # bg (0.4)^0.5 = 0.63 > 0.6
    weakened = crf_label_with_background_power(image, cam, [7], alpha=4)  # bg (0.4)^4 = 0.03 < 0.6
    assert set(np.unique(weakened)) == {0, 7}
    assert (weakened == np.where(truth == 1, 7, 0)).mean() > 0.99
    assert (amplified == 7).sum() < (weakened == 7).sum()


def test_background_power_alpha_low_keeps_less_foreground_than_alpha_high():
    image, truth = two_region_scene(edge=32)
    cam = (blurry_probs(*truth.shape, edge=32)[1] * 0.8)[None]
    low = crf_label_with_background_power(image, cam, [3], alpha=2)  # the paper's alpha low
    high = crf_label_with_background_power(image, cam, [3], alpha=4)  # the paper's alpha high
    assert (low == 3).sum() <= (high == 3).sum()
    assert ((low == 3) & (high == 0)).sum() == 0  # confident foreground is foreground at both


@pytest.mark.parametrize(
    ("image", "probs", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), np.full((2, 8, 8), 0.5, np.float32), "image dtype float32"),
        (np.zeros((8, 8), np.uint8), np.full((2, 8, 8), 0.5, np.float32), r"image shape \(8, 8\)"),
        (np.zeros((8, 8, 4), np.uint8), np.full((2, 8, 8), 0.5, np.float32), r"image shape \(8, 8, 4\)"),
        (np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 9), 0.5, np.float32), r"probs spatial size \(8, 9\)"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.5, np.float32), r"probs shape \(8, 8\)"),
        (np.zeros((8, 8, 3), np.uint8), np.ones((2, 8, 8), np.int64), "probs dtype int64"),
        (np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_dense_crf_rejects_bad_input_with_one_line_message(image, probs, message):
    with pytest.raises(ValueError, match=message) as error:
        dense_crf(image, probs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("field", ["gauss_sxy", "bilateral_srgb", "iterations", "unary_clip"])
def test_config_rejects_non_positive_values(field):
    with pytest.raises(ValueError, match=f"CRFConfig.{field}=0 must be a positive"):
        CRFConfig(**{field: 0})


def test_config_rejects_fractional_iterations():
    with pytest.raises(ValueError, match="iterations=2.5 must be a positive int"):
        CRFConfig(iterations=2.5)


def test_background_power_rejects_mismatched_ids():
    image, _ = two_region_scene()
    cams = np.zeros((2, *image.shape[:2]), np.float32)
    with pytest.raises(ValueError, match="present_classes has 1 ids for 2 CAMs"):
        crf_label_with_background_power(image, cams, [1], alpha=2)
    with pytest.raises(ValueError, match="foreground ids >= 1"):
        crf_label_with_background_power(image, cams, [0, 1], alpha=2)


def test_dense_crf_on_a_real_voc_photograph():
    root = VOC_MINI / "VOC2012"
    if not root.is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_MINI} (set WSSS_VOC_MINI)")
    from PIL import Image

    name = sorted((root / "SegmentationClassAug").glob("*.png"))[0].stem
    image = np.array(Image.open(root / "JPEGImages" / f"{name}.jpg").convert("RGB"))
    mask = np.array(Image.open(root / "SegmentationClassAug" / f"{name}.png"))
    labels = [0, *sorted(set(np.unique(mask)) - {0, 255})]
    one_hot = np.stack([(mask == c) for c in labels]).astype(np.float32)
    probs = 0.4 * one_hot + 0.6 / len(labels)  # correct but unsure everywhere
    out = dense_crf(image, probs)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    valid = mask != 255
    predicted = np.asarray(labels)[out.argmax(axis=0)]
    assert (predicted[valid] == mask[valid]).mean() > 0.9


def test_reduced_size_crf_keeps_the_edge_and_the_output_size():
    image, truth = two_region_scene(height=96, width=128, edge=64)
    probs = blurry_probs(*truth.shape, edge=76)  # boundary 12 px off the real edge
    out = dense_crf(image, probs, CRFConfig(scale=0.5))
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-4)
    assert (probs.argmax(axis=0) == truth).mean() < 0.9
    assert (out.argmax(axis=0) == truth).mean() > 0.98
    assert CRFConfig().scale == 1.0  # full size is the reference default


def test_config_rejects_scale_above_one():
    with pytest.raises(ValueError, match=r"CRFConfig.scale=2 must be in \(0, 1\]"):
        CRFConfig(scale=2)
