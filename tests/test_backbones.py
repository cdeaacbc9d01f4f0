"""Backbones: stride-8 maps, weight loading (ImageNet EfficientNet-Lite0 offline,
ResNet-38d reference key names, torchvision files) and clear errors."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from wsss_core.models import BACKBONES, build_backbone
from wsss_core.models.efficientnet import imagenet_weights_path

VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"))


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_returns_stride8_maps_of_stated_channels(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, weights=None).eval()
    x = torch.randn(1, 3, 42, 59)
    with torch.no_grad():
        stages = backbone.forward_stages(x)
        out = backbone(x)
    assert tuple(s.shape[1] for s in stages) == backbone.stage_channels
    assert backbone.out_channels == backbone.stage_channels[-1] == out.shape[1]
    stride8 = (math.ceil(42 / 8), math.ceil(59 / 8))
    assert tuple(out.shape[-2:]) == stride8
    assert all(tuple(s.shape[-2:]) == stride8 for s in stages[-3:])
    assert len(backbone.mean) == len(backbone.std) == 3


def test_efficientnet_output_stride_16_halves_the_last_three_maps():
    backbone = build_backbone("efficientnet_lite0", weights=None, output_stride=16).eval()
    x = torch.randn(1, 3, 42, 59)
    with torch.no_grad():
        stages = backbone.forward_stages(x)
    assert backbone.stride == 16
    assert tuple(s.shape[1] for s in stages) == backbone.stage_channels
    stride16 = (math.ceil(42 / 16), math.ceil(59 / 16))
    assert all(tuple(s.shape[-2:]) == stride16 for s in stages[-3:])


def test_output_stride_outside_what_a_backbone_supports_is_one_line():
    with pytest.raises(ValueError, match=r"output_stride=16 is invalid for resnet38d; allowed: 8"):
        build_backbone("resnet38d", weights=None, output_stride=16)
    with pytest.raises(ValueError, match=r"output_stride=32 is invalid for efficientnet_lite0; allowed: 8, 16"):
        build_backbone("efficientnet_lite0", weights=None, output_stride=32)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*resnet_small"):
        build_backbone("vgg")


def test_efficientnet_loads_the_shipped_imagenet_weights_by_default():
    path = imagenet_weights_path()
    assert path.is_file()
    reference = torch.load(path, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    pretrained = build_backbone("efficientnet_lite0")
    random = build_backbone("efficientnet_lite0", weights=None)
    own = pretrained.net.state_dict()
    assert set(own) == set(reference)
    assert all(torch.equal(own[k], reference[k]) for k in reference)
    head = "_conv_head.weight"
    assert not torch.equal(random.net.state_dict()[head], reference[head])


def _single_class_images(class_index: int, count: int) -> list[Path]:
    root = VOC_MINI / "VOC2012"
    from PIL import Image

    found = []
    for name in (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
        labels = set(np.unique(np.array(Image.open(root / "SegmentationClassAug" / f"{name}.png")))) - {0, 255}
        if labels == {class_index}:
            found.append(root / "JPEGImages" / f"{name}.jpg")
            if len(found) == count:
                break
    return found


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason=f"real VOC sample absent: {VOC_MINI}")
def test_efficientnet_predicts_imagenet_cats_on_real_cat_photos():
    from PIL import Image

    backbone = build_backbone("efficientnet_lite0").eval()
    mean, std = torch.tensor(backbone.mean)[:, None, None], torch.tensor(backbone.std)[:, None, None]
    images = _single_class_images(8, 4)  # VOC class 8 = cat
    assert len(images) == 4
    batch = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((224, 224)))).permute(2, 0, 1) for p in images]
    )
    with torch.no_grad():
        top5 = backbone.classify((batch.float() / 255 - mean) / std).topk(5).indices
    is_cat = (top5 >= 281) & (top5 <= 285)  # ImageNet's domestic and wild cats
    assert is_cat.any(dim=1).sum() >= 3


@pytest.fixture(scope="module")
def resnet38d_file(tmp_path_factory) -> tuple[Path, dict]:
    """A state dict laid out like psa/SEAM's converted ImageNet file (no
    num_batches_tracked counters), written to disk."""
    torch.manual_seed(1)
    state = {k: v for k, v in build_backbone("resnet38d", weights=None).state_dict().items() if "num_batches" not in k}
    path = tmp_path_factory.mktemp("weights") / "res38d.pth"
    torch.save(state, path)
    return path, state


def test_resnet38d_uses_the_reference_key_names(resnet38d_file):
    _, state = resnet38d_file
    reference_keys = {
        "conv1a.weight",
        "b2.bn_branch2a.running_mean",
        "b2.conv_branch1.weight",
        "b4_5.conv_branch2b1.weight",
        "b5.conv_branch2a.weight",
        "b6.bn_branch2b2.weight",
        "b7.conv_branch2b2.weight",
        "bn7.running_var",
    }
    assert reference_keys <= set(state)
    assert "b2_1.conv_branch1.weight" not in state  # identity shortcut, as the reference


def test_resnet38d_round_trips_a_reference_state_dict_and_freezes_as_seam(resnet38d_file):
    path, state = resnet38d_file
    backbone = build_backbone("resnet38d", weights=path)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    backbone.train()
    assert not backbone.bn7.training and not backbone.b4.bn_branch2a.training
    assert not backbone.conv1a.weight.requires_grad and not backbone.b2_2.conv_branch2a.weight.requires_grad
    assert backbone.b3.conv_branch2a.weight.requires_grad


def test_resnet38d_rejects_mismatched_and_missing_files(resnet38d_file, tmp_path):
    _, state = resnet38d_file
    renamed = {("b7.conv_branch2b2.kernel" if k == "b7.conv_branch2b2.weight" else k): v for k, v in state.items()}
    path = tmp_path / "renamed.pth"
    torch.save({k: renamed[k] for k in list(renamed)[-6:]}, path)
    with pytest.raises(ValueError, match=r"renamed\.pth do not match.*missing keys \['conv1a\.weight'.*unexpected keys \['b7\.conv_branch2b2\.kernel'\]"):
        build_backbone("resnet38d", weights=path)
    with pytest.raises(ValueError, match="weights file not found: .*nowhere.pth"):
        build_backbone("resnet38d", weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="MXNet original"):
        build_backbone("resnet38d", weights=tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params")


def test_wrong_tensor_shape_is_named(tmp_path):
    state = build_backbone("resnet_small", weights=None).state_dict()
    state["stages.3.bn2.weight"] = torch.zeros(10)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"key stages\.3\.bn2\.weight has shape \(10,\), expected \(128,\)"):
        build_backbone("resnet_small", weights=tmp_path / "shape.pth")


def test_torchvision_resnet_loads_a_local_torchvision_file(tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r50.pth")
    backbone = build_backbone("resnet50", weights=tmp_path / "r50.pth")
    assert torch.equal(backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert torch.equal(backbone.stem[1].running_var, reference.bn1.running_var)
    with pytest.raises(ValueError, match="neither a local file nor a torchvision ResNet50_Weights name.*IMAGENET1K_V2"):
        build_backbone("resnet50", weights="IMAGENET_BEST")


def test_frozen_backbone_gets_no_gradients_and_keeps_its_batchnorm_statistics():
    from wsss_core.models import CAMNet
    from wsss_core.pipeline.config import load_config

    torch.manual_seed(0)
    backbone = build_backbone("resnet_small", weights=None).freeze()
    net = CAMNet(backbone, num_classes=4, mode="plain")
    net.train()
    assert not backbone.training and all(not m.training for m in backbone.modules())
    assert net.classifier.training
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    loss = net(torch.randn(2, 3, 32, 32)).logits.mean()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert net.classifier.weight.grad is not None
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items())  # running stats untouched
    names = {g["name"] for g in net.param_groups(0.01)}
    assert names and not any(n.startswith("backbone") for n in names)
    assert load_config({"cam.freeze_backbone": True}).cam.freeze_backbone
    assert not load_config({}).segmentation.freeze_backbone


def test_frozen_backbone_with_a_trainable_head_trains_only_its_head_conv():
    from wsss_core.models import CAMNet

    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", weights=None).freeze(train_head=True)
    net = CAMNet(backbone, num_classes=4, mode="plain").train()
    head = {id(p) for m in backbone.head_modules() for p in m.parameters()}
    stats = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 64)
    net(x).logits.square().mean().backward()
    trained = {id(p) for p in backbone.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == head and head, "exactly the head conv and its BatchNorm affine parameters get gradients"
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items()), "BatchNorm statistics stay fixed"
    assert {g["name"] for g in net.param_groups(0.01)} >= {"backbone_weight", "backbone_norm"}
    with torch.no_grad():
        assert torch.equal(backbone.features(x)[0], backbone.forward_stages(x)[-1]), "trunk + head is the whole backbone"


def test_trainable_head_blocks_train_with_the_head_and_keep_their_batchnorm_statistics():
    from wsss_core.models import CAMNet, max_head_blocks

    torch.manual_seed(0)
    whole = build_backbone("efficientnet_lite0", weights=None).eval()
    backbone = build_backbone("efficientnet_lite0", weights=None)
    backbone.load_state_dict(whole.state_dict())
    backbone.freeze(train_head=True, head_blocks=2)
    net = CAMNet(backbone, num_classes=4, mode="plain").train()
    moved = [*backbone.net._blocks[14:], backbone.net._conv_head, backbone.net._bn1]
    assert list(backbone.head_modules()) == moved and list(backbone.head_block_modules()) == moved[:2]
    stats = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert backbone.trunk_stages(x)[-1].shape[1] == 192, "the trunk ends at block 13"
        assert torch.equal(backbone.features(x)[0], whole.forward_stages(x)[-1]), "trunk + head is the whole backbone"
    net(x).logits.square().mean().backward()
    trained = {id(p) for p in backbone.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {id(p) for m in moved for p in m.parameters()}, "blocks 14-15 and the head conv, nothing else"
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items()), "BatchNorm statistics stay fixed"
    for stride in (8, 16):
        assert build_backbone("efficientnet_lite0", None, stride).max_head_blocks == max_head_blocks("efficientnet_lite0") == 5
    with pytest.raises(ValueError, match="head_blocks=6 is invalid for EfficientNetLite0 with train_head=True; allowed: 0-5"):
        build_backbone("efficientnet_lite0", weights=None).freeze(train_head=True, head_blocks=6)
    with pytest.raises(ValueError, match="head_blocks=1 is invalid for EfficientNetLite0 with train_head=False; allowed: 0$"):
        build_backbone("efficientnet_lite0", weights=None).freeze(head_blocks=1)


def test_trainable_backbone_blocks_need_a_trainable_head_and_a_backbone_that_has_them():
    from wsss_core.pipeline.config import ConfigError, load_config

    base = {"cam.backbone": "efficientnet_lite0", "cam.freeze_backbone": True, "cam.train_backbone_head": True}
    assert load_config({**base, "cam.train_backbone_blocks": 5}).cam.train_backbone_blocks == 5
    with pytest.raises(ConfigError, match=r"cam.train_backbone_blocks=6 is invalid; allowed: 0-5$"):
        load_config({**base, "cam.train_backbone_blocks": 6})
    with pytest.raises(ConfigError, match=r"cam.train_backbone_blocks=1 is invalid; allowed: 0 unless cam.train_backbone_head"):
        load_config({**base, "cam.train_backbone_head": False, "cam.train_backbone_blocks": 1})
    with pytest.raises(ConfigError, match=r"cam.backbone_blocks_lr_mult=0.0 is invalid; allowed: a number > 0"):
        load_config({**base, "cam.backbone_blocks_lr_mult": 0.0})


def test_a_trainable_head_needs_a_frozen_backbone_that_has_one():
    from wsss_core.pipeline.config import ConfigError, load_config

    assert load_config({"segmentation.backbone": "efficientnet_lite0", "segmentation.freeze_backbone": True,
                        "segmentation.train_backbone_head": True}).segmentation.train_backbone_head
    with pytest.raises(ConfigError, match=r"cam.train_backbone_head=True is invalid; allowed: false unless cam.freeze_backbone"):
        load_config({"cam.backbone": "efficientnet_lite0", "cam.train_backbone_head": True})
    with pytest.raises(ConfigError, match=r"affinity.train_backbone_head=True is invalid; allowed: false with backbone resnet_small"):
        load_config({"affinity.backbone": "resnet_small", "affinity.freeze_backbone": True, "affinity.train_backbone_head": True})
    with pytest.raises(ValueError, match="ResNetSmall has no head layer"):
        build_backbone("resnet_small", weights=None).freeze(train_head=True)


def test_a_dropped_head_leaves_the_trunks_map_and_no_head_gradients():
    from wsss_core.models import DeepLabV1

    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        trunk = backbone.trunk_stages(x)[-1]
        assert torch.equal(backbone.drop_head().features(x)[0], trunk)
    model = DeepLabV1(backbone, num_classes=4, head_channels=8, dilation=1, head="largefov").train()
    assert backbone.out_channels == 320 and model.head[0].in_channels == 320
    model(x).square().mean().backward()
    assert all(p.grad is None for m in backbone.head_modules() for p in m.parameters()), "the skipped head gets no gradient"
    assert backbone.net._conv_stem.weight.grad is not None, "the trunk still trains when not frozen"
    with pytest.raises(ValueError, match="head layer was dropped"):
        backbone.freeze(train_head=True)
    with pytest.raises(ValueError, match="ResNetSmall has no head layer to drop"):
        build_backbone("resnet_small", weights=None).drop_head()


def test_skipping_the_backbone_head_needs_one_and_no_head_training():
    from wsss_core.pipeline.config import ConfigError, load_config

    base = {"segmentation.backbone": "efficientnet_lite0", "segmentation.freeze_backbone": True}
    assert not load_config({**base, "segmentation.backbone_head": False}).segmentation.backbone_head
    with pytest.raises(ConfigError, match=r"segmentation.backbone_head=False is invalid; allowed: true with backbone resnet_small"):
        load_config({"segmentation.backbone_head": False})
    with pytest.raises(ConfigError, match=r"segmentation.backbone_head=False is invalid; allowed: true while "
                                          r"segmentation.train_backbone_head is true"):
        load_config({**base, "segmentation.backbone_head": False, "segmentation.train_backbone_head": True})
