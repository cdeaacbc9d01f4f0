"""Loading the Parquet results store (analysis.store)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.store import ResultsError, extra_config, load_results, results_stamp
from study.schema import RESULT_SCHEMA, STAGES
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
    temp = voc.path / "results" / "stage=cam" / ".partial.parquet.tmp"
    temp.write_bytes(b"not parquet yet")
    try:
        assert len(load_results(voc.path)) == len(voc.rows)
    finally:
        temp.unlink()


def test_other_schema_version_is_a_one_line_error(tmp_path):
    row = {name: None for name in RESULT_SCHEMA.names} | {
        "row_id": "x", "schema_version": 99, "study": "s", "trial_id": "t", "stage": "cam", "stage_index": 1,
        "split": "val", "status": "completed"}
    folder = tmp_path / "s" / "results" / "stage=cam"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=RESULT_SCHEMA.remove_metadata()), folder / "x.parquet")
    with pytest.raises(ResultsError, match="schema version.*99") as error:
        load_results(tmp_path / "s")
    assert "\n" not in str(error.value)


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
    extra = Path(voc.path / "results" / "stage=cam" / "new.parquet")
    extra.write_bytes((voc.path / "results" / "stage=cam").iterdir().__next__().read_bytes())
    try:
        assert results_stamp(voc.path)[0] == before[0] + 1
    finally:
        extra.unlink()
