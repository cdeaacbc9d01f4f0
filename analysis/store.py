"""Load a study's Parquet results store into pandas.

Layout (written by `study.store`): `<study_dir>/results/` holding one Parquet
file per trial (or one compacted file), one row per trial x stage x split,
schema `study.schema.RESULT_SCHEMA`; version-1 stores (hive folders
`results/stage=<stage>/`) stay readable. `study_dir` is a local folder or a
pyarrow filesystem URI (s3://, gs://, file://). Metrics (`miou`, `contour_f`,
per-class lists) are fractions in [0, 1].
"""
from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow.fs as pafs

from study.schema import CONFIG_COLUMNS, READABLE_VERSIONS, RESULT_SCHEMA, STAGES
from study.store import read_results, resolve


class ResultsError(ValueError):
    """A study folder that cannot be read; the message is one line for the user."""


def results_dir(study_dir: str | os.PathLike) -> str:
    """The Parquet dataset folder of a study (a path or a URI)."""
    return f"{str(study_dir).rstrip('/')}/results"


def study_filesystem(study_dir: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a study folder given as a local path or a URI."""
    return resolve(str(study_dir))


def load_results(study_dir: str | os.PathLike) -> pd.DataFrame:
    """All result rows of one study, one per trial x stage x split.

    Raises `ResultsError` when the folder holds no results or was written with
    a schema version this code cannot read. Hidden and `_`-prefixed files
    (in-flight temp files) are skipped. The frame is sorted by trial, stage
    order and split.
    """
    filesystem, root = study_filesystem(study_dir)
    folder = f"{root}/results"
    if filesystem.get_file_info(folder).type != pafs.FileType.Directory:
        raise ResultsError(f"no results folder at {results_dir(study_dir)}: expected a study folder written by `wsss study run`")
    frame = read_results(filesystem, folder).to_pandas()
    if frame.empty:
        raise ResultsError(f"no result rows under {results_dir(study_dir)} yet")
    versions = sorted(set(frame["schema_version"].astype(int)))
    unreadable = [v for v in versions if v not in READABLE_VERSIONS]
    if unreadable:
        raise ResultsError(f"results in {results_dir(study_dir)} use schema versions {versions}; "
                           f"this analysis reads versions {', '.join(map(str, READABLE_VERSIONS))}")
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
    filesystem, root = study_filesystem(study_dir)
    selector = pafs.FileSelector(f"{root}/results", allow_not_found=True, recursive=True)
    infos = filesystem.get_file_info(selector)
    files = [i for i in infos if i.type == pafs.FileType.File]
    newest = max((i.mtime_ns or 0 for i in infos), default=0)
    return len(files), newest
