"""The Parquet results store: one file per result row, written atomically.

Layout: `<study_uri>/results/stage=<stage>/<row_id>.parquet`, one row each,
schema `study.schema.RESULT_SCHEMA`; read the whole store with
`pyarrow.dataset.dataset(<study_uri>/results)`. Pure pyarrow (no Ray, no torch),
so it can be used and tested alone.

Atomicity: on a local file system a row is written to a hidden temporary file
(".<row_id>.<random>.tmp", skipped by readers that ignore "."-prefixed files)
and renamed over its final name, so a crash never leaves a partial file. On
object stores (s3://, gs://) a PUT is atomic by itself, so the row is written
to its final key directly. The file name is the stable row id
(`schema.row_id(study, trial_id, stage, split)`): rewriting a row after a
resume replaces it instead of adding a duplicate, and concurrent trials, whose
ids differ, never write the same file.
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.schema import CONFIG_COLUMNS, RESULT_SCHEMA, SCHEMA_VERSION, STAGES, STATUSES, row_id

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

    metrics: {split: {"miou", "contour_f", "per_class_iou", "per_class_f"}};
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
        self.filesystem, self.root = _resolve(study_uri)
        self.results = f"{self.root.rstrip('/')}/results"
        self._local = isinstance(self.filesystem, pafs.LocalFileSystem)

    def row_path(self, row: dict[str, Any]) -> str:
        return f"{self.results}/stage={row['stage']}/{row['row_id']}.parquet"

    def write(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        """Write each row to its own file (atomic replace); returns the paths."""
        paths = []
        for row in rows:
            table = pa.Table.from_pylist([row], schema=RESULT_SCHEMA)
            path = self.row_path(row)
            folder = path.rsplit("/", 1)[0]
            self.filesystem.create_dir(folder, recursive=True)
            if self._local:
                temporary = f"{folder}/.{row['row_id']}.{uuid.uuid4().hex}.tmp"
                try:
                    pq.write_table(table, temporary, filesystem=self.filesystem)
                    self.filesystem.move(temporary, path)
                finally:
                    if self.filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
                        self.filesystem.delete_file(temporary)
            else:
                pq.write_table(table, path, filesystem=self.filesystem)
            paths.append(path)
        return paths

    def write_outcome(self, outcome: StageOutcome) -> list[str]:
        return self.write(outcome_rows(outcome))

    def read(self) -> pa.Table:
        """Every row written so far (an empty table with the schema when none)."""
        if self.filesystem.get_file_info(self.results).type != pafs.FileType.Directory:
            return RESULT_SCHEMA.empty_table()
        dataset = ds.dataset(
            self.results, schema=RESULT_SCHEMA, format="parquet", filesystem=self.filesystem,
            ignore_prefixes=[".", "_"],
        )
        return dataset.to_table()


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
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
