"""Stage 3: DeepLab-v1 trained on the refined pseudo-labels (+ FSL, as icam
train_final.py); multi-scale + flip inference followed by a dense CRF; evaluation."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.data import Batch, read_mask, write_mask
from wsss_core.losses import FeatureSimilarityLoss
from wsss_core.models import DeepLabV1, build_backbone
from wsss_core.pipeline import pool_tasks, stage_affinity, stage_cam
from wsss_core.pipeline.config import SegmentationConfig
from wsss_core.pipeline.context import StageContext, write_stage_metrics
from wsss_core.pipeline.datasets import PseudoLabelView
from wsss_core.pipeline.evaluate import score_split
from wsss_core.pipeline.inference import multiscale_probs, warm_inference_memo
from wsss_core.pipeline.overlays import overlay_panel, save_panel
from wsss_core.pipeline.training import MODEL_NAME, derived_seed, fit_on_pseudo_labels, train_once

STAGE_INDEX = 3
IGNORE = 255
AVERAGES = {  # infer_average -> (map of one pass from logits [B,K,h,w], probabilities from the mean [K,H,W])
    "logits": (lambda logits: logits, lambda mean: torch.softmax(mean, dim=0)),  # icam eval_final.py
    "probs": (lambda logits: torch.softmax(logits, dim=1), lambda mean: mean),
}


def prediction_path(stage_dir: Path, split: str, name: str) -> Path:
    return stage_dir / "predictions" / split / f"{name}.png"


def build_deeplab(c: SegmentationConfig, num_classes: int, weights: str | None) -> DeepLabV1:
    """DeepLab-v1 on the configured backbone; on its trunk's map when segmentation.backbone_head is false."""
    backbone = build_backbone(c.backbone, weights, c.output_stride)
    return DeepLabV1(backbone if c.backbone_head else backbone.drop_head(), num_classes, head_channels=c.head_channels,
                     dilation=c.dilation, dropout=c.dropout, head=c.head, train_norm=c.train_norm,
                     bn_momentum=c.bn_momentum)


def build_fsl(c: SegmentationConfig) -> FeatureSimilarityLoss | None:
    """The fixed-parameter FSL of icam train_final.py (None when segmentation.fsl is off)."""
    if not c.fsl:
        return None
    return FeatureSimilarityLoss(c.fsl_sigma, c.fsl_mu, resize="bilinear_corners", normalization=c.fsl_normalization)


def segmentation_step(
    model: DeepLabV1, batch: Batch, fsl: FeatureSimilarityLoss | None = None, fsl_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Cross-entropy of the logits [B,K,h,w] upsampled to the crop against the
    pseudo-label crop [B,H,W] (255 ignored), plus fsl_weight x L_fs of the
    RGB crop and the stride-8 softmax when `fsl`."""
    logits = model(batch.image).float()
    upsampled = F.interpolate(logits, batch.mask.shape[-2:], mode="bilinear", align_corners=False)
    parts = {"ce": F.cross_entropy(upsampled, batch.mask, ignore_index=IGNORE)}
    if fsl is not None:
        parts["fsl"] = fsl_weight * fsl(batch.rgb.to(logits.device), torch.softmax(logits, dim=1))
    parts["loss"] = sum(parts.values())
    return parts


def train(ctx: StageContext, affinity_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Train DeepLab on the refined labels -> model.pt. Its batches are drawn
    from stage 1's seed: with the same crop settings it trains on the crops the
    CAM network saw (on their new labels), so a frozen backbone's feature memo
    serves both stages; init and dropout keep stage 3's own seed."""
    c, runtime = ctx.config.segmentation, ctx.runtime
    seed = derived_seed(runtime.seed, STAGE_INDEX)
    torch.manual_seed(seed)
    model = runtime.to_device(build_deeplab(c, ctx.num_classes, c.weights))
    runtime.fix_backbone(model.backbone, c)
    dataset = PseudoLabelView(ctx.datasets["train"], affinity_dir / "labels" / "train")
    fsl = build_fsl(c)
    return fit_on_pseudo_labels(
        name="segmentation", model=model, dataset=dataset, step_fn=lambda b: segmentation_step(model, b, fsl, c.fsl_weight),
        train=c, seed=seed, batch_seed=derived_seed(runtime.seed, stage_cam.STAGE_INDEX),
        work_dir=work_dir, model_path=work_dir / MODEL_NAME, runtime=runtime,
    )


def predict(ctx: StageContext, work_dir: Path) -> None:
    """Multi-scale + flip mean of logits or softmax (infer_average), then CRF
    (in the pool, segmentation.crf_* settings) when configured ->
    predictions/<split>/*.png for the evaluated images of each split."""
    c, runtime = ctx.config.segmentation, ctx.runtime
    model = build_deeplab(c, ctx.num_classes, None)
    model.load_state_dict(torch.load(work_dir / MODEL_NAME, map_location="cpu", weights_only=True))
    runtime.fix_backbone(model.backbone, c)
    model = runtime.to_device(model).eval()
    crf = dataclasses.replace(ctx.config.crf, bilateral_sxy=c.crf_bilateral_sxy, iterations=c.crf_iterations)
    per_pass, to_probs = AVERAGES[c.infer_average]

    def probs_fn(x: torch.Tensor) -> torch.Tensor:
        return per_pass(model(x).float())

    for split, indices in _prediction_indices(ctx).items():
        dataset = ctx.datasets[split]
        (work_dir / "predictions" / split).mkdir(parents=True, exist_ok=True)
        todo = [i for i in indices if not prediction_path(work_dir, split, dataset.names[i]).is_file()]
        warm_inference_memo(model, (dataset[i] for i in todo), scales=c.infer_scales, flip=c.infer_flip,
                            runtime=runtime, desc=f"segmentation feature memo ({split})")

        def tasks(dataset=dataset, todo=todo):
            for i in todo:
                sample = dataset[i]
                probs = to_probs(multiscale_probs(probs_fn, sample, scales=c.infer_scales, flip=c.infer_flip,
                                                  mean=model.backbone.mean, std=model.backbone.std, runtime=runtime))
                yield sample.image, probs.numpy(), crf

        if c.crf:
            labels = ctx.pool.imap(pool_tasks.crf_argmax, tasks(), desc=f"segmentation CRF ({split})",
                                   total=len(todo), progress=runtime.progress)
        else:
            labels = (np.argmax(probs, axis=0).astype(np.uint8) for _, probs, _ in tasks())
        for i, label in zip(todo, labels):
            write_mask(prediction_path(work_dir, split, dataset.names[i]), label)


def _prediction_indices(ctx: StageContext) -> dict[str, list[int]]:
    """{split: image indices}: the evaluated images, plus the train overlay images."""
    wanted = {split: set(ctx.eval_indices(split)) for split in ctx.config.eval.splits}
    if ctx.overlay_indices():
        wanted.setdefault("train", set()).update(ctx.overlay_indices())
    return {split: sorted(indices) for split, indices in wanted.items()}


def evaluate(ctx: StageContext, work_dir: Path) -> dict[str, dict]:
    splits = {}
    for split in ctx.config.eval.splits:
        dataset, indices = ctx.datasets[split], ctx.eval_indices(split)
        items = (({"pred": read_mask(prediction_path(work_dir, split, dataset.names[i]))}, dataset[i].mask)
                 for i in indices)
        splits[split] = score_split(ctx.pool, items, num_classes=ctx.num_classes, bound_th=ctx.config.eval.bound_th,
                                    contour_f_absent=ctx.config.eval.contour_f_absent,
                                    total=len(indices), desc=f"segmentation eval ({split})",
                                    progress=ctx.runtime.progress)["pred"]
    return splits


def write_overlays(ctx: StageContext, cam_dir: Path, affinity_dir: Path, work_dir: Path) -> None:
    """image | CAM | refined label (training target) | DeepLab prediction | GT."""
    dataset = ctx.datasets["train"]
    for i in ctx.overlay_indices():
        sample = dataset[i]
        fg, _ = stage_cam.read_cam(cam_dir, "train", sample.name)
        panel = overlay_panel(sample.image, stage_cam.cam_max(fg, sample.image.shape[:2]),
                              read_mask(stage_affinity.label_path(affinity_dir, "train", sample.name)),
                              read_mask(prediction_path(work_dir, "train", sample.name)), sample.mask)
        save_panel(work_dir / "overlays" / f"{sample.name}.png", panel)


def run(ctx: StageContext, cam_dir: Path, affinity_dir: Path, work_dir: Path) -> None:
    trained = train_once(work_dir, lambda: train(ctx, affinity_dir, work_dir))
    predict(ctx, work_dir)
    write_stage_metrics(work_dir, evaluate(ctx, work_dir), {}, {k: v for k, v in trained.items() if k != "learned"})
    write_overlays(ctx, cam_dir, affinity_dir, work_dir)
