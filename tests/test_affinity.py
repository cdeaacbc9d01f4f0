"""AffinityNet: pair offsets, pair labels, the balanced loss, dense affinities
and random-walk propagation."""
from __future__ import annotations

import itertools

import pytest
import torch

from wsss_core.models import AffinityNet, affinity_labels, affinity_loss, build_backbone, pair_offsets, random_walk
from wsss_core.models.affinity_net import dense_affinity, pair_affinity


def test_pair_offsets_are_the_half_disk():
    offsets = pair_offsets(5)
    assert len(offsets) == len(set(offsets)) == 34  # psa's default
    disk = {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if 0 < dy * dy + dx * dx < 25}
    assert set(offsets) | {(-dy, -dx) for dy, dx in offsets} == disk
    assert not set(offsets) & {(-dy, -dx) for dy, dx in offsets}
    with pytest.raises(ValueError, match="radius must be >= 2"):
        pair_offsets(1)


def _brute_force_pairs(label: torch.Tensor, radius: int) -> dict[str, set]:
    """Every in-map pair within the radius, classified by hand."""
    h, w = label.shape
    kinds: dict[str, set] = {"bg": set(), "fg": set(), "neg": set()}
    for (y, x), (dy, dx) in itertools.product(itertools.product(range(h), range(w)), pair_offsets(radius)):
        if not (0 <= y + dy < h and 0 <= x + dx < w):
            continue
        a, b = int(label[y, x]), int(label[y + dy, x + dx])
        if 255 in (a, b):
            continue
        kind = "neg" if a != b else ("bg" if a == 0 else "fg")
        kinds[kind].add((y, x, dy, dx))
    return kinds


def _as_pairs(mask: torch.Tensor, radius: int) -> set:
    offsets = pair_offsets(radius)
    return {(y, x, *offsets[p]) for p, y, x in mask.nonzero().tolist()}


def test_affinity_labels_on_a_hand_made_map():
    label = torch.tensor([[0, 0, 1], [0, 255, 1], [2, 2, 1]])
    bg, fg, neg = (m[0] for m in affinity_labels(label[None], radius=2))  # offsets (0,1) (1,-1) (1,0) (1,1)
    assert _as_pairs(bg, 2) == {(0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 1, -1)}
    assert _as_pairs(fg, 2) == {(0, 2, 1, 0), (1, 2, 1, 0), (2, 0, 0, 1)}
    assert _as_pairs(neg, 2) == {(0, 1, 0, 1), (0, 1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 1), (1, 2, 1, -1), (2, 1, 0, 1)}


def test_affinity_labels_match_brute_force_on_a_random_map():
    generator = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 7, 9), generator=generator)
    label[torch.rand(label.shape, generator=generator) < 0.2] = 255
    masks = affinity_labels(label, radius=3)
    for b in range(2):
        expected = _brute_force_pairs(label[b], 3)
        for kind, mask in zip(("bg", "fg", "neg"), masks):
            assert _as_pairs(mask[b], 3) == expected[kind]


def test_affinity_loss_is_balanced_and_rewards_correct_affinities():
    label = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    bg, fg, neg = affinity_labels(label, radius=2)
    ideal = fg.float() + bg.float()  # 1 on positives, 0 on negatives
    assert affinity_loss(ideal, bg, fg, neg) < 1e-4
    assert affinity_loss(1 - ideal, bg, fg, neg) > 5.0
    half = torch.full_like(ideal, 0.5)
    expected = -torch.log(torch.tensor(0.5 + 1e-5)) / 4 * 2 - torch.log(torch.tensor(0.5 + 1e-5)) / 2
    torch.testing.assert_close(affinity_loss(half, bg, fg, neg), expected, atol=1e-4, rtol=0)


def test_pair_affinity_is_exp_of_mean_l1_distance():
    torch.manual_seed(0)
    features = torch.randn(1, 6, 5, 4)
    aff = pair_affinity(features, radius=3)
    for p, (dy, dx) in enumerate(pair_offsets(3)):
        for y, x in itertools.product(range(5), range(4)):
            inside = 0 <= y + dy < 5 and 0 <= x + dx < 4
            value = torch.exp(-(features[0, :, y, x] - features[0, :, y + dy, x + dx]).abs().mean()) if inside else 0.0
            torch.testing.assert_close(aff[0, p, y, x], torch.as_tensor(value), atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def affinity_net() -> AffinityNet:
    torch.manual_seed(0)
    return AffinityNet(build_backbone("resnet_small"), radius=3).eval()


def test_dense_affinity_symmetric_bounded_and_zero_beyond_radius(affinity_net):
    with torch.no_grad():
        dense = affinity_net.affinity(torch.randn(2, 3, 48, 56))
    h, w = 6, 7
    assert dense.shape == (2, h * w, h * w)
    torch.testing.assert_close(dense, dense.transpose(1, 2))
    assert (dense >= 0).all() and (dense <= 1).all()
    torch.testing.assert_close(dense.diagonal(dim1=1, dim2=2), torch.ones(2, h * w))
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()], dim=1).float()
    far = torch.cdist(coords, coords) >= 3
    assert (dense[:, far] == 0).all()
    assert (dense[:, ~far] > 0).all()


def test_affinity_net_trains_on_pair_labels(affinity_net):
    net = AffinityNet(build_backbone("resnet_small"), radius=3)
    label = torch.zeros(1, 6, 6, dtype=torch.long)
    label[:, 2:5, 1:4] = 1
    pairs = net(torch.randn(1, 3, 48, 48))
    assert pairs.shape == (1, len(pair_offsets(3)), 6, 6)
    affinity_loss(pairs, *affinity_labels(label, radius=3)).backward()
    assert net.fuse.weight.grad.abs().sum() > 0 and net.backbone.stem[0].weight.grad.abs().sum() > 0
    groups = net.param_groups(0.1)
    assert {g["name"]: g["lr"] for g in groups}["new_weight"] == pytest.approx(1.0)


def test_random_walk_with_identity_affinity_returns_the_input():
    cams = torch.rand(2, 3, 4, 5)
    identity = torch.eye(20).expand(2, 20, 20)
    torch.testing.assert_close(random_walk(cams, identity), cams)


def test_random_walk_repeated_squaring_equals_stepwise_propagation():
    torch.manual_seed(0)
    features = torch.randn(1, 4, 5, 6)
    affinity = dense_affinity(features, radius=3)
    cams = torch.rand(1, 3, 5, 6)
    walked = random_walk(cams, affinity, beta=2.0, iterations=8)
    assert walked.shape == cams.shape
    trans = affinity**2
    trans = trans / trans.sum(dim=1, keepdim=True)
    stepwise = cams.flatten(2)
    for _ in range(8):
        stepwise = stepwise @ trans
    torch.testing.assert_close(walked, stepwise.view_as(cams), atol=1e-5, rtol=1e-4)
    lo, hi = cams.flatten(2).amin(dim=2), cams.flatten(2).amax(dim=2)  # averages stay within the range
    assert (walked.flatten(2).amin(dim=2) >= lo - 1e-6).all() and (walked.flatten(2).amax(dim=2) <= hi + 1e-6).all()


def test_random_walk_spreads_within_connected_regions():
    """Two blocks of pixels with affinity 1 inside and 0 across: activation
    spreads evenly inside its block and never crosses."""
    block = torch.zeros(8, 8)
    block[:4, :4] = block[4:, 4:] = 1
    cams = torch.zeros(1, 1, 2, 4)
    cams[0, 0, 0, 0] = 4.0  # pixel 0 in the first block (pixels 0-3)
    walked = random_walk(cams, block[None], iterations=4).flatten()
    torch.testing.assert_close(walked, torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))


def test_random_walk_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"affinity must be \[B, hw, hw\]"):
        random_walk(torch.rand(1, 2, 3, 3), torch.eye(8)[None])
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        random_walk(torch.rand(1, 2, 3, 3), torch.eye(9)[None], iterations=0)
