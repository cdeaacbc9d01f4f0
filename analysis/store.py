"""Load a study's Parquet results store into pandas.

Layout (written by `study`): `<study_dir>/results/stage=<stage>/<row_id>.parquet`,
one row per trial x stage x split, schema `study.schema.RESULT_SCHEMA`.
Metrics (`miou`, `contour_f`, per-class lists) are fractions in [0, 1].
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from study.schema import CONFIG_COLUMNS, RESULT_SCHEMA, SCHEMA_VERSION, STAGES


class ResultsError(ValueError):
    """A study folder that cannot be read; the message is one line for the user."""


def results_dir(study_dir: str | os.PathLike) -> Path:
    """The Parquet dataset folder of a study."""
    return Path(study_dir) / "results"


def load_results(study_dir: str | os.PathLike) -> pd.DataFrame:
    """All result rows of one study, one per trial x stage x split.

    Raises `ResultsError` when the folder holds no results or was written with
    another schema version. Hidden and `_`-prefixed files (in-flight temp files)
    are skipped. The frame is sorted by trial, stage order and split.
    """
    folder = results_dir(study_dir)
    if not folder.is_dir():
        raise ResultsError(f"no results folder at {folder}: expected a study folder written by `wsss study run`")
    dataset = ds.dataset(folder, format="parquet", partitioning=None, ignore_prefixes=[".", "_"])
    version_key = b"wsss.schema_version"
    found = (dataset.schema.metadata or {}).get(version_key)
    if found is not None and int(found) != SCHEMA_VERSION:
        raise ResultsError(
            f"results in {folder} use schema version {int(found)}; this analysis reads version {SCHEMA_VERSION}"
        )
    missing = [name for name in RESULT_SCHEMA.names if name not in dataset.schema.names]
    if missing:
        raise ResultsError(f"results in {folder} lack columns {missing}; not a wsss results store")
    frame = dataset.to_table(columns=RESULT_SCHEMA.names).to_pandas()
    if frame.empty:
        raise ResultsError(f"no result rows under {folder} yet")
    versions = sorted(set(frame["schema_version"].astype(int)))
    if versions != [SCHEMA_VERSION]:
        raise ResultsError(f"results in {folder} use schema versions {versions}; this analysis reads version {SCHEMA_VERSION}")
    frame["stage"] = pd.Categorical(frame["stage"], categories=list(STAGES), ordered=True)
    return frame.sort_values(["trial_id", "stage", "split"], kind="stable").reset_index(drop=True)


def extra_config(frame: pd.DataFrame) -> pd.DataFrame:
    """Config keys kept only in `config_json` that vary across rows, one column each.

    Keys whose values repeat a well-known column row for row (e.g. `cam.lambda`
    vs `lambda`) are dropped, so each setting appears once.
    """
    parsed = pd.DataFrame([json.loads(text) if text else {} for text in frame["config_json"]], index=frame.index)
    keep = {}
    for key in parsed.columns:
        values = parsed[key]
        if values.map(repr).nunique() < 2 or values.map(lambda v: isinstance(v, (list, dict))).any():
            continue
        if any(_same_values(values, frame[column]) for column in CONFIG_COLUMNS):
            continue
        keep[key] = values
    return pd.DataFrame(keep, index=frame.index)


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    return [_canonical(v) for v in a] == [_canonical(v) for v in b]


def _canonical(value: object) -> object:
    """Comparable form of a config value: numbers as float, missing as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool):
        return value
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def results_stamp(study_dir: str | os.PathLike) -> tuple[int, int]:
    """(number of files, newest mtime in ns) under the results folder; changes when rows land."""
    count, newest = 0, 0
    for root, _dirs, files in os.walk(results_dir(study_dir)):
        newest = max(newest, os.stat(root).st_mtime_ns)
        for name in files:
            count += 1
            newest = max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
    return count, newest
