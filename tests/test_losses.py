"""BCE (Eq. 7) and SEAM's equivariance terms."""

import pytest
import torch
import torch.nn.functional as F

from wsss_core.losses import bce, equivariant_cross_regularization, equivariant_regularization


def test_bce_matches_definition_inside_and_is_safe_at_0_and_1():
    pred = torch.tensor([0.2, 0.7, 0.9])
    target = torch.tensor([0.0, 1.0, 1.0])
    assert torch.allclose(bce(pred, target), F.binary_cross_entropy(pred, target))
    for dtype in (torch.float32, torch.float64):
        edge = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype, requires_grad=True)
        loss = bce(edge, torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype))
        loss.backward()
        assert torch.isfinite(loss) and loss > 5  # confidently wrong terms are large but finite
        assert torch.isfinite(edge.grad).all()


def test_equivariant_regularization_is_l1_on_foreground():
    a = torch.rand(2, 3, 4, 4)
    b = a.clone()
    b[:, 0] += 1.0  # background differences are ignored by default
    assert equivariant_regularization(a, b) == 0
    b[:, 1] += 0.5
    assert equivariant_regularization(a, b) == pytest.approx(0.25)
    assert equivariant_regularization(a, b, foreground_only=False) == pytest.approx((1.0 + 0.5) / 3)


def test_equivariant_cross_regularization_targets_the_other_branch_raw_cam():
    raw_1, raw_2 = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    raw_1.requires_grad_()
    refined_1 = raw_2.detach().clone().requires_grad_()
    refined_2 = raw_1.detach().clone().requires_grad_()
    plain = equivariant_cross_regularization(raw_1, refined_1, raw_2, refined_2, top_fraction=1.0, max_onehot=False)
    assert plain == 0
    refined_1.data += 0.1
    hard = equivariant_cross_regularization(raw_1, refined_1, raw_2, refined_2, top_fraction=0.2, max_onehot=False)
    assert hard.item() == pytest.approx(0.1)
    hard.backward()
    assert raw_1.grad is None  # raw CAMs are targets
    assert refined_1.grad.abs().sum() > 0


def test_max_onehot_keeps_background_and_each_pixels_top_foreground_class():
    raw = torch.tensor([[0.2, 0.7, 0.1]]).reshape(1, 3, 1, 1)
    refined = torch.tensor([[0.2, 0.7, 0.0]]).reshape(1, 3, 1, 1)  # SEAM's max_onehot leaves channel 0
    zero = equivariant_cross_regularization(raw, refined, raw, refined, top_fraction=1.0)
    assert zero == 0
