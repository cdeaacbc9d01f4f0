"""CAMNet (plain and SEAM/PCM), DeepLab-v1, parameter groups, a toy overfit,
and the CUDA/AMP/channels_last path where a GPU exists."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss_core.models import (
    AffinityNet,
    CAMNet,
    DeepLabV1,
    PixelCorrelationModule,
    affinity_labels,
    affinity_loss,
    build_backbone,
    random_walk,
)


def _camnet(mode: str = "plain", classes: int = 4, **kwargs) -> CAMNet:
    torch.manual_seed(0)
    return CAMNet(build_backbone("resnet_small"), classes, mode=mode, **kwargs)


@pytest.mark.parametrize("mode", ["plain", "seam"])
def test_camnet_shapes_and_softmax_over_k(mode):
    out = _camnet(mode)(torch.randn(2, 3, 64, 80))
    assert out.logits.shape == out.probs.shape == (2, 4, 8, 10)
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(2, 8, 10))
    torch.testing.assert_close(out.probs, torch.softmax(out.logits, dim=1))
    if mode == "plain":
        assert out.refined is None
    else:
        assert out.refined.shape == (2, 4, 8, 10)


def test_camnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of .*'plain'.*got 'siamese'"):
        _camnet("siamese")
    with pytest.raises(ValueError, match="dropout must be in"):
        _camnet(dropout=1.5)
    with pytest.raises(ValueError, match="pcm_source"):
        _camnet("seam", pcm_source="cams")


def test_camnet_gradients_reach_backbone_and_classifier():
    net = _camnet()
    out = net(torch.randn(2, 3, 48, 48))
    out.probs[:, 1].mean().backward()
    assert net.classifier.weight.grad.abs().sum() > 0
    assert net.backbone.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("source", ["logits", "seam"])
def test_pcm_gradients_reach_the_classifier_only_from_logits(source):
    net = _camnet("seam", pcm_source=source)
    out = net(torch.randn(2, 3, 48, 48))
    out.refined.square().mean().backward()
    assert net.pcm.embed.weight.grad.abs().sum() > 0
    assert net.pcm.proj_low.weight.grad.abs().sum() > 0
    if source == "seam":  # SEAM: CAM input and features detached
        assert net.classifier.weight.grad is None
        assert net.backbone.stem[0].weight.grad is None
    else:  # icam network/resnet38_cam.py: PCM(cam_logits, f), only the features detached
        assert net.classifier.weight.grad.abs().sum() > 0


def test_pcm_affinity_is_column_normalised_and_preserves_constant_maps():
    torch.manual_seed(0)
    pcm = PixelCorrelationModule((8, 16))
    image, low, high = torch.randn(1, 3, 40, 40), torch.randn(1, 8, 5, 5), torch.randn(1, 16, 5, 5)
    aff = pcm.affinity(image, low, high)
    assert aff.shape == (1, 25, 25) and (aff >= 0).all()
    torch.testing.assert_close(aff.sum(dim=1), torch.ones(1, 25), atol=1e-4, rtol=0)
    constant = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    torch.testing.assert_close(pcm(constant, image, low, high), constant, atol=1e-4, rtol=0)


def _group_of(groups: list[dict], param: torch.Tensor) -> dict:
    (group,) = [g for g in groups if any(p is param for p in g["params"])]
    return group


def test_camnet_param_groups_give_new_layers_10x_lr():
    net = _camnet("seam")
    groups = net.param_groups(0.01, weight_decay=5e-4)
    assert _group_of(groups, net.classifier.weight)["lr"] == pytest.approx(0.1)
    assert _group_of(groups, net.pcm.embed.weight)["lr"] == pytest.approx(0.1)
    backbone_conv = _group_of(groups, net.backbone.stem[0].weight)
    assert backbone_conv["lr"] == pytest.approx(0.01) and backbone_conv["weight_decay"] == 5e-4
    assert _group_of(groups, net.backbone.stem[1].weight)["weight_decay"] == 0.0
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len([p for p in net.parameters() if p.requires_grad])
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as is


def test_deeplab_shapes_and_param_groups():
    torch.manual_seed(0)
    net = DeepLabV1(build_backbone("resnet_small"), 5, head_channels=32)
    logits = net(torch.randn(2, 3, 64, 72))
    assert logits.shape == (2, 5, 8, 9)
    groups = net.param_groups(1e-3, weight_decay=1e-4)
    bias_group = _group_of(groups, net.head[-1].bias)
    assert bias_group["lr"] == pytest.approx(2e-2) and bias_group["weight_decay"] == 0.0
    assert _group_of(groups, net.head[0].weight)["lr"] == pytest.approx(1e-2)
    logits.mean().backward()
    assert net.backbone.stem[0].weight.grad.abs().sum() > 0


def _toy_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images: a red square (class 1) and a blue disk (class 2) on grey."""
    images = torch.full((2, 3, 64, 64), 0.5)
    images[0, :, 10:40, 12:42] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disk = (yy - 36) ** 2 + (xx - 30) ** 2 < 15**2
    images[1, :, disk] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1)
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # background always present
    return (images - 0.5) / 0.25, labels


def test_resnet_small_camnet_overfits_a_toy_pair():
    net = _camnet(classes=3, dropout=0.0)
    images, labels = _toy_images()
    optimizer = torch.optim.SGD(net.param_groups(0.05, 1e-4), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        scores = net(images).probs.amax(dim=(2, 3)).clamp(1e-6, 1 - 1e-6)  # max pooling on probs
        loss = F.binary_cross_entropy(scores, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_same_code_runs_with_amp_and_channels_last(device):
    """CAMNet (SEAM), AffinityNet + random walk and DeepLab under bf16 autocast
    with channels_last inputs and weights, forward and backward."""
    torch.manual_seed(0)
    channels_last = torch.channels_last
    cam_net = _camnet("seam").to(device, memory_format=channels_last)
    aff_net = AffinityNet(build_backbone("resnet_small"), radius=3).to(device, memory_format=channels_last)
    deeplab = DeepLabV1(build_backbone("resnet_small"), 4, head_channels=16).to(device, memory_format=channels_last)
    x = torch.randn(2, 3, 48, 48, device=device).to(memory_format=channels_last)
    labels = torch.zeros(2, 6, 6, dtype=torch.long, device=device)
    labels[:, 1:4, 2:5] = 1
    with torch.autocast(device, dtype=torch.bfloat16):
        out = cam_net(x)
        walked = random_walk(out.probs, aff_net.affinity(x), iterations=4)
        loss = (
            out.probs[:, 1:].float().mean()
            + out.refined.float().mean()
            + affinity_loss(aff_net(x), *affinity_labels(labels, radius=3))
            + F.cross_entropy(deeplab(x).float(), labels)
        )
    loss.backward()
    assert walked.shape == out.probs.shape and walked.device.type == device
    assert torch.isfinite(loss) and torch.isfinite(walked).all()
    for net in (cam_net, aff_net, deeplab):
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    assert cam_net.classifier.weight.grad.abs().sum() > 0 and deeplab.head[0].weight.grad.abs().sum() > 0
