"""The Parquet results schema: the one contract between `study` and `analysis`.

One row per trial x stage x split. Only pyarrow is imported here, so
`analysis` can use this module without torch or Ray.

Bump SCHEMA_VERSION whenever a column is added, removed or changes meaning;
readers accept every version in READABLE_VERSIONS. Version 1 kept rows under
hive folders (`results/stage=<stage>/`) and absolute `trial_dir`/`overlay_dir`;
version 2 keeps one file per trial (or one compacted file) directly under
`results/` and those paths relative to the study folder. Version 3 adds the
CAM stage's pointing game (`pointing`, `per_class_pointing`); version 4 the
stage's cache key and training key (`stage_key`, `model_key`). Older rows read
the added columns as null.

The `history` table (HISTORY_SCHEMA, versioned by HISTORY_SCHEMA_VERSION the
same way) holds one row per trial x stage x training epoch.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

SCHEMA_VERSION = 4
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4)

from wsss_core.stages import STAGES  # noqa: F401  (re-exported: the stage column's values)

SPLITS: tuple[str, ...] = ("train", "val")

STATUSES: tuple[str, ...] = ("completed", "failed", "stopped")

STUDY_FILE = "study.json"
"""Beside a study's results: the validated spec and its cache (study.runner writes it; resume and the report read it)."""

CONFIG_COLUMNS: dict[str, pa.DataType] = {
    "lambda": pa.float64(),  # Eq. 8 mixture weight
    "pooling": pa.string(),  # "gap" | "gmp"
    "num_samples": pa.int32(),  # pixels sampled per class (Eq. 6, Table 6)
    "naive": pa.bool_(),  # Table 5: un-normalised CAMs (no softmax)
    "fsl": pa.bool_(),  # feature similarity loss on/off
    "fsl_weight": pa.float64(),
    "fsl_sigma_init": pa.float64(),
    "fsl_mu_init": pa.float64(),
    "cam_mode": pa.string(),  # "plain" | "seam"
    "seed": pa.int64(),
    "backbone": pa.string(),
    "dataset": pa.string(),
}
"""Well-known flattened config keys, typed. Every other flattened key is kept in
`config_json` (a JSON object of the whole flattened config, dotted keys)."""

RESULT_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("study", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("stage_index", pa.int8(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        *[pa.field(name, dtype) for name, dtype in CONFIG_COLUMNS.items()],
        pa.field("config_json", pa.string()),
        pa.field("miou", pa.float64()),
        pa.field("contour_f", pa.float64()),
        pa.field("class_names", pa.list_(pa.string())),
        pa.field("per_class_iou", pa.list_(pa.float64())),
        pa.field("per_class_f", pa.list_(pa.float64())),
        # CAM stage only: per class, the share of images whose CAM peaks on that
        # class's object (wsss_core.metrics.PointingGame); `pointing` is the mean
        # over the classes with a value
        pa.field("pointing", pa.float64()),
        pa.field("per_class_pointing", pa.list_(pa.float64())),
        pa.field("fsl_sigma", pa.float64()),  # learned value at the end of stage 1
        pa.field("fsl_mu", pa.float64()),
        pa.field("seconds", pa.float64()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("cache_hit", pa.bool_()),
        # the stage's cache key, and its training key: trials with equal model_key
        # ran on the same trained weights, trained once (README "Stage cache")
        pa.field("stage_key", pa.string()),
        pa.field("model_key", pa.string()),
        pa.field("node", pa.string()),
        pa.field("trial_dir", pa.string()),  # relative to the study folder (v1: absolute)
        pa.field("overlay_dir", pa.string()),  # relative to the study folder (v1: absolute)
        pa.field("code_version", pa.string()),
    ],
    metadata={b"wsss.schema_version": str(SCHEMA_VERSION).encode()},
)


def row_id(study: str, trial_id: str, stage: str, split: str) -> str:
    """Stable id of one result row: a resumed study rewrites, never duplicates."""
    key = f"{study}\x1f{trial_id}\x1f{stage}\x1f{split}".encode()
    return hashlib.sha1(key).hexdigest()[:20]


HISTORY_SCHEMA_VERSION = 1
HISTORY_READABLE_VERSIONS: tuple[int, ...] = (1,)

HISTORY_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("study", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("stage_index", pa.int8(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),  # 1-based, of `epochs`
        pa.field("epochs", pa.int32()),
        pa.field("step", pa.int64()),  # optimiser steps done in the stage after this epoch
        pa.field("loss", pa.float64()),  # the epoch's mean minimised loss
        # the epoch's mean of every loss part, "loss" included (names depend on the stage)
        pa.field("loss_parts", pa.map_(pa.string(), pa.float64())),
        pa.field("lr", pa.float64()),  # base learning rate after the epoch's last step
        pa.field("images", pa.int64()),  # training images seen in this epoch
        pa.field("images_per_second", pa.float64()),
        pa.field("seconds", pa.float64()),  # the epoch's wall seconds
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("node", pa.string()),
    ],
    metadata={b"wsss.schema_version": str(HISTORY_SCHEMA_VERSION).encode()},
)
"""One row per trial x stage x training epoch, written while the stage trains."""


def history_row_id(study: str, trial_id: str, stage: str, epoch: int) -> str:
    """Stable id of one history row: an epoch trained again after a restart replaces its row."""
    return row_id(study, trial_id, stage, f"epoch {epoch}")
