"""The Parquet `history` table: one row per trial x stage x training epoch.

Layout: `<study_uri>/history/trial-<trial_id>.parquet` while a study runs and
`<study_uri>/history/compacted.parquet` after it ends, schema
`study.schema.HISTORY_SCHEMA`, beside `results/` and under the same rules
(study.store): written by one process (the driver's Tune callback), every
write replaces the trial's file atomically with its rows merged by their
stable row id (`schema.history_row_id`), no folder partitions, hidden and
`_`-prefixed files skipped by readers. pandas.read_parquet, pyarrow.dataset,
polars and DuckDB read `<study_uri>/history` as one table. Pure pyarrow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from study.schema import HISTORY_SCHEMA, HISTORY_SCHEMA_VERSION, STAGES, history_row_id
from study.store import COMPACTED, resolve, trial_file, write_atomic

HISTORY_FOLDER = "history"


@dataclass(frozen=True)
class EpochRow:
    """One finished training epoch of a trial's stage, as the trial reported it
    (the fields of wsss_core.pipeline.training.EpochRecord, plus when and where)."""

    stage: str
    epoch: int
    epochs: int
    step: int
    losses: dict[str, float]
    lr: float
    images: int
    seconds: float
    finished_at: float  # POSIX seconds
    node: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def history_row(study: str, trial_id: str, epoch: EpochRow) -> dict[str, Any]:
    """The HISTORY_SCHEMA row of one epoch."""
    if epoch.stage not in STAGES:
        raise ValueError(f"stage={epoch.stage!r} is invalid; allowed: {', '.join(STAGES)}")
    finished = datetime.fromtimestamp(epoch.finished_at, tz=UTC)
    return {
        "row_id": history_row_id(study, trial_id, epoch.stage, epoch.epoch),
        "schema_version": HISTORY_SCHEMA_VERSION,
        "study": study,
        "trial_id": trial_id,
        "stage": epoch.stage,
        "stage_index": STAGES.index(epoch.stage) + 1,
        "epoch": epoch.epoch,
        "epochs": epoch.epochs,
        "step": epoch.step,
        "loss": epoch.losses.get("loss"),
        "loss_parts": list(epoch.losses.items()),
        "lr": epoch.lr,
        "images": epoch.images,
        "images_per_second": epoch.images / epoch.seconds if epoch.seconds > 0 else None,
        "seconds": epoch.seconds,
        "started_at": datetime.fromtimestamp(epoch.finished_at - epoch.seconds, tz=UTC),
        "finished_at": finished,
        "node": epoch.node,
    }


class HistoryStore:
    """Writes and reads the history rows of one study (a local folder or a pyarrow URI)."""

    def __init__(self, study_uri: str) -> None:
        self.filesystem, root = resolve(study_uri)
        self.folder = f"{root.rstrip('/')}/{HISTORY_FOLDER}"
        self._trials: dict[str, dict[str, dict[str, Any]]] = {}

    def trial_path(self, trial_id: str) -> str:
        return f"{self.folder}/{trial_file(trial_id)}"

    def write_epoch(self, study: str, trial_id: str, epoch: EpochRow) -> str:
        """Merge one epoch's row into its trial's file (atomic replace); the file's path."""
        row = history_row(study, trial_id, epoch)
        merged = dict(self._known_rows(trial_id))
        merged[row["row_id"]] = row
        path = self.trial_path(trial_id)
        write_atomic(self.filesystem, pa.Table.from_pylist(list(merged.values()), schema=HISTORY_SCHEMA), path)
        self._trials[trial_id] = merged
        self._drop_from_compacted(trial_id)
        return path

    def read(self) -> pa.Table:
        """Every row written so far (an empty table with the schema when none)."""
        return read_history(self.filesystem, self.folder)

    def compact(self) -> str | None:
        """Replace every trial file by one compacted file (None: no rows yet)."""
        target = f"{self.folder}/{COMPACTED}"
        files = self._files()
        if not files or files == [target]:
            return None
        write_atomic(self.filesystem, self.read(), target)
        for path in files:
            if path != target:
                self.filesystem.delete_file(path)
        return target

    def _files(self) -> list[str]:
        if self.filesystem.get_file_info(self.folder).type != pafs.FileType.Directory:
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.folder))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")))

    def _known_rows(self, trial_id: str) -> dict[str, dict[str, Any]]:
        if trial_id in self._trials:
            return self._trials[trial_id]
        rows: dict[str, dict[str, Any]] = {}
        for path in (f"{self.folder}/{COMPACTED}", self.trial_path(trial_id)):
            if self.filesystem.get_file_info(path).type == pafs.FileType.File:
                table = read_history(self.filesystem, path)
                rows.update({row["row_id"]: row for row in table.filter(pc.equal(table["trial_id"], trial_id)).to_pylist()})
        return rows

    def _drop_from_compacted(self, trial_id: str) -> None:
        """A trial written after compaction (a resumed study) leaves the compacted file."""
        path = f"{self.folder}/{COMPACTED}"
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return
        table = read_history(self.filesystem, path)
        keep = pc.not_equal(table["trial_id"], trial_id)
        if pc.all(keep).as_py() is False:
            write_atomic(self.filesystem, table.filter(keep), path)


def read_history(filesystem: pafs.FileSystem, path: str, attempts: int = 5) -> pa.Table:
    """The rows under a history folder (or one file) as HISTORY_SCHEMA; an empty
    table when there is none. A file replaced between listing and reading (a
    write or the compaction while a study runs) is read again from a fresh
    listing, up to `attempts` times."""
    for attempt in range(attempts - 1):
        try:
            return _read_dataset(filesystem, path)
        except (pa.ArrowInvalid, OSError):
            time.sleep(0.2 * (attempt + 1))
    return _read_dataset(filesystem, path)


def _read_dataset(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return HISTORY_SCHEMA.empty_table()
    return ds.dataset(path, schema=HISTORY_SCHEMA, format="parquet", filesystem=filesystem,
                      partitioning=None, ignore_prefixes=[".", "_"]).to_table()
