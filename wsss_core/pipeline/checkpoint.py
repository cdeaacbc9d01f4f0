"""Epoch checkpoints that make a resumed stage bit-identical on CPU.

Saved: model (and extra learnable modules, e.g. FSL sigma/mu), optimizer,
AMP grad scaler, the global step (the poly schedule is a function of it), the
loss history, and every RNG state a stage draws from: torch's global CPU (and
CUDA) generator (dropout) and the importance-sampling generator. The data
order and augmentation are functions of (seed, stage, epoch, index), so they
need no state of their own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainState:
    """Where a training loop stands: epochs done, optimiser steps done, the
    per-epoch mean losses {"loss": .., "cls": .., ...}, and the training images
    seen and wall seconds spent (for throughput figures)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0


def save_checkpoint(
    path: Path,
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> None:
    """Write atomically (temporary file, then os.replace)."""
    payload: dict[str, Any] = {
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "images": state.images,
        "seconds": state.seconds,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "sampling_rng": generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> TrainState | None:
    """Restore everything `save_checkpoint` wrote; None when there is no file."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    generator.set_state(payload["sampling_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainState(payload["epoch"], payload["step"], payload["history"], payload["images"], payload["seconds"])
