"""`wsss diagnose fsl-oracle`'s direct minimisation of L_fs (Eq. 9) over a map: it moves a
misplaced soft boundary onto the colour edge, its KL anchor holds the map, and
the blurred-truth start scores the truth and its blurred copy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from wsss_core.diagnostics import fsl_oracle as oracle
from wsss_core.fsl import feature_similarity_loss

SIZE, EDGE, START_EDGE = 16, 8, 5


def two_colours() -> torch.Tensor:
    """[1,3,16,16]: red columns 0-7, blue columns 8-15."""
    image = torch.zeros(1, 3, SIZE, SIZE)
    image[:, 0, :, :EDGE] = 1.0
    image[:, 2, :, EDGE:] = 1.0
    return image


def misplaced_map() -> torch.Tensor:
    """[1,2,16,16] soft map whose class-1 side starts at column 5 instead of the edge at 8."""
    columns = torch.arange(SIZE, dtype=torch.float32)
    p1 = torch.sigmoid((columns - START_EDGE + 0.5) / 1.5).expand(SIZE, SIZE)
    return torch.stack([1 - p1, p1])[None]


def first_class1_column(maps: torch.Tensor) -> int:
    label = oracle.label_of(maps, np.array([0, 1]), (SIZE, SIZE))
    assert (label == label[:1]).all(), "the boundary is not a vertical line"
    return int(np.flatnonzero(label[0] == 1)[0])


def test_minimising_fsl_moves_the_boundary_to_the_colour_edge():
    image, start = two_colours(), misplaced_map()
    assert first_class1_column(start) == START_EDGE
    refined = oracle.minimise_fsl(image, start, beta=0.1, steps=150, sigma=2.0, mu=2.5)
    assert first_class1_column(refined) == EDGE
    before = feature_similarity_loss(image, start, 2.0, 2.5)
    after = feature_similarity_loss(image, refined, 2.0, 2.5)
    assert after < before - 0.05


def test_a_strong_kl_anchor_keeps_the_map():
    image, start = two_colours(), misplaced_map()
    refined = oracle.minimise_fsl(image, start, beta=1000.0, steps=150, sigma=2.0, mu=2.5)
    assert first_class1_column(refined) == START_EDGE
    assert torch.allclose(refined, start, atol=0.02)


def test_class_maps_put_one_minus_max_foreground_first_and_sum_to_one():
    fg = np.zeros((2, 8, 8), dtype=np.float32)
    fg[0, :, :4] = 0.9
    fg[1, :, 4:] = 0.3
    maps = oracle.class_maps(fg, (4, 4))
    assert maps.shape == (1, 3, 4, 4)
    assert torch.allclose(maps.sum(1), torch.ones(1, 4, 4))
    assert torch.allclose(maps[0, 0, :, :2], torch.full((4, 2), 0.1 / 1.0))
    assert torch.allclose(maps[0, 0, :, 2:], torch.full((4, 2), 0.7))


def test_blurred_truth_rows_score_the_truth_and_its_blurred_copy():
    image = two_colours()
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, EDGE:] = 1
    mask[0, 0] = 255  # void counts as background
    sample = SimpleNamespace(mask=mask)

    def fsl(maps: torch.Tensor) -> float:
        return float(feature_similarity_loss(image, maps, 2.0, 2.5))

    def minimise(start: torch.Tensor, beta: float) -> torch.Tensor:
        return oracle.minimise_fsl(image, start, beta, steps=50, sigma=2.0, mu=2.5)

    energy, labels = oracle.truth_rows(sample, (SIZE, SIZE), fsl, minimise, [1.0], blur=1.5)
    assert energy["ground truth"] < energy["blurred ground truth"] < 0
    assert list(labels) == ["ground truth, map-size round trip", "blurred ground truth", "blurred, L_fs + 1 KL minimised"]
    expected = np.where(mask == 255, 0, mask)
    for label in labels.values():
        assert (label == expected).all()
