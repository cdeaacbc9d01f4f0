"""Integration on real photographs: a small VOC set ($WSSS_VOC_MINI) through the VOC
loader, the transforms, a pretrained EfficientNet-Lite0 CAM forward pass,
CAM pseudo-labels and the metrics. Skipped, with the reason, without the folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_core.cams import cam_pseudo_label, softmax_cams
from wsss_core.data import EvalTransform, TrainTransform, VOCDataset
from wsss_core.metrics import ContourFScore, MeanIoU
from wsss_core.models import CAMNet, build_backbone

VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"))

pytestmark = pytest.mark.skipif(not VOC_MINI.is_dir(), reason=f"real VOC sample not found at {VOC_MINI}")


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0", weights="imagenet").eval()


def test_loader_transforms_cam_forward_and_metrics_on_real_photos(backbone):
    val = VOCDataset(VOC_MINI, "val")
    assert len(val) == 50 and val.num_classes == 21
    samples = [val[i] for i in range(4)]
    for sample in samples:
        present = set(np.unique(sample.mask).tolist()) - {0, 255}
        assert present == {c + 1 for c in np.flatnonzero(sample.labels)}

    train = TrainTransform(96, resize_long=(96, 160), mean=backbone.mean, std=backbone.std)
    crops = [train(sample, seed) for seed, sample in enumerate(samples)]
    assert all(c.image.shape == (3, 96, 96) and c.mask.shape == (96, 96) for c in crops)
    assert torch.equal(train(samples[0], 7).image, train(samples[0], 7).image)

    model = CAMNet(backbone, num_classes=21).eval()
    evaluate = EvalTransform(scale=0.5, mean=backbone.mean, std=backbone.std)
    miou, contour = MeanIoU(21), ContourFScore(21)
    oracle_miou, oracle_contour = MeanIoU(21), ContourFScore(21)
    for sample in samples:
        item = evaluate(sample)
        image = item.image[None]
        with torch.no_grad():
            out = model(image)
        h, w = image.shape[-2:]
        assert out.logits.shape == (1, 21, -(-h // 8), -(-w // 8))
        assert torch.allclose(out.probs.sum(1), torch.ones(1)) and torch.isfinite(out.logits).all()

        labels = torch.cat([torch.ones(1), torch.from_numpy(sample.labels)])[None]
        conditioned = softmax_cams(out.logits, labels)
        cams = F.interpolate(conditioned, size=sample.mask.shape, mode="bilinear", align_corners=False)[0]
        present = [int(c) + 1 for c in np.flatnonzero(sample.labels)]
        pred = cam_pseudo_label(cams[1:], present).numpy()
        assert set(np.unique(pred).tolist()) <= {0, *present}
        miou.update(pred, sample.mask)
        contour.update(pred, sample.mask)
        oracle_miou.update(sample.mask.copy(), sample.mask)
        oracle_contour.update(np.where(sample.mask == 255, 0, sample.mask), sample.mask)

    assert oracle_miou.compute()["mean"] == pytest.approx(1.0)
    assert oracle_contour.compute()["mean"] == pytest.approx(1.0)
    scores = miou.compute(), contour.compute()
    for score in scores:
        assert 0.0 <= score["mean"] < 1.0


def test_real_photo_cpu_preset_loads_on_the_mini_set():
    """search_spaces/pipelines/voc_cpu.yaml: valid on the mini set, stride 16 and frozen
    pretrained backbones in every stage."""
    from wsss_core.pipeline.config import load_config

    repo = Path(__file__).resolve().parents[1]
    config = load_config(repo / "search_spaces" / "pipelines" / "voc_cpu.yaml", [f"data.root={VOC_MINI}"])
    for stage in (config.cam, config.affinity, config.segmentation):
        assert stage.backbone == "efficientnet_lite0" and stage.output_stride == 16 and stage.freeze_backbone
    assert len(VOCDataset(VOC_MINI, config.data.train_split)) == 150
