"""Content-addressed storage of stage outputs.

A stage's key hashes its own config, its upstream stage's key, the dataset
identity and the code version (a hash of every wsss_core source file), so any
change upstream or in the code gives a new key and an unchanged prefix of the
pipeline is reused. Layout under the cache root::

    stages/<stage>/<key>/           finished outputs (appears by atomic rename)
    stages/<stage>/<key>.partial/   work in progress, epoch checkpoints (resume)
    stages/<stage>/<key>.lock       fcntl lock held by the process doing the work

Two runs racing for one key serialise on the lock: the second waits, then
finds the finished folder and reuses it. A killed run leaves the partial
folder (and releases the lock with its process), so the next run resumes.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "WSSS_CACHE"
KEY_LENGTH = 20


def default_cache_dir() -> Path:
    """$WSSS_CACHE, else ~/.cache/wsss."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "wsss")


def code_version() -> str:
    """sha256 over the paths and contents of every wsss_core/**/*.py (16 hex)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def hash_json(value: Any) -> str:
    """Stable hash of a JSON-serialisable value (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def stage_key(stage: str, stage_config: dict, upstream: str | None, dataset: str, code: str) -> str:
    """The content address of a stage's outputs."""
    return hash_json({"stage": stage, "config": stage_config, "upstream": upstream, "dataset": dataset, "code": code})


class StageSlot:
    """The cache entry of one (stage, key): its final, partial and lock paths."""

    def __init__(self, root: str | Path, stage: str, key: str) -> None:
        base = Path(root) / "stages" / stage
        self.key = key
        self.final = base / key
        self.partial = base / f"{key}.partial"
        self.lock_path = base / f"{key}.lock"

    def is_done(self) -> bool:
        return self.final.is_dir()

    @contextmanager
    def claim(self) -> Iterator[bool]:
        """Hold the key's exclusive lock (waiting for another holder); yields
        True when the finished outputs already exist (a cache hit)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield self.is_done()
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def work_dir(self) -> Path:
        """The partial folder (created); only valid while holding `claim`."""
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, drop: tuple[str, ...] = ()) -> Path:
        """Publish the partial folder as the final one by an atomic rename,
        after deleting the names in `drop` (e.g. resume checkpoints)."""
        for name in drop:
            target = self.partial / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        os.rename(self.partial, self.final)
        return self.final


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary sibling and os.replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
