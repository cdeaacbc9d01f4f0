"""Content-addressed storage of stage outputs, and who computes a missing one.

A stage's key hashes its own config, its upstream stage's key, the dataset
identity (incl. the contents of a labels file), the contents of local weight
files, and the code version: the wsss_core sources with docstrings, comments
and formatting left out, plus the versions of the libraries that compute
(torch, numpy, ...). A change upstream or in the code gives a new key; an
unchanged prefix of the pipeline is reused.

Two small interfaces keep the pipeline free of any cluster machinery:

- `StageStore`: where finished outputs and work in progress live. Its folders
  are local paths; a store on an object store (the study layer's) downloads
  finished outputs and uploads epoch checkpoints and published outputs.
- `StageLeases`: who may compute a key now. `hold(stage, key)` returns once
  this process holds the key's lease.

`LocalStageStore` + `FileLeases` (an fcntl lock) are the defaults for one
machine. Layout under their root::

    stages/<stage>/<key>/           finished outputs (appears by atomic rename)
    stages/<stage>/<key>.partial/   work in progress, epoch checkpoints (resume)
    stages/<stage>/<key>.lock       fcntl lock held by the process doing the work
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from wsss_core.cache_dir import default_cache_dir  # noqa: F401  (re-exported: the pipeline's default cache)

KEY_LENGTH = 20
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "numba", "opencv-python-headless", "pydensecrf2", "pillow")
"""Distributions whose versions enter every stage key."""


class StageStore(Protocol):
    """Finished stage outputs and work in progress, by (stage, key)."""

    def fetch(self, stage: str, key: str) -> Path | None:
        """The local folder of the finished outputs, or None when not finished."""

    def work_dir(self, stage: str, key: str) -> Path:
        """A local folder to compute in, holding any saved progress (call while holding the lease)."""

    def save_progress(self, stage: str, key: str) -> None:
        """Persist the work folder's progress (called after every epoch checkpoint)."""

    def publish(self, stage: str, key: str, drop: tuple[str, ...] = ()) -> Path:
        """Publish the work folder (less `drop`) as the finished outputs; their local folder."""


class StageLeases(Protocol):
    """Who computes a stage: one holder per key at a time."""

    def hold(self, stage: str, key: str) -> AbstractContextManager[None]:
        """Wait for and hold the key's lease for the `with` block."""


def code_version() -> str:
    """Hash (16 hex) of every wsss_core/**/*.py as parsed code (docstrings,
    comments and formatting left out) and of the library versions (LIBRARIES)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(_code_fingerprint(path.read_bytes()))
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str | None]:
    """{distribution: installed version or None} of LIBRARIES."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _code_fingerprint(source: bytes) -> bytes:
    """The AST of a module without docstrings, including the attribute docstrings
    after assignments (every statement that is a bare string does nothing;
    ast.dump drops comments and layout)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            statements = getattr(node, name, None)
            if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                kept = [s for s in statements if not _is_bare_string(s)]
                setattr(node, name, kept or [ast.Pass()])
    return ast.dump(tree, annotate_fields=False).encode()


def _is_bare_string(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def file_digest(path: str | Path) -> str:
    """sha256 (20 hex) of a file's contents, remembered per (path, size, mtime)."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:KEY_LENGTH]


def hash_json(value: Any) -> str:
    """Stable hash of a JSON-serialisable value (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def stage_key(stage: str, stage_config: dict, upstream: str | None, dataset: str, code: str) -> str:
    """The content address of a stage's outputs."""
    return hash_json({"stage": stage, "config": stage_config, "upstream": upstream, "dataset": dataset, "code": code})


class LocalStageStore:
    """A StageStore in one folder every process of the run can reach (see module doc)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStageStore({str(self.root)!r})"

    def _base(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / key

    def fetch(self, stage: str, key: str) -> Path | None:
        final = self._base(stage, key)
        return final if final.is_dir() else None

    def work_dir(self, stage: str, key: str) -> Path:
        partial = self._base(stage, key).with_name(f"{key}.partial")
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def save_progress(self, stage: str, key: str) -> None:
        """Nothing to do: the work folder is the store."""

    def publish(self, stage: str, key: str, drop: tuple[str, ...] = ()) -> Path:
        """Delete `drop` from the partial folder and rename it to the final one."""
        partial, final = self.work_dir(stage, key), self._base(stage, key)
        remove_names(partial, drop)
        os.rename(partial, final)
        return final


class FileLeases:
    """StageLeases through an fcntl lock file per key under `root` (one machine,
    or a file system that honours fcntl locks across machines)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @contextmanager
    def hold(self, stage: str, key: str) -> Iterator[None]:
        path = self.root / "stages" / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_names(folder: Path, names: tuple[str, ...]) -> None:
    """Delete the files or folders `names` directly under `folder`, if present."""
    for name in names:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary sibling and os.replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
