"""The pipeline's stage cache on any pyarrow filesystem URI (s3://, gs://, a
shared folder), with a node-local mirror: a `wsss_core.pipeline.cache.StageStore`.

Remote layout under the cache URI::

    stages/<stage>/<key>/            finished outputs; `_DONE` is written last
    stages/<stage>/<key>.partial/    saved progress (epoch checkpoints), deleted on publish

Local mirror (per node): `<local>/stages/<stage>/<key>/` (finished, downloaded
once, atomic rename) and `<key>.partial/` (the work folder). Object stores
have no atomic folder rename, so readers trust a remote folder only once its
`_DONE` marker exists. Also: the reachability marker the driver writes and
every trial reads (deleted by the driver when its study ends).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from study.store import resolve
from wsss_core.pipeline.cache import LocalStageStore, StageStore, default_cache_dir, remove_names

DONE = "_DONE"
REACH_FOLDER = "_reach"


class ObjectStageStore:
    """StageStore on `uri` (see module doc); `local` is this node's mirror folder."""

    def __init__(self, uri: str, local: str | Path | None = None) -> None:
        self.uri = uri
        self.filesystem, self.root = resolve(uri)
        self.local = Path(local) if local is not None else mirror_dir(uri)

    def __repr__(self) -> str:
        return f"ObjectStageStore({self.uri!r}, mirror {self.local})"

    def _remote(self, stage: str, key: str, suffix: str = "") -> str:
        return f"{self.root}/stages/{stage}/{key}{suffix}"

    def _local(self, stage: str, key: str, suffix: str = "") -> Path:
        return self.local / "stages" / stage / f"{key}{suffix}"

    def fetch(self, stage: str, key: str) -> Path | None:
        local = self._local(stage, key)
        if (local / DONE).is_file():
            return local
        remote = self._remote(stage, key)
        if self.filesystem.get_file_info(f"{remote}/{DONE}").type != pafs.FileType.File:
            return None
        staging = local.with_name(f".{key}.{uuid.uuid4().hex}")
        self._download(remote, staging)
        try:
            os.rename(staging, local)
        except OSError:  # another trial on this node downloaded it first
            shutil.rmtree(staging)
        return local

    def work_dir(self, stage: str, key: str) -> Path:
        """The local work folder with the saved remote progress it lacks."""
        work = self._local(stage, key, ".partial")
        work.mkdir(parents=True, exist_ok=True)
        remote = self._remote(stage, key, ".partial")
        selector = pafs.FileSelector(remote, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File and not (work / info.base_name).exists():
                self._copy(info.path, self.filesystem, str(work / info.base_name), pafs.LocalFileSystem())
        return work

    def save_progress(self, stage: str, key: str) -> None:
        """Upload the work folder's files (epoch checkpoint, trained weights)."""
        work, remote = self._local(stage, key, ".partial"), self._remote(stage, key, ".partial")
        self.filesystem.create_dir(remote, recursive=True)
        for path in sorted(p for p in work.iterdir() if p.is_file()):
            self._copy(str(path), pafs.LocalFileSystem(), f"{remote}/{path.name}", self.filesystem)

    def publish(self, stage: str, key: str, drop: tuple[str, ...] = ()) -> Path:
        work, local = self._local(stage, key, ".partial"), self._local(stage, key)
        remove_names(work, drop)
        remote = self._remote(stage, key)
        self.filesystem.create_dir(remote, recursive=True)
        pafs.copy_files(str(work), remote, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)
        with self.filesystem.open_output_stream(f"{remote}/{DONE}") as stream:
            stream.write(key.encode())
        self.filesystem.delete_dir_contents(self._remote(stage, key, ".partial"), missing_dir_ok=True)
        (work / DONE).write_text(key)
        try:
            os.rename(work, local)
        except OSError:
            shutil.rmtree(work)
        return local

    def _download(self, remote: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(remote, str(target), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())

    @staticmethod
    def _copy(source: str, source_fs: pafs.FileSystem, target: str, target_fs: pafs.FileSystem) -> None:
        pafs.copy_files(source, target, source_filesystem=source_fs, destination_filesystem=target_fs)


def mirror_dir(uri: str) -> Path:
    """This node's mirror of a remote cache: `<$WSSS_CACHE or ~/.cache/wsss>/mirror/<hash of uri>`."""
    return default_cache_dir() / "mirror" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def write_reach_marker(cache_uri: str) -> str:
    """Write a fresh marker file into the cache (on the driver); its URI or path."""
    filesystem, root = resolve(cache_uri)
    name = uuid.uuid4().hex
    filesystem.create_dir(f"{root}/{REACH_FOLDER}", recursive=True)
    with filesystem.open_output_stream(f"{root}/{REACH_FOLDER}/{name}") as stream:
        stream.write(name.encode())
    return f"{cache_uri.rstrip('/')}/{REACH_FOLDER}/{name}"


def remove_reach_marker(marker: str) -> None:
    """Delete a marker written by write_reach_marker (gone already: nothing to do)."""
    filesystem, path = resolve(marker)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass


def check_reachable(marker: str, node: str) -> None:
    """Raise a one-line error when this node cannot read the driver's marker."""
    try:
        filesystem, path = resolve(marker)
        with filesystem.open_input_stream(path) as stream:
            if stream.read().decode() == marker.rsplit("/", 1)[1]:
                return
    except OSError:
        pass
    cache = marker.rsplit(f"/{REACH_FOLDER}/", 1)[0]
    raise RuntimeError(f"stage cache {cache} is not reachable from node {node}; allowed: a folder every node "
                       f"mounts at the same path (--cache) or an object-store storage such as s3://")


def open_stage_store(cache: str) -> tuple[StageStore, Path]:
    """(StageStore, this node's local cache folder) of a cache folder or URI."""
    if "://" not in cache:
        return LocalStageStore(cache), Path(cache)
    store = ObjectStageStore(cache)
    return store, store.local
