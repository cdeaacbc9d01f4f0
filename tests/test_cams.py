"""Softmax CAMs (Eq. 1), labels with background, normalisation and the pseudo-label rule."""

import pytest
import torch

from wsss_core.cams import (
    cam_pseudo_label,
    image_labels_with_background,
    normalize_cams,
    softmax_cams,
)


def test_softmax_cams_are_pixelwise_distributions_and_label_conditioning_zeroes_absent():
    logits = torch.randn(2, 4, 3, 3)
    probs = softmax_cams(logits)
    assert torch.allclose(probs.sum(1), torch.ones(2, 3, 3))
    labels = torch.tensor([[1.0, 0, 1, 0], [1, 1, 1, 1]])
    conditioned = softmax_cams(logits, labels)
    assert torch.all(conditioned[0, [1, 3]] == 0)
    assert torch.allclose(conditioned.sum(1), torch.ones(2, 3, 3))
    assert torch.allclose(conditioned[1], probs[1])


def test_background_label_is_always_present():
    out = image_labels_with_background(torch.tensor([[0.0, 1, 0], [0, 0, 0]]))
    assert torch.equal(out, torch.tensor([[1.0, 0, 1, 0], [1, 0, 0, 0]]))


def test_normalize_cams_divides_each_map_by_its_max():
    cams = torch.tensor([[[0.1, 0.2]], [[0.5, 0.25]]])
    assert torch.allclose(normalize_cams(cams), torch.tensor([[[0.5, 1.0]], [[1.0, 0.5]]]), atol=1e-4)


def _fg_cams():
    cams = torch.zeros(3, 1, 4)  # C = 3 foreground maps over 4 pixels
    cams[0, 0] = torch.tensor([0.8, 0.4, 0.05, 0.0])  # label 1
    cams[1, 0] = torch.tensor([0.0, 0.1, 0.3, 0.02])  # label 2 (peak 0.3)
    cams[2, 0] = torch.tensor([9.0, 9.0, 9.0, 9.0])  # label 3: strong but absent
    return cams


def test_pseudo_label_background_from_one_minus_sum():
    label = cam_pseudo_label(_fg_cams(), present=[1, 2], bg="one_minus_sum")
    # normalised: c1 = [1, .5, .0625, 0], c2 = [0, .33, 1, .067]; bg = 1 - sum = [0, .17, 0, .93]
    assert label.tolist() == [[1, 1, 2, 0]]
    assert label.dtype == torch.int64


def test_pseudo_label_background_from_threshold():
    label = cam_pseudo_label(_fg_cams(), present=[1, 2], bg="threshold", bg_threshold=0.6)
    assert label.tolist() == [[1, 0, 2, 0]]


def test_absent_classes_never_appear():
    for bg in ("one_minus_sum", "threshold"):
        assert 3 not in cam_pseudo_label(_fg_cams(), present=[1, 2], bg=bg).unique().tolist()
    assert cam_pseudo_label(_fg_cams(), present=[]).unique().tolist() == [0]


def test_pseudo_label_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"outside 1\.\.3"):
        cam_pseudo_label(_fg_cams(), present=[0, 2])
    with pytest.raises(ValueError, match="bg='max'"):
        cam_pseudo_label(_fg_cams(), present=[1], bg="max")
