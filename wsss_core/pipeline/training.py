"""The training loop every stage shares: seeded batches, SGD with poly decay,
AMP on CUDA, epoch checkpoints and resume, a tqdm bar per epoch."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wsss_core.data import Batch, ColorJitter, TrainTransform, TransformedDataset, collate_samples
from wsss_core.data.sample import Sample
from wsss_core.models import Backbone
from wsss_core.models.feature_memo import default_memo_dir
from wsss_core.pipeline.cache import atomic_write_text
from wsss_core.pipeline.checkpoint import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint
from wsss_core.pipeline.config import ConfigError, RuntimeConfig, TrainingConfig
from wsss_core.pipeline.native_bf16 import native_bf16


MODEL_NAME = "model.pt"
TRAINED_NAME = "trained.json"
TRAINED_FILES = (MODEL_NAME, TRAINED_NAME)
"""What a stage's training leaves in its folder: the weights, then (last) the
training summary. Together they let a run with the same training key skip
training (the runner shares them between such runs)."""


def train_once(work_dir: Path, train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The stage's training summary (loss history, images, seconds, learned
    values): read from work_dir/trained.json when training is already done
    there (its model.pt beside it), else ``train()``, which saves model.pt,
    and its summary written to trained.json."""
    path = work_dir / TRAINED_NAME
    if path.is_file():
        return json.loads(path.read_text())
    summary = train()
    atomic_write_text(path, json.dumps(summary, sort_keys=True))
    return summary


def freeze_as_configured(backbone: Backbone, config: TrainingConfig) -> bool:
    """Freeze a stage's backbone as its config says (freeze_backbone, with
    train_backbone_head and train_backbone_blocks); True when it is frozen."""
    if config.freeze_backbone:
        backbone.freeze(train_head=config.train_backbone_head, head_blocks=config.train_backbone_blocks,
                        head_blocks_lr_mult=config.backbone_blocks_lr_mult)
    return config.freeze_backbone


@dataclass(frozen=True)
class EpochRecord:
    """One finished training epoch of a stage, as reported to `Runtime.on_epoch`.

    epoch: 1-based, of `epochs`; step: optimiser steps done in the stage so far;
    losses: the epoch's mean of each loss part ("loss" is the minimised sum);
    lr: the base learning rate after the epoch's last step (poly schedule);
    images and seconds: this epoch's training images and wall seconds."""

    stage: str
    epoch: int
    epochs: int
    step: int
    losses: dict[str, float]
    lr: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Runtime:
    """Resolved runtime: device, AMP (CUDA only), channels_last, seed, loader
    workers, bfloat16 frozen backbones, whether to draw progress bars, the run's logger, what to call
    after each epoch checkpoint is written (e.g. upload it to a shared store),
    what to call with each finished epoch's EpochRecord (e.g. report it to a
    tracker), and the folder of the machine's feature memo (None: off)."""

    device: torch.device
    amp: bool
    channels_last: bool
    seed: int
    loader_workers: int
    progress: bool
    log: logging.Logger
    on_checkpoint: Callable[[], None] | None = None
    on_epoch: Callable[[EpochRecord], None] | None = None
    feature_memo: Path | None = None
    frozen_bf16: bool = False

    @classmethod
    def from_config(cls, config: RuntimeConfig, *, progress: bool, log: logging.Logger) -> Runtime:
        cuda = torch.cuda.is_available()
        if config.device == "cuda" and not cuda:
            raise ConfigError("runtime.device='cuda' is invalid here: CUDA is not available; allowed: auto, cpu")
        device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu")
        on_cuda = device.type == "cuda"
        if config.frozen_bf16 and native_bf16(device) is False:
            log.warning(
                "runtime.frozen_bf16 is on, but this %s has no native bfloat16: the frozen backbones' "
                "maps will compute slower than in float32; set runtime.frozen_bf16=false", device.type,
            )
        return cls(
            device=device,
            amp=config.amp and on_cuda,
            channels_last=config.channels_last,
            seed=config.seed,
            loader_workers=config.loader_workers,
            progress=progress,
            log=log,
            feature_memo=default_memo_dir() if config.feature_memo else None,
            frozen_bf16=config.frozen_bf16,
        )

    def to_device(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def fix_backbone(self, backbone: Backbone, config: TrainingConfig) -> None:
        """freeze_as_configured, for training and inference alike; a frozen
        backbone computes its fixed maps in bfloat16 when `frozen_bf16` is on and
        reads them from the feature memo when that is on."""
        if not freeze_as_configured(backbone, config):
            return
        backbone.compute_fixed_in(torch.bfloat16 if self.frozen_bf16 else None)
        if self.feature_memo is not None:
            backbone.share_features(self.feature_memo)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch [B,3,H,W] on the device (channels_last when enabled)."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, enabled=self.amp)


def derived_seed(seed: int, stage_index: int) -> int:
    """A per-stage seed, so stages draw independent streams from one run seed."""
    return int(np.random.SeedSequence([seed, stage_index]).generate_state(1)[0])


def make_batches(
    dataset: object,
    transform: Callable[[Sample, np.random.Generator], object],
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    workers: int,
) -> Iterable[Batch]:
    """The batches of one epoch: order from rng(seed, epoch), augmentation from
    rng(seed, epoch, index) (so any `workers` gives the same batches), the last
    incomplete batch dropped unless it would be the only one."""
    wrapped = TransformedDataset(dataset, transform, seed=seed)
    wrapped.set_epoch(epoch)
    order = np.random.default_rng([seed, epoch, 2**31]).permutation(len(wrapped)).tolist()
    size = min(batch_size, len(order))
    chunks = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
    return torch.utils.data.DataLoader(
        wrapped, batch_sampler=chunks, collate_fn=collate_samples, num_workers=workers
    )


def train_transform(config: TrainingConfig, backbone: nn.Module) -> TrainTransform:
    """psa/SEAM augmentation: random long side in resize_long (None: none), colour jitter, flip, crop."""
    return TrainTransform(
        config.crop_size, None if config.resize_long is None else tuple(config.resize_long), flip=True,
        color_jitter=ColorJitter() if config.color_jitter else None, mean=backbone.mean, std=backbone.std,
    )


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    return max(1, num_items // batch_size) if num_items >= batch_size else 1


def build_optimizer(param_groups: list[dict], kind: str = "sgd", momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with `momentum` (reference; see TrainingConfig.momentum) or Adam over the
    models' groups, each with its own lr, lr_mult and weight_decay.

    Adam drops the groups' lr multipliers (all at the base lr): psa/SEAM's x10/x20
    for new layers make up for SGD's small gradients there, but Adam's step does
    not scale with the gradient, so they become 10-20x larger steps, which killed
    every ReLU of the demo's DeepLab head (constant logits: background everywhere).
    It keeps a group's "lr_scale" (a frozen backbone's trainable blocks, `reference_param_groups`).
    """
    if kind == "adam":
        groups = [{**g, "lr": g["lr"] / g.get("lr_mult", 1.0) * g.get("lr_scale", 1.0),
                   "lr_mult": g.get("lr_scale", 1.0)} for g in param_groups]
        return torch.optim.Adam(groups, lr=groups[0]["lr"])
    return torch.optim.SGD(param_groups, lr=param_groups[0]["lr"], momentum=momentum)


def set_poly_lr(optimizer: torch.optim.Optimizer, base_lr: float, step: int, total: int, power: float) -> None:
    """lr = base_lr * lr_mult * (1 - step / total) ** power for every group."""
    factor = (1 - min(step, total) / total) ** power
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_mult", 1.0) * factor


def fit(
    *,
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[Batch], dict[str, torch.Tensor]],
    epoch_batches: Callable[[int], Iterable[Batch]],
    num_steps: int,
    train: TrainingConfig,
    work_dir: Path,
    generator: torch.Generator,
    runtime: Runtime,
) -> TrainState:
    """Train `model` for train.epochs epochs, resuming from work_dir/checkpoint.pt.

    step_fn(batch) -> {"loss": scalar to minimise, other named scalars to log};
    epoch_batches(epoch) -> that epoch's batches; num_steps: batches per epoch.
    A checkpoint is written after every epoch. Divergence stops training at the
    step it happens with a one-line FloatingPointError ("loss diverged at stage
    <name>, epoch N, step S: ..."): a non-finite loss term, a non-finite
    parameter after the update, or a FloatingPointError raised by step_fn.
    """
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp)
    path = work_dir / CHECKPOINT_NAME
    state = load_checkpoint(path, model, optimizer, scaler, generator) or TrainState()
    if state.epoch:
        runtime.log.info("%s: resuming after epoch %d/%d from %s", name, state.epoch, train.epochs, path)
    total = train.epochs * num_steps
    warmed = time.perf_counter()  # the training's fixed maps, computed ahead: training time too
    warm_feature_memo(name, model, epoch_batches, range(state.epoch, train.epochs), num_steps, runtime)
    state.seconds += time.perf_counter() - warmed
    for epoch in range(state.epoch, train.epochs):
        model.train()
        started = time.perf_counter()
        sums: dict[str, float] = {}
        count = 0
        images = state.images
        bar = tqdm(
            epoch_batches(epoch), total=num_steps, desc=f"{name} epoch {epoch + 1}/{train.epochs}",
            disable=not runtime.progress, leave=False, unit="batch",
        )
        for step, batch in enumerate(bar, start=1):
            diverged = functools.partial(_diverged, name, epoch + 1, step, train.lr)
            set_poly_lr(optimizer, train.lr, state.step, total, train.poly_power)
            try:
                with runtime.autocast():
                    parts = step_fn(batch)
            except FloatingPointError as error:
                raise diverged(str(error)) from None
            except (ValueError, RuntimeError) as error:
                cause = _exploded_parameter(model) if state.step else None
                if cause is None:
                    raise
                raise diverged(f"{cause} after the last update, then {type(error).__name__}: "
                               f"{str(error).splitlines()[0]}") from error
            loss = parts["loss"]
            values = {key: float(value.detach()) for key, value in parts.items()}
            bad = [f"{key}={value}" for key, value in values.items() if not math.isfinite(value)]
            if bad:
                raise diverged(", ".join(bad))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            broken = _exploded_parameter(model, limit=math.inf)
            if broken is not None:
                raise diverged(f"{broken} after the update (loss {values['loss']:.4g})")
            state.step += 1
            state.images += len(batch.names)
            count += 1
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        means = {key: value / max(count, 1) for key, value in sums.items()}
        state.history.append(means)
        state.epoch = epoch + 1
        epoch_seconds = time.perf_counter() - started
        state.seconds += epoch_seconds
        save_checkpoint(path, state, model, optimizer, scaler, generator)
        if runtime.on_checkpoint is not None:
            runtime.on_checkpoint()
        if runtime.on_epoch is not None:
            runtime.on_epoch(EpochRecord(name, state.epoch, train.epochs, state.step, means,
                                         optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0),
                                         state.images - images, epoch_seconds))
        runtime.log.info(
            "%s epoch %d/%d: %s", name, state.epoch, train.epochs,
            ", ".join(f"{k} {v:.4f}" for k, v in means.items()),
        )
    for backbone in (m for m in model.modules() if isinstance(m, Backbone) and m.memo is not None):
        runtime.log.info("%s: %s", name, backbone.memo.summary())
    return state


def warm_feature_memo(
    name: str,
    model: nn.Module,
    epoch_batches: Callable[[int], Iterable[Batch]],
    epochs: range,
    num_steps: int,
    runtime: Runtime,
) -> None:
    """Before training: store the fixed backbone maps of every batch of
    `epochs` in the feature memo (Backbone.warm_features), so processes that
    train on the same batches at once (a sweep's first trials) compute each
    batch once between them. Skipped when a process has already gone through
    the same batches (named by `_batches_name`): a later trial of the sweep
    would only draw and augment every batch once more to find it stored.
    No-op without a memo."""
    nets = [m for m in model.modules() if isinstance(getattr(m, "backbone", None), Backbone) and m.backbone.memo is not None]
    if not nets:
        return
    memos = list({id(net.backbone.memo): net.backbone.memo for net in nets}.values())
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws its base seed from torch's global generator
        batches_name = _batches_name(nets, epoch_batches, epochs, num_steps, runtime)
        if all(memo.was_warmed(batches_name) for memo in memos):
            runtime.log.info("%s: the feature memo holds these batches already (warmed by an earlier run)", name)
            return
        batches = (batch for epoch in epochs for batch in epoch_batches(epoch))
        for batch in tqdm(batches, total=len(epochs) * num_steps, desc=f"{name} feature memo",
                          disable=not runtime.progress, leave=False, unit="batch"):
            with runtime.autocast():
                for net in nets:
                    net.backbone.warm_features(batch.image, net.backbone_maps)
    for memo in memos:
        memo.record_warmed(batches_name)


def _batches_name(
    nets: list[nn.Module], epoch_batches: Callable[[int], Iterable[Batch]], epochs: range, num_steps: int,
    runtime: Runtime,
) -> str:
    """A name (32 hex) for the batches of `epochs`: their count and the memo keys of each
    epoch's first batch (which hold the seed's order and augmentation, the data and the
    backbone's weights), without drawing the other batches."""
    digest = hashlib.blake2b(f"{list(epochs)}|{num_steps}".encode(), digest_size=16)
    for epoch in epochs:
        first = next(iter(epoch_batches(epoch)))
        with runtime.autocast():
            for net in nets:
                digest.update(net.backbone.memo.key(first.image, net.backbone_maps).encode())
    return digest.hexdigest()


EXPLODED = 1e4  # a parameter this large, when a forward pass fails, means training diverged


def _diverged(stage: str, epoch: int, step: int, lr: float, detail: str) -> FloatingPointError:
    return FloatingPointError(
        f"loss diverged at stage {stage}, epoch {epoch}, step {step}: {detail}; try a lower {stage}.lr (now {lr:g})"
    )


def _exploded_parameter(model: nn.Module, limit: float = EXPLODED) -> str | None:
    """"parameter <name> reached <value>" for the first parameter holding a NaN,
    an inf or a magnitude above `limit`, else None (one device sync)."""
    named = [(n, p) for n, p in model.named_parameters() if p.numel()]
    peaks = torch.stack([p.detach().abs().max().float() for _, p in named])
    bad = ~(torch.isfinite(peaks) & (peaks <= limit))
    if not bool(bad.any()):
        return None
    index = int(bad.nonzero()[0])
    return f"parameter {named[index][0]} reached {float(peaks[index]):.3g}"


def fit_on_pseudo_labels(
    *,
    name: str,
    model: nn.Module,
    dataset: Sequence[Sample],
    step_fn: Callable[[Batch], dict[str, torch.Tensor]],
    train: TrainingConfig,
    seed: int,
    work_dir: Path,
    model_path: Path,
    runtime: Runtime,
    batch_seed: int | None = None,
) -> dict[str, Any]:
    """Stages 2 and 3: train `model` (with .param_groups and .backbone) on
    `dataset`, whose masks are the upstream pseudo-labels, save its weights to
    model_path, and return the training summary kept with the stage.
    `batch_seed` (default `seed`) draws the batches, `seed` the rest (dropout)."""
    optimizer = build_optimizer(model.param_groups(train.lr, train.weight_decay), train.optimizer, train.momentum)
    transform = train_transform(train, model.backbone)
    batch_seed = seed if batch_seed is None else batch_seed

    def epoch_batches(epoch: int) -> Iterable[Batch]:
        for batch in make_batches(dataset, transform, seed=batch_seed, epoch=epoch, batch_size=train.batch_size,
                                  workers=runtime.loader_workers):
            yield Batch(runtime.images(batch.image), batch.rgb, batch.mask.to(runtime.device), batch.labels, batch.names)

    state = fit(
        name=name, model=model, optimizer=optimizer, step_fn=step_fn, epoch_batches=epoch_batches,
        num_steps=steps_per_epoch(len(dataset), train.batch_size), train=train, work_dir=work_dir,
        generator=torch.Generator().manual_seed(seed), runtime=runtime,
    )
    torch.save(model.state_dict(), model_path)
    return {"history": state.history, "train_images": state.images, "train_seconds": state.seconds}
