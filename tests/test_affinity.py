"""AffinityNet: pair offsets, pair labels, the balanced loss, sparse affinities
and random-walk propagation."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wsss_core.models import AffinityNet, affinity_labels, affinity_loss, build_backbone, pair_offsets, random_walk
from wsss_core.models.affinity_net import pair_affinity, sparse_affinity


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


def test_pair_affinity_gradient_matches_finite_differences():
    features = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: pair_affinity(f, radius=3), (features,))


def test_pair_affinity_keeps_nothing_per_offset_for_backward():
    """Autograd saves the features and [B,P,h,w]-sized tensors only, not one
    [B,C,h,w] difference per offset (34 of them at radius 5)."""
    features = torch.randn(2, 64, 12, 12, requires_grad=True)
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pairs = pair_affinity(features, radius=5)
    assert sum(saved) <= features.numel() + 3 * pairs.numel()
    pairs.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def affinity_net() -> AffinityNet:
    torch.manual_seed(0)
    return AffinityNet(build_backbone("resnet_small"), radius=3).eval()


def test_sparse_affinity_symmetric_bounded_and_absent_beyond_radius(affinity_net):
    with torch.no_grad():
        sparse = affinity_net.affinity(torch.randn(2, 3, 48, 56))
    h, w = 6, 7
    assert sparse.layout == torch.sparse_coo and sparse.is_coalesced() and sparse.shape == (2, h * w, h * w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()], dim=1).float()
    near = torch.cdist(coords, coords) < 3
    assert sparse._nnz() == 2 * int(near.sum())  # exactly the within-radius entries, incl. the diagonal
    dense = sparse.to_dense()
    torch.testing.assert_close(dense, dense.transpose(1, 2))
    assert (dense >= 0).all() and (dense <= 1).all()
    torch.testing.assert_close(dense.diagonal(dim1=1, dim2=2), torch.ones(2, h * w))
    assert (dense[:, ~near] == 0).all()
    assert (dense[:, near] > 0).all()


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


def _dense_random_walk(cams: torch.Tensor, affinity: torch.Tensor, beta: float, iterations: int) -> torch.Tensor:
    """The dense walk as psa and SEAM write it, as the reference: cams [B,K,h,w] @
    (column-normalised A^beta)^iterations with A a dense [B,hw,hw]."""
    trans = affinity.clamp_min(0) ** beta
    trans = trans / trans.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (cams.flatten(2) @ torch.linalg.matrix_power(trans, iterations)).view_as(cams)


def test_random_walk_with_identity_affinity_returns_the_input():
    cams = torch.rand(2, 3, 4, 5)
    identity = torch.eye(20).expand(2, 20, 20)
    torch.testing.assert_close(random_walk(cams, identity), cams)
    torch.testing.assert_close(random_walk(cams, identity.to_sparse()), cams)


@pytest.mark.parametrize(
    ("h", "w", "radius", "beta", "iterations"), [(5, 6, 3, 2.0, 8), (9, 4, 5, 8.0, 64), (7, 11, 4, 3.0, 13)]
)
def test_sparse_random_walk_matches_the_dense_matrix_power(h, w, radius, beta, iterations):
    generator = torch.Generator().manual_seed(h * w)
    features = torch.randn(2, 4, h, w, generator=generator) * 0.3
    cams = torch.rand(2, 3, h, w, generator=generator)
    affinity = sparse_affinity(features, radius)
    walked = random_walk(cams, affinity, beta=beta, iterations=iterations)
    expected = _dense_random_walk(cams.double(), affinity.to_dense().double(), beta, iterations).float()
    assert walked.shape == cams.shape and walked.dtype == torch.float32
    torch.testing.assert_close(walked, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(random_walk(cams, affinity.to_dense(), beta, iterations), walked, atol=1e-6, rtol=0)
    top2 = expected.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-4  # same labels wherever the reference has no near-tie
    assert (walked.argmax(dim=1) == expected.argmax(dim=1))[clear].all() and clear.float().mean() > 0.9
    lo, hi = cams.flatten(2).amin(dim=2), cams.flatten(2).amax(dim=2)  # averages stay within the range
    assert (walked.flatten(2).amin(dim=2) >= lo - 1e-6).all() and (walked.flatten(2).amax(dim=2) <= hi + 1e-6).all()


def test_random_walk_uses_the_column_convention():
    """A non-symmetric affinity: T = A^beta / column sums, refined = cams @ T."""
    affinity = torch.tensor([[[1.0, 0.5], [0.25, 1.0]]])
    cams = torch.tensor([[[[2.0, 6.0]]]])
    trans = torch.tensor([[1.0, 0.25], [0.0625, 1.0]]) / torch.tensor([1.0625, 1.25])
    walked = random_walk(cams, affinity.to_sparse(), beta=2.0, iterations=1)
    torch.testing.assert_close(walked.flatten(), cams.flatten() @ trans)


class _LargestStridedTensor(TorchDispatchMode):
    """Records the largest number of elements of any strided tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


def test_affinity_and_random_walk_never_build_an_hw_by_hw_tensor():
    h, w = 40, 36
    features, cams = torch.randn(1, 8, h, w), torch.rand(1, 3, h, w)
    with _LargestStridedTensor() as probe:
        random_walk(cams, sparse_affinity(features, radius=5), iterations=4)
    linear = 3 * (2 * len(pair_offsets(5)) + 1) * h * w  # the [3, nnz] COO indices: linear in hw
    assert 0 < probe.largest <= linear < (h * w) ** 2 / 4


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
