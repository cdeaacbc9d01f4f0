"""Aggregators (Eqs. 2-6) and the classification loss (Eqs. 7-8)."""

import pytest
import torch
from scipy.stats import chisquare

from wsss_core.aggregation import (
    AGGREGATORS,
    classification_loss,
    gap,
    gmp,
    importance_sample,
    sample_by_weights,
)
from wsss_core.cams import softmax_cams
from wsss_core.losses import bce


def _probs_with_distinct_values():
    a = torch.tensor([[0.05, 0.1, 0.15], [0.2, 0.0, 0.5]], dtype=torch.float64)  # one map, 2x3
    return a.reshape(1, 1, 2, 3)


def test_importance_sampling_follows_normalised_activations():
    probs = _probs_with_distinct_values()
    gen = torch.Generator().manual_seed(0)
    draws = importance_sample(probs, 20000, generator=gen)[0, 0]
    values = probs.flatten()
    counts = torch.stack([(draws == v).sum() for v in values]).double()
    assert counts[values == 0].sum() == 0  # zero activation: never sampled
    keep = values > 0
    expected = values[keep] / values.sum() * counts.sum()
    assert chisquare(counts[keep].numpy(), expected.numpy()).pvalue > 1e-3


def test_sampling_is_with_replacement_and_seeded():
    probs = softmax_cams(torch.randn(2, 3, 2, 2))
    draws = importance_sample(probs, 50, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (2, 3, 50)  # 50 draws from 4 pixels: must repeat
    again = importance_sample(probs, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)
    with pytest.raises(ValueError, match="num_samples=0"):
        importance_sample(probs, 0)


def test_gradient_flows_to_sampled_activations_only():
    probs = _probs_with_distinct_values().requires_grad_()
    draws = importance_sample(probs, 7, generator=torch.Generator().manual_seed(2))
    draws.sum().backward()
    values = probs.detach().flatten()
    counts = torch.stack([(draws.detach() == v).sum() for v in values]).double()
    assert torch.equal(probs.grad.flatten(), counts)


def test_uniform_distribution_gives_mean_and_delta_gives_max():
    gen = torch.Generator().manual_seed(3)
    probs = softmax_cams(torch.randn(2, 4, 5, 5, generator=gen))
    uniform = sample_by_weights(probs, torch.ones_like(probs), 40000, gen).mean(-1)
    assert torch.allclose(uniform, probs.mean(dim=(2, 3)), atol=5e-3)
    delta = (probs == probs.amax(dim=(2, 3), keepdim=True)).double()
    picked = sample_by_weights(probs, delta, 10, gen)
    assert torch.equal(picked, gmp(None, probs).expand_as(picked))


def test_gap_and_gmp_follow_eqs_2_to_4():
    logits = torch.randn(2, 3, 4, 4)
    probs = softmax_cams(logits)
    assert torch.allclose(gap(logits, probs)[..., 0], torch.sigmoid(logits.mean(dim=(2, 3))))
    assert torch.equal(gmp(logits, probs)[..., 0], probs.flatten(2).max(-1).values)
    assert set(AGGREGATORS) == {"gap", "gmp", "sample"}


def test_lambda_endpoints_reduce_eq_8_to_one_term():
    logits = torch.randn(2, 4, 6, 6)
    probs = softmax_cams(logits)
    labels = torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 1]])
    target = labels[:, :, None]
    only_pool = classification_loss(logits, probs, labels, lam=0.0, pooling="gmp")
    assert torch.allclose(only_pool, bce(gmp(logits, probs), target))
    only_sample = classification_loss(
        logits, probs, labels, lam=1.0, pooling="gap", num_samples=5, generator=torch.Generator().manual_seed(4)
    )
    drawn = importance_sample(probs, 5, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(only_sample, bce(drawn, target.expand_as(drawn)))
    mixed = classification_loss(
        logits, probs, labels, lam=0.25, pooling="gmp", num_samples=5, generator=torch.Generator().manual_seed(4)
    )
    drawn = importance_sample(probs, 5, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(mixed, 0.75 * only_pool + 0.25 * bce(drawn, target.expand_as(drawn)))
    with pytest.raises(ValueError, match="lam=1.5"):
        classification_loss(logits, probs, labels, lam=1.5, pooling="gap")
    with pytest.raises(ValueError, match="pooling='avg'"):
        classification_loss(logits, probs, labels, lam=0.5, pooling="avg")


def test_naive_variant_uses_per_class_sigmoid_maps():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.tensor([[1.0, 0, 1]])
    naive = classification_loss(logits, softmax_cams(logits), labels, lam=0.0, pooling="gmp", naive=True)
    expected = bce(torch.sigmoid(logits).amax(dim=(2, 3))[..., None], labels[..., None])
    assert torch.allclose(naive, expected)


def test_a_new_aggregator_is_one_function():
    def power_sample(logits, probs, *, num_samples, generator, eps=0.0):  # p_k ~ a_k^gamma, gamma = 2
        return sample_by_weights(probs, probs**2, num_samples, generator)

    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.tensor([[1.0, 1, 0], [1, 0, 1]])
    loss = classification_loss(logits, softmax_cams(logits), labels, lam=1.0, sampling=power_sample, num_samples=3)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
