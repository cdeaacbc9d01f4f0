"""Adam over the reference parameter groups: one lr for every group, so a new
head is not driven 10-20x harder than the backbone (the cause of the demo's
DeepLab predicting background everywhere)."""
from __future__ import annotations

import torch

from wsss_core.models import DeepLabV1, build_backbone
from wsss_core.pipeline.training import build_optimizer, set_poly_lr


def _deeplab() -> DeepLabV1:
    torch.manual_seed(0)
    return DeepLabV1(build_backbone("resnet_small", None), 3, head_channels=128, dilation=4)


def test_adam_uses_the_base_lr_in_every_group_and_keeps_weight_decay():
    model = _deeplab()
    groups = model.param_groups(1e-3, 1e-4)
    assert {1.0, 10.0, 20.0} <= {g["lr_mult"] for g in groups}
    optimizer = build_optimizer(groups, "adam")
    set_poly_lr(optimizer, 1e-3, step=0, total=10, power=0.9)
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == sorted(g["weight_decay"] for g in groups)
    sgd = build_optimizer(model.param_groups(1e-3, 1e-4), "sgd")
    set_poly_lr(sgd, 1e-3, step=0, total=10, power=0.9)
    assert max(g["lr"] for g in sgd.param_groups) == 20 * 1e-3



def test_a_frozen_backbones_trainable_blocks_keep_their_lr_scale_under_adam_and_sgd():
    from wsss_core.models import CAMNet

    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", None).freeze(train_head=True, head_blocks=1, head_blocks_lr_mult=0.03)
    net = CAMNet(backbone, num_classes=4, mode="plain")
    groups = {g["name"]: g for g in net.param_groups(1e-3, 1e-4)}
    block = {id(p) for p in backbone.net._blocks[15].parameters()}
    assert {id(p) for name, g in groups.items() if name.startswith("blocks") for p in g["params"]} == block
    assert {id(p) for p in groups["backbone_weight"]["params"]} == {id(backbone.net._conv_head.weight)}
    adam = build_optimizer(list(groups.values()), "adam")
    set_poly_lr(adam, 1e-3, step=5, total=10, power=1.0)
    lrs = {g["name"]: g["lr"] for g in adam.param_groups}
    assert lrs["blocks_weight"] == lrs["blocks_norm"] == 0.03 * lrs["backbone_weight"] == 0.03 * lrs["new_weight"] == 0.03 * 5e-4
    sgd = build_optimizer(net.param_groups(1e-3, 1e-4), "sgd")
    lrs = {g["name"]: g["lr"] for g in sgd.param_groups}
    assert abs(lrs["blocks_weight"] - 0.03 * 1e-3) < 1e-12 and abs(lrs["blocks_norm"] - 0.03 * 1e-3) < 1e-12
    assert lrs["backbone_weight"] == 1e-3 and lrs["new_weight"] == 10 * 1e-3, \
        "the reference multipliers of the other groups are unchanged"
