"""Loading the Parquet results store (analysis.store)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.store import ResultsError, extra_config, load_results, results_stamp
from study.schema import RESULT_SCHEMA, STAGES
from study.store import ResultsStore
from tests.analysis_fixture import write_optuna_search, write_voc_ablation


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc_ablation(tmp_path_factory.mktemp("store"))


def test_load_returns_every_row_in_stage_order(voc):
    frame = load_results(voc.path)
    assert len(frame) == len(voc.rows)
    assert set(frame["row_id"]) == set(voc.rows["row_id"])
    first = frame[frame["trial_id"] == frame["trial_id"].iloc[0]]
    assert list(first["stage"].astype(str).drop_duplicates()) == list(STAGES)
    assert frame["per_class_iou"].dropna().map(len).eq(21).all()


def test_in_flight_temp_files_are_ignored(voc):
    temp = voc.path / "results" / ".partial.parquet.tmp"
    temp.write_bytes(b"not parquet yet")
    try:
        assert len(load_results(voc.path)) == len(voc.rows)
    finally:
        temp.unlink()


def test_other_schema_version_is_a_one_line_error(tmp_path):
    row = {name: None for name in RESULT_SCHEMA.names} | {
        "row_id": "x", "schema_version": 99, "study": "s", "trial_id": "t", "stage": "cam", "stage_index": 1,
        "split": "val", "status": "completed"}
    folder = tmp_path / "s" / "results"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=RESULT_SCHEMA.remove_metadata()), folder / "x.parquet")
    with pytest.raises(ResultsError, match="schema versions \\[99\\]; this analysis reads versions 1, 2, 3, 4") as error:
        load_results(tmp_path / "s")
    assert "\n" not in str(error.value)


def test_a_version_1_store_with_hive_folders_and_absolute_paths_still_loads(voc, tmp_path):
    """Version 1: one file per row under results/stage=<stage>/, stage also a column."""
    rows = ResultsStore(str(voc.path)).read().to_pylist()[:6]
    for row in rows:
        row |= {"schema_version": 1, "overlay_dir": str(voc.path / row["overlay_dir"]) if row["overlay_dir"] else None}
        folder = tmp_path / "old" / "results" / f"stage={row['stage']}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([row], schema=RESULT_SCHEMA), folder / f"{row['row_id']}.parquet")
    frame = load_results(tmp_path / "old")
    assert sorted(frame["row_id"]) == sorted(r["row_id"] for r in rows)
    assert set(frame["schema_version"]) == {1} and frame["overlay_dir"].dropna().map(lambda p: p.startswith("/")).all()


@pytest.mark.parametrize("version, added", [
    (2, ("pointing", "per_class_pointing", "stage_key", "model_key")),
    (3, ("stage_key", "model_key")),
])
def test_an_older_file_without_the_columns_added_since_reads_them_as_null(voc, tmp_path, version, added):
    rows = [row | {"schema_version": version} for row in ResultsStore(str(voc.path)).read().to_pylist()[:6]]
    old_schema = pa.schema([f for f in RESULT_SCHEMA if f.name not in added])
    folder = tmp_path / "old" / "results"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), folder / "trial-x.parquet")
    frame = load_results(tmp_path / "old")
    assert len(frame) == 6 and set(frame["schema_version"]) == {version}
    assert all(frame[column].isna().all() for column in added)
    assert frame["miou"].notna().any()


def test_missing_study_folder_names_the_path(tmp_path):
    with pytest.raises(ResultsError, match=str(tmp_path / "nope" / "results")):
        load_results(tmp_path / "nope")


def test_extra_config_keeps_only_keys_not_in_columns(tmp_path):
    frame = load_results(write_optuna_search(tmp_path, num_trials=6).path)
    extra = extra_config(frame)
    assert list(extra.columns) == ["cam.lr"]  # cam.lambda etc. duplicate well-known columns
    assert extra["cam.lr"].tolist() == [json.loads(t)["cam.lr"] for t in frame["config_json"]]


def test_results_stamp_changes_when_a_row_lands(voc):
    before = results_stamp(voc.path)
    extra = Path(voc.path / "results" / "new.parquet")
    extra.write_bytes(next((voc.path / "results").iterdir()).read_bytes())
    try:
        assert results_stamp(voc.path)[0] == before[0] + 1
    finally:
        extra.unlink()
