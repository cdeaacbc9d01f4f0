"""Feature similarity loss (Eqs. 9-12): window vs dense agreement, the authors' scale,
sign behaviour, fixed and learnable parameters."""

import math

import pytest
import torch
import torch.nn.functional as F

from wsss_core.fsl import window_radius
from wsss_core.losses import FeatureSimilarityLoss, feature_similarity_loss, feature_similarity_loss_dense


def _scene(batch, classes, height, width, seed, dtype=torch.float64):
    """Piecewise-smooth image and predictions (what a CAM network sees), RGB in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    image = F.interpolate(torch.rand(batch, 3, 4, 4, generator=gen, dtype=dtype), size=(height, width), mode="bilinear")
    image = (image + 0.05 * torch.rand(batch, 3, height, width, generator=gen, dtype=dtype)).clamp(0, 1)
    logits = F.interpolate(3 * torch.randn(batch, classes, 5, 5, generator=gen, dtype=dtype), size=(height, width), mode="bilinear")
    return image, logits.softmax(1)


def _loss_and_grads(loss_fn, image, probs, sigma, mu):
    probs = probs.clone().requires_grad_()
    sigma = torch.tensor(sigma, dtype=probs.dtype, requires_grad=True)
    mu = torch.tensor(mu, dtype=probs.dtype, requires_grad=True)
    loss = loss_fn(image, probs, sigma, mu)
    loss.backward()
    return loss.detach(), probs.grad, sigma.grad, mu.grad


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize(
    "shape, sigma, mu",
    [
        ((2, 4, 12, 13), 1.0, 0.3),
        ((2, 3, 16, 16), 0.6, -0.5),  # small sigma: a 5x5 window
        ((1, 5, 20, 31), 3.0, 0.8),
        ((2, 3, 14, 14), 8.0, 0.0),  # window covers the whole image
        ((1, 3, 9, 60), 1.0, 0.2),  # wide image: the torch path splits rows into column blocks
    ],
)
@pytest.mark.parametrize("normalization", ["pixels", "pairs"])
def test_window_matches_dense_value_and_gradients(backend, shape, sigma, mu, normalization):
    image, probs = _scene(*shape, seed=sum(shape))
    window = _loss_and_grads(
        lambda *a: feature_similarity_loss(*a, normalization, backend=backend), image, probs, sigma, mu
    )
    dense = _loss_and_grads(lambda *a: feature_similarity_loss_dense(*a, normalization), image, probs, sigma, mu)
    for name, got, want in zip(("value", "d/dprobs", "d/dsigma", "d/dmu"), window, dense):
        assert _rel(got, want) < 2e-3, name


def test_float32_production_matches_float64_dense():
    image, probs = _scene(2, 21, 24, 24, seed=3)
    window = _loss_and_grads(feature_similarity_loss, image.float(), probs.float(), 2.5, 0.2)
    dense = _loss_and_grads(feature_similarity_loss_dense, image, probs, 2.5, 0.2)
    for got, want in zip(window, dense):
        assert got.dtype == torch.float32
        assert _rel(got.double(), want) < 2e-3


def _two_pixels(colors, preds):
    image = torch.tensor(colors, dtype=torch.float64).T.reshape(1, 3, 1, 2)
    probs = torch.tensor(preds, dtype=torch.float64).T.reshape(1, 2, 1, 2).requires_grad_()
    return image, probs


@pytest.mark.parametrize("loss_fn", [feature_similarity_loss, feature_similarity_loss_dense])
def test_similar_neighbours_with_different_predictions_are_pulled_together(loss_fn):
    image, probs = _two_pixels([[0.5, 0.5, 0.5], [0.52, 0.5, 0.5]], [[0.9, 0.1], [0.2, 0.8]])
    loss = loss_fn(image, probs, 1.0, 0.0)
    loss.backward()
    assert loss > 0
    diff = probs[0, :, 0, 0] - probs[0, :, 0, 1]
    grad_diff = probs.grad[0, :, 0, 0] - probs.grad[0, :, 0, 1]
    assert float(diff.detach() @ grad_diff) > 0  # a descent step shrinks a_i - a_j


@pytest.mark.parametrize("loss_fn", [feature_similarity_loss, feature_similarity_loss_dense])
def test_dissimilar_neighbours_with_similar_predictions_are_pushed_apart(loss_fn):
    image, probs = _two_pixels([[0.0, 0.0, 0.0], [1.0, 0.95, 1.0]], [[0.6, 0.4], [0.5, 0.5]])
    loss = loss_fn(image, probs, 1.0, 0.0)
    loss.backward()
    assert loss < 0
    diff = probs[0, :, 0, 0] - probs[0, :, 0, 1]
    grad_diff = probs.grad[0, :, 0, 0] - probs.grad[0, :, 0, 1]
    assert float(diff.detach() @ grad_diff) < 0  # a descent step grows a_i - a_j


def _authors_fsl(image, probs, mu, sigma):
    """Independent re-derivation of arvijj/icam tool/probutils.py feature_similarity_loss
    (non-fast path, all ordered pairs): -1/(n h w) * sum exp(-d^2/(2 s^2))/(2 pi s^2)
    * ||a_i - a_j||_2^2 * tanh(mu + log((dx + 1e-5) / (1 - dx + 1e-5))), dx = ||x_i - x_j||_1 / 3."""
    n, _, h, w = probs.shape
    total = 0.0
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).to(probs.dtype)
    dist = torch.cdist(pos, pos)
    gauss = torch.exp(-0.5 * (dist / sigma) ** 2) / (2 * math.pi * sigma**2)
    for b in range(n):
        x = image[b].clamp(0, 1).flatten(1).T
        a = probs[b].flatten(1).T
        dx = (torch.cdist(x, x, p=1.0) / 3).clamp(0, 1)
        f = torch.tanh(mu + torch.log((dx + 1e-5) / (1 - dx + 1e-5)))
        total = total + (gauss * torch.cdist(a, a, p=2.0) ** 2 * f).sum()
    return -total / (n * h * w)


@pytest.mark.parametrize("backend", ["numba", "torch", "dense"])
def test_pixels_normalization_is_half_the_authors_term_and_pairs_is_eq9(backend):
    image, probs = _scene(2, 4, 14, 15, seed=21)
    authors = _authors_fsl(image, probs, mu=2.5, sigma=5.0)
    if backend == "dense":
        pixels = feature_similarity_loss_dense(image, probs, 5.0, 2.5, "pixels")
        pairs = feature_similarity_loss_dense(image, probs, 5.0, 2.5, "pairs")
    else:  # the window covers every pair of this 14 x 15 image at 1 - 1e-12 mass (radius 37)
        pixels = feature_similarity_loss(image, probs, 5.0, 2.5, "pixels", mass=1 - 1e-12, backend=backend)
        pairs = feature_similarity_loss(image, probs, 5.0, 2.5, "pairs", mass=1 - 1e-12, backend=backend)
    assert float(pixels) == pytest.approx(0.5 * float(authors), rel=1e-5)
    assert float(pairs) == pytest.approx(float(pixels) / (14 * 15), rel=1e-5)


def test_fixed_sigma_and_mu_default_to_the_authors_values_and_get_no_gradient():
    image, probs = _scene(1, 3, 12, 12, seed=5, dtype=torch.float32)
    module = FeatureSimilarityLoss()
    assert (module.sigma, module.mu, module.normalization) == (pytest.approx(5.0), pytest.approx(2.5), "pixels")
    probs = probs.clone().requires_grad_()
    module(image, probs).backward()
    assert module.log_sigma.grad is None and module.mu_parameter.grad is None
    assert probs.grad is not None and float(probs.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="normalization='mean'"):
        FeatureSimilarityLoss(normalization="mean")


def test_learnable_sigma_and_mu_get_gradients_and_sigma_stays_positive():
    image, probs = _scene(1, 3, 12, 12, seed=5, dtype=torch.float32)
    module = FeatureSimilarityLoss(sigma_init=2.0, mu_init=0.5, learn=True)
    assert module.sigma == pytest.approx(2.0) and module.mu == pytest.approx(0.5)
    module(image, probs).backward()
    grads = (module.log_sigma.grad, module.mu_parameter.grad)
    assert all(g is not None and torch.isfinite(g) and g != 0 for g in grads)
    with torch.no_grad():  # an update far larger than sigma itself cannot make it non-positive
        module.log_sigma -= 10.0
    assert 0 < module.sigma < 2.0
    assert torch.isfinite(module(image, probs))


def test_larger_image_is_area_resized_to_probs():
    image, probs = _scene(1, 3, 20, 20, seed=7)
    big = F.interpolate(image, scale_factor=2, mode="nearest")
    assert torch.allclose(feature_similarity_loss(big, probs, 1.5, 0.0), feature_similarity_loss(image, probs, 1.5, 0.0))


def test_bad_inputs_are_refused_with_clear_errors():
    image, probs = _scene(1, 3, 10, 10, seed=1)
    with pytest.raises(ValueError, match="smaller than probs"):
        feature_similarity_loss(image[..., :5, :5], probs, 1.0, 0.0)
    with pytest.raises(ValueError, match="mass=0.5"):
        feature_similarity_loss(image, probs, 1.0, 0.0, mass=0.5)
    with pytest.raises(ValueError, match="sigma=-1.0"):
        feature_similarity_loss(image, probs, -1.0, 0.0)
    assert window_radius(2.0, 0.999) == pytest.approx(2.0 * math.sqrt(-2 * math.log(0.001)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_window_matches_cpu():
    image, probs = _scene(2, 5, 16, 16, seed=11)
    cpu = _loss_and_grads(feature_similarity_loss, image, probs, 2.0, 0.1)
    gpu = _loss_and_grads(feature_similarity_loss, image.cuda(), probs.cuda(), 2.0, 0.1)
    for got, want in zip(gpu, cpu):
        assert _rel(got.cpu(), want) < 1e-6
