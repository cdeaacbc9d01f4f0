"""The Parquet results store: one file per trial while a study runs, one
compacted file when it ends.

Layout: `<study_uri>/results/trial-<trial_id>.parquet` (every row of one trial)
and, after `compact()`, `<study_uri>/results/compacted.parquet`, schema
`study.schema.RESULT_SCHEMA`. `stage` is a plain column and no folder
partitions the data, so pandas.read_parquet, pyarrow.parquet.read_table,
pyarrow.dataset, polars and DuckDB all read `<study_uri>/results` as one
table. Pure pyarrow (no Ray, no torch).

Writes go through one process (the driver's Tune callback): writing rows of a
trial rewrites that trial's file with the rows merged by their stable row id
(`schema.row_id`), so a resumed study replaces rows instead of duplicating
them. Files are replaced atomically: on a local file system through a hidden
temporary sibling (".<name>.<random>.tmp", skipped by readers) and a rename, on
object stores (s3://, gs://) by a single PUT, which is atomic by itself.
"""
from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.schema import CONFIG_COLUMNS, RESULT_SCHEMA, SCHEMA_VERSION, STAGES, STATUSES, row_id

COMPACTED = "compacted.parquet"
TRIAL_PREFIX = "trial-"

CONFIG_SOURCES: dict[str, str] = {
    "lambda": "cam.lam",
    "pooling": "cam.pooling",
    "num_samples": "cam.num_samples",
    "naive": "cam.naive",
    "fsl": "cam.fsl",
    "fsl_weight": "cam.fsl_weight",
    "fsl_sigma_init": "cam.fsl_sigma_init",
    "fsl_mu_init": "cam.fsl_mu_init",
    "cam_mode": "cam.mode",
    "seed": "runtime.seed",
    "backbone": "cam.backbone",
    "dataset": "data.kind",
}
"""Well-known result column -> the flattened pipeline key it is read from."""


@dataclass(frozen=True)
class StageOutcome:
    """What one trial produced (or failed to produce) at one stage.

    metrics: {split: {"miou", "contour_f", "per_class_iou", "per_class_f",
    and at the CAM stage "pointing", "per_class_pointing"}};
    empty for failed or stopped stages, whose rows are one per `splits`.
    """

    study: str
    trial_id: str
    stage: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: tuple[str, ...] = ("train", "val")
    error: str | None = None
    class_names: list[str] | None = None
    learned: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cache_hit: bool | None = None
    stage_key: str | None = None
    model_key: str | None = None
    node: str | None = None
    trial_dir: str | None = None
    overlay_dir: str | None = None
    code_version: str | None = None


def outcome_rows(outcome: StageOutcome) -> list[dict[str, Any]]:
    """One result row per split of a stage outcome, keyed by RESULT_SCHEMA names."""
    if outcome.stage not in STAGES:
        raise ValueError(f"stage={outcome.stage!r} is invalid; allowed: {', '.join(STAGES)}")
    if outcome.status not in STATUSES:
        raise ValueError(f"status={outcome.status!r} is invalid; allowed: {', '.join(STATUSES)}")
    splits = list(outcome.metrics) or list(outcome.splits)
    common = {
        "schema_version": SCHEMA_VERSION,
        "study": outcome.study,
        "trial_id": outcome.trial_id,
        "stage": outcome.stage,
        "stage_index": STAGES.index(outcome.stage) + 1,
        "status": outcome.status,
        "error": outcome.error,
        **config_columns(outcome.config),
        "config_json": json.dumps(outcome.config, sort_keys=True, default=str),
        "class_names": outcome.class_names,
        "fsl_sigma": _finite(outcome.learned.get("fsl_sigma")),
        "fsl_mu": _finite(outcome.learned.get("fsl_mu")),
        "seconds": outcome.seconds,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "cache_hit": outcome.cache_hit,
        "stage_key": outcome.stage_key,
        "model_key": outcome.model_key,
        "node": outcome.node,
        "trial_dir": outcome.trial_dir,
        "overlay_dir": outcome.overlay_dir,
        "code_version": outcome.code_version,
    }
    rows = []
    for split in splits:
        values = outcome.metrics.get(split, {})
        rows.append({
            "row_id": row_id(outcome.study, outcome.trial_id, outcome.stage, split),
            "split": split,
            **common,
            "miou": _finite(values.get("miou")),
            "contour_f": _finite(values.get("contour_f")),
            "per_class_iou": _float_list(values.get("per_class_iou")),
            "per_class_f": _float_list(values.get("per_class_f")),
            "pointing": _finite(values.get("pointing")),
            "per_class_pointing": _float_list(values.get("per_class_pointing")),
        })
    return rows


def config_columns(flat: dict[str, Any]) -> dict[str, Any]:
    """The typed well-known columns from a flattened pipeline config; a COCO
    dataset is named with its year ("coco2014") so Table 1's splits stay apart."""
    columns = {name: flat.get(source) for name, source in CONFIG_SOURCES.items()}
    if columns["dataset"] == "coco" and flat.get("data.year") is not None:
        columns["dataset"] = f"coco{flat['data.year']}"
    for name, dtype in CONFIG_COLUMNS.items():
        value = columns.get(name)
        if value is None:
            continue
        if pa.types.is_floating(dtype):
            columns[name] = float(value)
        elif pa.types.is_integer(dtype):
            columns[name] = int(value)
        elif pa.types.is_boolean(dtype):
            columns[name] = bool(value)
        else:
            columns[name] = str(value)
    return columns


class ResultsStore:
    """Writes and reads the result rows of one study.

    study_uri: a local folder or a URI pyarrow understands (file://, s3://, gs://).
    """

    def __init__(self, study_uri: str) -> None:
        self.filesystem, self.root = resolve(study_uri)
        self.results = f"{self.root.rstrip('/')}/results"
        self._trials: dict[str, dict[str, dict[str, Any]]] = {}

    def trial_path(self, trial_id: str) -> str:
        return f"{self.results}/{trial_file(trial_id)}"

    def write(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        """Merge rows into their trials' files (atomic replace); returns the paths."""
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_trial.setdefault(row["trial_id"], []).append(row)
        paths = []
        for trial_id, new in by_trial.items():
            merged = dict(self._known_rows(trial_id))
            merged.update({row["row_id"]: row for row in new})
            table = pa.Table.from_pylist(list(merged.values()), schema=RESULT_SCHEMA)
            paths.append(self.trial_path(trial_id))
            write_atomic(self.filesystem, table, paths[-1])
            self._trials[trial_id] = merged
            self._drop_from_compacted(trial_id)
        return paths

    def write_outcome(self, outcome: StageOutcome) -> list[str]:
        return self.write(outcome_rows(outcome))

    def read(self) -> pa.Table:
        """Every row written so far (an empty table with the schema when none)."""
        return read_results(self.filesystem, self.results)

    def compact(self) -> str | None:
        """Replace every trial file by one compacted file (None: no rows yet)."""
        files = self._files()
        if not files or files == [f"{self.results}/{COMPACTED}"]:
            return None
        target = f"{self.results}/{COMPACTED}"
        write_atomic(self.filesystem, self.read(), target)
        for path in files:
            if path != target:
                self.filesystem.delete_file(path)
        return target

    def _files(self) -> list[str]:
        if self.filesystem.get_file_info(self.results).type != pafs.FileType.Directory:
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.results))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")))

    def _known_rows(self, trial_id: str) -> dict[str, dict[str, Any]]:
        """This trial's rows already stored: in memory, in its file or in the compacted file."""
        if trial_id in self._trials:
            return self._trials[trial_id]
        rows: dict[str, dict[str, Any]] = {}
        for path in (f"{self.results}/{COMPACTED}", self.trial_path(trial_id)):
            if self.filesystem.get_file_info(path).type == pafs.FileType.File:
                table = read_results(self.filesystem, path)
                table = table.filter(pc.equal(table["trial_id"], trial_id))
                rows.update({row["row_id"]: row for row in table.to_pylist()})
        return rows

    def _drop_from_compacted(self, trial_id: str) -> None:
        """A trial written after compaction (a resumed study) leaves the compacted file."""
        path = f"{self.results}/{COMPACTED}"
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return
        table = read_results(self.filesystem, path)
        keep = pc.not_equal(table["trial_id"], trial_id)
        if pc.all(keep).as_py() is False:
            write_atomic(self.filesystem, table.filter(keep), path)


def trial_file(trial_id: str) -> str:
    """The file name of one trial's rows (a hash for ids that are not a safe file name)."""
    safe = trial_id if re.fullmatch(r"[A-Za-z0-9_.-]+", trial_id) else row_id("", trial_id, "", "")
    return f"{TRIAL_PREFIX}{safe}.parquet"


def read_results(filesystem: pafs.FileSystem, path: str, attempts: int = 5) -> pa.Table:
    """The rows under a results folder (or one file), every readable schema
    version, as RESULT_SCHEMA; an empty table when there is nothing yet.

    A file replaced or deleted (compaction) between listing and reading, as can
    happen on an object store while a study runs, is read again from a fresh
    listing, up to `attempts` times (S3 reports such a file as a plain OSError,
    `RESOURCE_NOT_FOUND during GetObject`, not FileNotFoundError)."""
    for attempt in range(attempts - 1):
        try:
            return _read_dataset(filesystem, path)
        except (pa.ArrowInvalid, OSError):
            time.sleep(0.2 * (attempt + 1))
    return _read_dataset(filesystem, path)


def _read_dataset(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return RESULT_SCHEMA.empty_table()
    return ds.dataset(path, schema=RESULT_SCHEMA, format="parquet", filesystem=filesystem,
                      partitioning=None, ignore_prefixes=[".", "_"]).to_table()


def write_atomic(filesystem: pafs.FileSystem, table: pa.Table, path: str) -> None:
    """Replace `path` by `table` so readers see the old or the new file, never a part."""
    folder = path.rsplit("/", 1)[0]
    filesystem.create_dir(folder, recursive=True)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        pq.write_table(table, path, filesystem=filesystem)
        return
    temporary = f"{folder}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, temporary, filesystem=filesystem)
        filesystem.move(temporary, path)
    finally:
        if filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
            filesystem.delete_file(temporary)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local folder or a pyarrow filesystem URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _float_list(values: Any) -> list[float | None] | None:
    return None if values is None else [_finite(v) for v in values]
