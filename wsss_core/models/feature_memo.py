"""An on-disk memo of a fixed backbone's feature maps, shared by every process
on a machine (`runtime.feature_memo`).

Trials of a sweep that trains only new layers on a frozen backbone (the demo's
lambda x FSL grid) feed the backbone the same augmented crops: the batches are
drawn from the run seed alone (`wsss_core.pipeline.training.make_batches`).
The first trial computes each batch's maps and stores them; the others read
them. Entries are keyed by the backbone's weights and the input's bytes and
hold float32 maps exactly as computed, so a run reads what it would compute.

Processes that start together (the first trials of a sweep) split the work:
each `warm`s the inputs it will need before using them, computing only those
no other process has stored or claimed (a claim is a file created
exclusively), and `maps` waits for an input another process is computing.
A process that has gone through a whole set of inputs records it (`record_warmed`),
so later processes with the same inputs skip the pass (`was_warmed`): a hint
only, since `maps` still computes whatever it does not find.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MEMO_ENV = "WSSS_FEATURE_MEMO"
STALE_CLAIM_SECONDS = 300.0
"""A claim this old belongs to a process that died: it is ignored and replaced."""


def default_memo_dir() -> Path:
    """$WSSS_FEATURE_MEMO, else <system temp>/wsss-feature-memo (safe to delete at any time)."""
    return Path(os.environ.get(MEMO_ENV) or Path(tempfile.gettempdir()) / "wsss-feature-memo")


def weights_fingerprint(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> str:
    """Hash (20 hex) of the module's class and every parameter and buffer (names, dtypes, values),
    leaving out those of the submodules `skip`."""
    digest = hashlib.blake2b(type(module).__qualname__.encode(), digest_size=10)
    skipped = tuple(f"{name}." for name, sub in module.named_modules() if any(sub is s for s in skip))
    for name, tensor in module.state_dict().items():
        if name.startswith(skipped):
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


Computer = Callable[[torch.Tensor], list[torch.Tensor]]
"""A backbone's forward_stages: x [B,3,H,W] -> its maps, coarsest last."""


class FeatureMemo:
    """Feature maps of one fixed backbone by input: `directory/<fingerprint>/<key>.pt`.

    `maps(compute, x, which)` returns compute(x)[which] (a list of [B,C,h,w]),
    from the memo when an earlier call stored it; `warm` stores it ahead of
    use. New entries appear by atomic rename, so concurrent processes never
    read a partial file.
    """

    def __init__(self, directory: Path, fingerprint: str, extra: str = "") -> None:
        self.directory = Path(directory) / fingerprint
        self.extra = extra
        self.hits = 0
        self.misses = 0
        self.warmed = 0

    def key(self, x: torch.Tensor, which: slice) -> str:
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) else "nchw"
        header = f"{self.extra}|{which}|{x.device.type}|{layout}|{torch.is_autocast_enabled()}|{x.dtype}|{tuple(x.shape)}"
        digest = hashlib.blake2b(header.encode(), digest_size=16)
        digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def maps(self, compute: Computer, x: torch.Tensor, which: slice) -> list[torch.Tensor]:
        """compute(x)[which], read from the memo when stored (waiting while another process computes it)."""
        path = self._path(x, which)
        self._await_claim(path)
        if path.is_file():
            self.hits += 1
            stored = torch.load(path, map_location=x.device, weights_only=True)
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            return [m.contiguous(memory_format=layout) for m in stored]
        self.misses += 1
        return self._store(path, compute(x)[which])

    def warm(self, compute: Computer, x: torch.Tensor, which: slice) -> None:
        """Store compute(x)[which] unless it is stored or another process has claimed it."""
        path = self._path(x, which)
        if path.is_file():
            return
        claim = path.with_suffix(".claim")
        self._drop_stale(claim)
        try:
            handle = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        try:
            if not path.is_file():
                self._store(path, compute(x)[which])
                self.warmed += 1
        finally:
            os.close(handle)
            claim.unlink(missing_ok=True)

    def was_warmed(self, inputs: str) -> bool:
        """True when some process recorded a warm pass over the set of inputs named `inputs`."""
        return (self.directory / "warmed" / inputs).is_file()

    def record_warmed(self, inputs: str) -> None:
        """Record that every input of the set named `inputs` is stored or claimed by a process."""
        marker = self.directory / "warmed" / inputs
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def _path(self, x: torch.Tensor, which: slice) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{self.key(x, which)}.pt"

    def _store(self, path: Path, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        torch.save([m.detach().cpu().contiguous() for m in maps], tmp)
        tmp.replace(path)
        return maps

    @staticmethod
    def _drop_stale(claim: Path) -> None:
        try:
            if time.time() - claim.stat().st_mtime > STALE_CLAIM_SECONDS:
                claim.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def _await_claim(self, path: Path) -> None:
        claim = path.with_suffix(".claim")
        while claim.exists() and not path.is_file():
            self._drop_stale(claim)
            time.sleep(0.01)

    def summary(self) -> str:
        total = self.hits + self.misses
        return (f"{self.hits} of {total} feature forwards read from the memo {self.directory} "
                f"({self.warmed} computed here ahead of use)")
