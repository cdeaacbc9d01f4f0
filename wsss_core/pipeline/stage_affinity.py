"""Stage 2: AffinityNet trained on pixel pairs of the confident CRF labels,
then random-walk propagation of the stage-1 CAMs (psa / SEAM)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss_core.data import Batch, EvalTransform, read_mask, write_mask
from wsss_core.data.sample import Sample
from wsss_core.models import AffinityNet, affinity_labels, affinity_loss, build_backbone, random_walk
from wsss_core.pipeline import stage_cam
from wsss_core.pipeline.config import AffinityConfig
from wsss_core.pipeline.context import StageContext, write_stage_metrics
from wsss_core.pipeline.datasets import PseudoLabelView
from wsss_core.pipeline.evaluate import score_split
from wsss_core.pipeline.inference import pad_to_multiple
from wsss_core.pipeline.overlays import overlay_panel, save_panel
from wsss_core.pipeline.training import MODEL_NAME, Runtime, derived_seed, fit_on_pseudo_labels, train_once

STAGE_INDEX = 2


def label_path(stage_dir: Path, split: str, name: str) -> Path:
    return stage_dir / "labels" / split / f"{name}.png"


def affinity_step(model: AffinityNet, batch: Batch) -> dict[str, torch.Tensor]:
    """Pair affinities [B,P,h,w] of the crop vs. pair labels from the crop's
    label map resized (nearest) to the h x w feature map; psa's balanced loss."""
    affinity = model(batch.image)
    small = F.interpolate(batch.mask[:, None].float(), affinity.shape[-2:], mode="nearest")[:, 0].long()
    bg_pos, fg_pos, neg = affinity_labels(small, model.radius)
    return {"loss": affinity_loss(affinity, bg_pos, fg_pos, neg)}


def train(ctx: StageContext, cam_dir: Path, work_dir: Path) -> dict[str, Any]:
    c, runtime = ctx.config.affinity, ctx.runtime
    seed = derived_seed(runtime.seed, STAGE_INDEX)
    torch.manual_seed(seed)
    model = runtime.to_device(AffinityNet(build_backbone(c.backbone, c.weights, c.output_stride), radius=c.radius))
    runtime.fix_backbone(model.backbone, c)
    dataset = PseudoLabelView(ctx.datasets["train"], cam_dir / "labels" / "train")
    return fit_on_pseudo_labels(
        name="affinity", model=model, dataset=dataset, step_fn=lambda b: affinity_step(model, b), train=c, seed=seed,
        work_dir=work_dir, model_path=work_dir / MODEL_NAME, runtime=runtime,
    )


@torch.no_grad()
def propagate(model: AffinityNet, sample: Sample, fg: np.ndarray, present: np.ndarray, c: AffinityConfig,
              runtime: Runtime) -> np.ndarray:
    """Random walk of one image's CAMs (psa's infer_aff): background
    (1 - max fg)^rw_alpha, CAMs average-pooled to the backbone-stride map of the
    padded image, propagated with T = D^-1 A^beta for `iterations` steps,
    upsampled, cropped; -> uint8 label [H,W] (argmax over bg + present classes)."""
    height, width = sample.image.shape[:2]
    stride = model.backbone.stride
    x = pad_to_multiple(EvalTransform(1.0, model.backbone.mean, model.backbone.std)(sample).image[None], stride)
    with runtime.autocast():
        affinity = model.affinity(runtime.images(x)).float()
    cams = torch.from_numpy(fg)
    bg = (1 - cams.max(dim=0, keepdim=True).values) ** c.rw_alpha if fg.shape[0] else torch.ones(1, height, width)
    full = pad_to_multiple(torch.cat([bg, cams])[None], stride)
    feat_hw = (full.shape[-2] // stride, full.shape[-1] // stride)
    if feat_hw[0] * feat_hw[1] != affinity.shape[-1]:
        raise ValueError(f"affinity map has {affinity.shape[-1]} pixels; expected {feat_hw[0]} x {feat_hw[1]} (stride {stride})")
    small = F.adaptive_avg_pool2d(full, feat_hw).to(runtime.device)
    walked = random_walk(small, affinity, beta=c.beta, iterations=c.iterations)
    walked = F.interpolate(walked, full.shape[-2:], mode="bilinear", align_corners=False)[0, :, :height, :width]
    classes = np.concatenate([[0], present]).astype(np.uint8)
    return classes[walked.argmax(dim=0).cpu().numpy()]


def infer_labels(ctx: StageContext, cam_dir: Path, work_dir: Path) -> None:
    """Refined labels of every train image and the evaluated val images -> labels/<split>/*.png."""
    c, runtime = ctx.config.affinity, ctx.runtime
    model = AffinityNet(build_backbone(c.backbone, None, c.output_stride), radius=c.radius)
    model.load_state_dict(torch.load(work_dir / MODEL_NAME, map_location="cpu", weights_only=True))
    runtime.fix_backbone(model.backbone, c)
    model = runtime.to_device(model).eval()
    for split in ("train", "val"):
        dataset = ctx.datasets[split]
        indices = range(len(dataset)) if split == "train" else ctx.eval_indices(split)
        (work_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in tqdm(indices, desc=f"random walk ({split})", disable=not runtime.progress, leave=False, unit="img"):
            sample = dataset[i]
            path = label_path(work_dir, split, sample.name)
            if not path.is_file():
                fg, present = stage_cam.read_cam(cam_dir, split, sample.name)
                write_mask(path, propagate(model, sample, fg, present, c, runtime))


def evaluate(ctx: StageContext, work_dir: Path) -> dict[str, dict]:
    splits = {}
    for split in ctx.config.eval.splits:
        dataset, indices = ctx.datasets[split], ctx.eval_indices(split)
        items = (({"rw": read_mask(label_path(work_dir, split, dataset.names[i]))}, dataset[i].mask) for i in indices)
        splits[split] = score_split(ctx.pool, items, num_classes=ctx.num_classes, bound_th=ctx.config.eval.bound_th,
                                    contour_f_absent=ctx.config.eval.contour_f_absent,
                                    total=len(indices), desc=f"affinity eval ({split})",
                                    progress=ctx.runtime.progress)["rw"]
    return splits


def write_overlays(ctx: StageContext, cam_dir: Path, work_dir: Path) -> None:
    """image | CAM | CRF label (training target) | random-walk label | GT."""
    dataset = ctx.datasets["train"]
    for i in ctx.overlay_indices():
        sample = dataset[i]
        fg, _ = stage_cam.read_cam(cam_dir, "train", sample.name)
        panel = overlay_panel(sample.image, stage_cam.cam_max(fg, sample.image.shape[:2]),
                              read_mask(stage_cam.crf_label_path(cam_dir, sample.name)),
                              read_mask(label_path(work_dir, "train", sample.name)), sample.mask)
        save_panel(work_dir / "overlays" / f"{sample.name}.png", panel)


def run(ctx: StageContext, cam_dir: Path, work_dir: Path) -> None:
    trained = train_once(work_dir, lambda: train(ctx, cam_dir, work_dir))
    infer_labels(ctx, cam_dir, work_dir)
    write_stage_metrics(work_dir, evaluate(ctx, work_dir), {}, {k: v for k, v in trained.items() if k != "learned"})
    write_overlays(ctx, cam_dir, work_dir)
