"""An on-disk memo of a fixed backbone's feature maps, shared by every process
on a machine (`runtime.feature_memo`).

Trials of a sweep that trains only new layers on a frozen backbone (the demo's
lambda x FSL grid) feed the backbone the same augmented crops: the batches are
drawn from the run seed alone (`wsss_core.pipeline.training.make_batches`).
The first trial computes each batch's maps and stores them; the others read
them. Entries are keyed by the backbone's weights and the input's bytes and
hold float32 maps exactly as computed, so a run reads what it would compute.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MEMO_ENV = "WSSS_FEATURE_MEMO"


def default_memo_dir() -> Path:
    """$WSSS_FEATURE_MEMO, else <system temp>/wsss-feature-memo (safe to delete at any time)."""
    return Path(os.environ.get(MEMO_ENV) or Path(tempfile.gettempdir()) / "wsss-feature-memo")


def weights_fingerprint(module: nn.Module) -> str:
    """Hash (20 hex) of the module's class and every parameter and buffer (names, dtypes, values)."""
    digest = hashlib.blake2b(type(module).__qualname__.encode(), digest_size=10)
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureMemo:
    """Feature maps of one fixed backbone by input: `directory/<fingerprint>/<key>.pt`.

    `maps(compute, x, which)` returns compute(x)[which] (a list of [B,C,h,w]),
    from the memo when an earlier call stored it. New entries appear by atomic
    rename, so concurrent processes never read a partial file.
    """

    def __init__(self, directory: Path, fingerprint: str, extra: str = "") -> None:
        self.directory = Path(directory) / fingerprint
        self.extra = extra
        self.hits = 0
        self.misses = 0

    def key(self, x: torch.Tensor, which: slice) -> str:
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) else "nchw"
        header = f"{self.extra}|{which}|{x.device.type}|{layout}|{torch.is_autocast_enabled()}|{x.dtype}|{tuple(x.shape)}"
        digest = hashlib.blake2b(header.encode(), digest_size=16)
        digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def maps(self, compute: Callable[[torch.Tensor], list[torch.Tensor]], x: torch.Tensor, which: slice) -> list[torch.Tensor]:
        path = self.directory / f"{self.key(x, which)}.pt"
        if path.is_file():
            self.hits += 1
            stored = torch.load(path, map_location=x.device, weights_only=True)
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            return [m.contiguous(memory_format=layout) for m in stored]
        self.misses += 1
        maps = compute(x)[which]
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        torch.save([m.detach().cpu().contiguous() for m in maps], tmp)
        tmp.replace(path)
        return maps

    def summary(self) -> str:
        total = self.hits + self.misses
        return f"{self.hits} of {total} feature forwards read from the memo {self.directory}"
