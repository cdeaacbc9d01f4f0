"""`wsss diagnose labels`' counts of confident labels against the ground truth:
ignored truth pixels are left out, unlabelled (255) pixels count as neither
right nor wrong, and a pixel labelled with the wrong class counts as wrong."""

from __future__ import annotations

import numpy as np

from wsss_core.diagnostics import label_quality


def test_confident_label_counts_by_hand() -> None:
    truth = np.array([[0, 0, 0, 1],
                      [0, 1, 1, 2],
                      [255, 255, 2, 2]])
    label = np.array([[0, 0, 255, 1],
                      [1, 1, 255, 1],
                      [0, 1, 2, 0]], dtype=np.uint8)
    valid, bg, bg_right, fg, fg_right, truth_bg, truth_fg = label_quality.confident_label_counts(label, truth)
    assert valid == 10  # the two ignored truth pixels are out, whatever their label
    assert (bg, bg_right) == (3, 2)  # (0,0), (0,1) right; (2,3) is class 2
    assert (fg, fg_right) == (5, 3)  # (0,3), (1,1), (2,2) right; (1,0) is background, (1,3) is class 2
    assert (truth_bg, truth_fg) == (4, 6)


def test_counts_add_up_over_images() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(2, 8, 8))
    label = rng.choice([0, 1, 2, 3, 255], size=(2, 8, 8)).astype(np.uint8)
    both = label_quality.confident_label_counts(label.reshape(16, 8), truth.reshape(16, 8))
    apart = sum(label_quality.confident_label_counts(label[i], truth[i]) for i in range(2))
    np.testing.assert_array_equal(both, apart)
    assert both[1] + both[3] == (label != 255).sum()
