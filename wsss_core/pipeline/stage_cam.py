"""Stage 1: train the CAM network (plain or SEAM), infer multi-scale CAMs,
build the CRF pseudo-labels for stage 2 and evaluate the CAM pseudo-labels."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from wsss_core.cams import cam_pseudo_label, image_labels_with_background
from wsss_core.data import Batch, read_mask, write_mask
from wsss_core.formulations import FORMULATIONS, CamSettings, training_maps
from wsss_core.losses import FeatureSimilarityLoss
from wsss_core.metrics import PointingGame
from wsss_core.models import CAMNet, build_backbone
from wsss_core.pipeline import pool_tasks
from wsss_core.pipeline.config import CamConfig
from wsss_core.pipeline.context import StageContext, write_stage_metrics
from wsss_core.pipeline.datasets import ImageLevelView, present_classes
from wsss_core.pipeline.evaluate import finite, score_split
from wsss_core.pipeline.inference import multiscale_probs, warm_inference_memo
from wsss_core.pipeline.overlays import overlay_panel, save_panel
from wsss_core.pipeline.training import (
    MODEL_NAME,
    build_optimizer,
    derived_seed,
    fit,
    make_batches,
    steps_per_epoch,
    train_once,
    train_transform,
)

STAGE_INDEX = 1


class CAMTrainer(nn.Module):
    """The CAM network with the FSL parameters, trained together.

    Loss per batch: the parts of cam.formulation (wsss_core.formulations) on
    the branch x and, in mode "seam", the branch x resized by seam_scale, plus
    fsl_weight * L_fs (Eqs. 9-12) on the RGB crop in [0, 1] and the first
    branch's maps (softmax, or per-class sigmoid when naive).
    """

    def __init__(self, net: CAMNet, config: CamConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.generator = generator
        self.formulation = FORMULATIONS[config.formulation]
        self.settings = CamSettings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(CamSettings)})
        self.fsl = FeatureSimilarityLoss(
            config.fsl_sigma_init, config.fsl_mu_init, config.fsl_mass, config.fsl_resize,
            normalization=config.fsl_normalization, learn=config.fsl_learn,
        ) if config.fsl else None

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        groups = self.net.param_groups(lr, weight_decay)
        if self.fsl is not None and self.fsl.learn:
            groups.append({"name": "fsl", "params": list(self.fsl.parameters()), "lr": lr * 10, "lr_mult": 10.0, "weight_decay": 0.0})
        return groups

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        x = batch.image
        labels = image_labels_with_background(batch.labels.to(x.device))
        out = self.net(x)
        out2 = None
        if c.mode == "seam":
            out2 = self.net(F.interpolate(x, scale_factor=c.seam_scale, mode="bilinear", align_corners=True))
        parts = self.formulation.loss(out, out2, labels, self.settings, self.generator)
        if self.fsl is not None:
            maps = training_maps(out.logits.float(), c.naive)
            parts["fsl"] = c.fsl_weight * self.fsl(batch.rgb.to(x.device), maps)
        parts["loss"] = sum(parts.values())
        return parts


def build_cam_net(config: CamConfig, num_classes: int, seed: int) -> CAMNet:
    torch.manual_seed(seed)
    backbone = build_backbone(config.backbone, config.weights, config.output_stride)
    return CAMNet(backbone, num_classes, mode=config.mode,
                  dropout=config.dropout, pcm_source=FORMULATIONS[config.formulation].pcm_source)


def train(ctx: StageContext, work_dir: Path) -> dict[str, Any]:
    """Train (resuming from work_dir) and save model.pt; returns learned values and history."""
    c, runtime = ctx.config.cam, ctx.runtime
    seed = derived_seed(runtime.seed, STAGE_INDEX)
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    trainer = runtime.to_device(CAMTrainer(build_cam_net(c, ctx.num_classes, seed), c, generator))
    runtime.fix_backbone(trainer.net.backbone, c)
    optimizer = build_optimizer(trainer.param_groups(c.lr, c.weight_decay), c.optimizer, c.momentum)
    dataset = ImageLevelView(ctx.datasets["train"])
    transform = train_transform(c, trainer.net.backbone)

    def epoch_batches(epoch: int):
        for batch in make_batches(dataset, transform, seed=seed, epoch=epoch, batch_size=c.batch_size,
                                  workers=runtime.loader_workers):
            yield Batch(runtime.images(batch.image), batch.rgb.to(runtime.device), None,
                        batch.labels.to(runtime.device), batch.names)

    state = fit(
        name="cam", model=trainer, optimizer=optimizer, step_fn=trainer, epoch_batches=epoch_batches,
        num_steps=steps_per_epoch(len(dataset), c.batch_size), train=c, work_dir=work_dir,
        generator=generator, runtime=runtime,
    )
    torch.save(trainer.net.state_dict(), work_dir / MODEL_NAME)
    learned = {"fsl_sigma": None, "fsl_mu": None}
    if trainer.fsl is not None and trainer.fsl.learn:
        learned = {"fsl_sigma": trainer.fsl.sigma, "fsl_mu": trainer.fsl.mu}
        runtime.log.info("cam: learned FSL sigma %.4f, mu %.4f", learned["fsl_sigma"], learned["fsl_mu"])
    return {"learned": learned, "history": state.history, "train_images": state.images, "train_seconds": state.seconds}


def load_cam_net(config: CamConfig, num_classes: int, stage_dir: Path, runtime: Any) -> CAMNet:
    net = CAMNet(build_backbone(config.backbone, None, config.output_stride), num_classes, mode=config.mode,
                 dropout=config.dropout, pcm_source=FORMULATIONS[config.formulation].pcm_source)
    net.load_state_dict(torch.load(stage_dir / MODEL_NAME, map_location="cpu", weights_only=True))
    runtime.fix_backbone(net.backbone, config)
    return runtime.to_device(net).eval()


def cam_path(stage_dir: Path, split: str, name: str) -> Path:
    return stage_dir / "cams" / split / f"{name}.npz"


def crf_label_path(stage_dir: Path, name: str) -> Path:
    return stage_dir / "labels" / "train" / f"{name}.png"


def read_cam(stage_dir: Path, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (fg_cams float32 [C',H,W] max-normalised, present int64 [C'] in 1..C)."""
    with np.load(cam_path(stage_dir, split, name)) as data:
        return data["fg"].astype(np.float32), data["present"].astype(np.int64)


def infer_cams(ctx: StageContext, net: CAMNet, work_dir: Path) -> None:
    """Label-conditioned, normalised multi-scale CAMs of every train image
    and of the evaluated val images -> cams/<split>/<name>.npz (float16).

    Per forward pass the formulation's maps of the background and the image's
    classes (pixel_maps); their mean over scales and flips, foreground part,
    through the formulation's finalize (icam: per-pixel non-max suppression
    and max-normalisation; seam: min-max normalisation).
    """
    c, runtime = ctx.config.cam, ctx.runtime
    formulation = FORMULATIONS[c.formulation]
    for split in ("train", "val"):
        dataset = ctx.datasets[split]
        indices = range(len(dataset)) if split == "train" else ctx.eval_indices(split)
        (work_dir / "cams" / split).mkdir(parents=True, exist_ok=True)
        todo = [i for i in indices if not cam_path(work_dir, split, dataset.names[i]).is_file()]
        warm_inference_memo(net, (dataset[i] for i in todo), scales=c.infer_scales, flip=c.infer_flip,
                            runtime=runtime, desc=f"cam feature memo ({split})")
        for index in tqdm(todo, desc=f"cam inference ({split})", disable=not runtime.progress, leave=False, unit="img"):
            sample = dataset[index]
            path = cam_path(work_dir, split, sample.name)
            present = present_classes(sample.labels)
            keep = torch.from_numpy(np.concatenate([[0], present]))

            def probs_fn(x: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:
                return formulation.pixel_maps(net(x), keep.to(x.device), c.naive)

            probs = multiscale_probs(probs_fn, sample, scales=c.infer_scales, flip=c.infer_flip,
                                     mean=net.backbone.mean, std=net.backbone.std, runtime=runtime)
            fg = formulation.finalize(probs[1:]) if present.size else probs[1:]
            tmp = path.with_name(f".{path.stem}.tmp.npz")
            np.savez(tmp, fg=fg.numpy().astype(np.float16), present=present)
            tmp.replace(path)


def make_crf_labels(ctx: StageContext, work_dir: Path) -> None:
    """Confident CRF labels (alpha low / high) of every train image -> labels/train/*.png."""
    c = ctx.config.cam
    crf = ctx.config.crf
    dataset = ctx.datasets["train"]
    (work_dir / "labels" / "train").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(len(dataset)) if not crf_label_path(work_dir, dataset.names[i]).is_file()]

    def tasks():
        for i in todo:
            sample = dataset[i]
            fg, present = read_cam(work_dir, "train", sample.name)
            yield (sample.image, fg, present, c.crf_alpha_low, c.crf_alpha_high, crf)

    labels = ctx.pool.imap(pool_tasks.confident_crf_label, tasks(), desc="cam CRF labels", total=len(todo),
                           progress=ctx.runtime.progress)
    for i, label in zip(todo, labels):
        write_mask(crf_label_path(work_dir, dataset.names[i]), label)


def cam_label(fg: np.ndarray, present: np.ndarray, num_classes: int, bg: str, threshold: float) -> np.ndarray:
    """The CAM pseudo-label (reference rule, wsss_core.cams.cam_pseudo_label) of
    the present classes' maps fg [C',H,W] -> uint8 [H,W] in {0..C}."""
    full = torch.zeros(num_classes - 1, *fg.shape[1:])
    full[torch.from_numpy(present - 1)] = torch.from_numpy(fg)
    label = cam_pseudo_label(full, present.tolist(), bg=bg, bg_threshold=threshold)
    return label.numpy().astype(np.uint8)


def evaluate(ctx: StageContext, work_dir: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """CAM pseudo-labels scored on each split. With eval.bg_thresholds (and
    cam.bg "threshold") the thresholds are swept on the train split, the best
    (by mIoU) is applied to every split, and the whole curve is reported.
    Each split's metrics also hold the pointing game of the CAMs
    (wsss_core.metrics.PointingGame): "pointing", its mean over the classes
    that occur, and "per_class_pointing" per class id (None: class absent)."""
    c, e = ctx.config.cam, ctx.config.eval
    sweep = [float(t) for t in e.bg_thresholds] if c.bg == "threshold" and e.bg_thresholds else [c.bg_threshold]
    curves: dict[str, dict[str, dict]] = {}
    pointing: dict[str, dict[str, Any]] = {}
    for split in e.splits:
        dataset = ctx.datasets[split]
        indices = ctx.eval_indices(split)
        game = PointingGame(ctx.num_classes)

        def items(dataset=dataset, indices=indices, split=split, game=game):
            """The sweep's labels and the mask per image; each CAM also feeds the pointing game (one read)."""
            for i in indices:
                sample = dataset[i]
                fg, present = read_cam(work_dir, split, sample.name)
                if present.size:
                    game.update(fg, present, sample.mask)
                yield {f"{t:g}": cam_label(fg, present, ctx.num_classes, c.bg, t) for t in sweep}, sample.mask

        curves[split] = score_split(ctx.pool, items(), num_classes=ctx.num_classes, bound_th=e.bound_th,
                                    contour_f_absent=e.contour_f_absent,
                                    total=len(indices), desc=f"cam eval ({split})", progress=ctx.runtime.progress)
        played = game.compute()
        pointing[split] = {"pointing": finite(played["mean"]),
                           "per_class_pointing": [finite(rate) for rate in played["per_class"]]}
    select_split = "train" if "train" in curves else "val"
    best = max(sweep, key=lambda t: curves[select_split][f"{t:g}"]["miou"])
    splits = {split: dict(curve[f"{best:g}"], bg_threshold=best, **pointing[split]) for split, curve in curves.items()}
    extra = {
        "bg_threshold": best,
        "bg_curve": {split: {t: v["miou"] for t, v in curve.items()} for split, curve in curves.items()},
    }
    return splits, extra


def write_overlays(ctx: StageContext, work_dir: Path) -> None:
    """image | CAM | CRF label (stage-2 target) | CAM pseudo-label | GT, for the first train images."""
    c = ctx.config.cam
    threshold = json.loads((work_dir / "metrics.json").read_text())["extra"]["bg_threshold"]
    dataset = ctx.datasets["train"]
    for i in ctx.overlay_indices():
        sample = dataset[i]
        fg, present = read_cam(work_dir, "train", sample.name)
        panel = overlay_panel(sample.image, cam_max(fg, sample.image.shape[:2]),
                              read_mask(crf_label_path(work_dir, sample.name)),
                              cam_label(fg, present, ctx.num_classes, c.bg, threshold), sample.mask)
        save_panel(work_dir / "overlays" / f"{sample.name}.png", panel)


def cam_max(fg: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Max over the present classes' CAMs [H,W] (zeros when none)."""
    return fg.max(axis=0) if fg.shape[0] else np.zeros(shape, dtype=np.float32)


def run(ctx: StageContext, work_dir: Path) -> None:
    """Everything of stage 1 into work_dir (each step skips what is already there)."""
    trained = train_once(work_dir, lambda: train(ctx, work_dir))
    net = load_cam_net(ctx.config.cam, ctx.num_classes, work_dir, ctx.runtime)
    infer_cams(ctx, net, work_dir)
    make_crf_labels(ctx, work_dir)
    splits, extra = evaluate(ctx, work_dir)
    write_stage_metrics(work_dir, splits, trained["learned"], {**extra, **{k: v for k, v in trained.items() if k != "learned"}})
    write_overlays(ctx, work_dir)
