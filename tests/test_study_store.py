"""The Parquet results store: schema, config columns, stable row ids, atomic
writes (no partial or duplicate files), concurrent writers."""
from __future__ import annotations

import multiprocessing
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from study.schema import RESULT_SCHEMA, row_id
from study.store import ResultsStore, StageOutcome, config_columns, outcome_rows

CONFIG = {"cam.lam": 0.8, "cam.pooling": "gap", "cam.num_samples": 1, "cam.fsl": True, "cam.fsl_weight": 1.0,
          "cam.fsl_sigma_init": 5, "cam.fsl_mu_init": 0.0, "cam.mode": "seam", "runtime.seed": 2,
          "cam.backbone": "resnet38d", "data.kind": "coco", "data.year": 2017, "eval.splits": "train,val"}
METRICS = {split: {"miou": 0.5 + i / 10, "contour_f": 0.3, "per_class_iou": [0.9, None, 0.4],
                   "per_class_f": [0.1, 0.2, float("nan")]} for i, split in enumerate(("train", "val"))}


def outcome(trial_id="t1", stage="cam", metrics=METRICS, **extra):
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    return StageOutcome(study="s", trial_id=trial_id, stage=stage, status="completed", config=CONFIG,
                        metrics=metrics, learned={"fsl_sigma": 4.2, "fsl_mu": -0.1}, seconds=3.5,
                        started_at=now, finished_at=now, cache_hit=False, **extra)


def test_rows_carry_typed_config_columns_and_metrics():
    rows = outcome_rows(outcome())
    assert [r["split"] for r in rows] == ["train", "val"]
    val = rows[1]
    assert val["row_id"] == row_id("s", "t1", "cam", "val") and val["stage_index"] == 1
    assert (val["lambda"], val["pooling"], val["seed"], val["dataset"]) == (0.8, "gap", 2, "coco2017")
    assert val["fsl_sigma_init"] == 5.0 and isinstance(val["fsl_sigma_init"], float)
    assert val["miou"] == pytest.approx(0.6) and val["per_class_f"] == [0.1, 0.2, None]
    assert val["fsl_sigma"] == 4.2
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    assert table.schema.equals(RESULT_SCHEMA)


def test_the_cam_pointing_game_is_stored_per_class_and_as_its_mean():
    pointing = {split: dict(values, per_class_pointing=[None, 0.5, 1.0 if split == "val" else 0.0],
                            pointing=0.75 if split == "val" else 0.25) for split, values in METRICS.items()}
    train, val = outcome_rows(outcome(metrics=pointing))
    assert val["per_class_pointing"] == [None, 0.5, 1.0] and val["pointing"] == pytest.approx(0.75)
    assert train["pointing"] == pytest.approx(0.25)
    later = outcome_rows(outcome(stage="affinity"))[1]
    assert later["pointing"] is None and later["per_class_pointing"] is None
    table = pa.Table.from_pylist([train, val, later], schema=RESULT_SCHEMA)
    assert table.column("pointing").null_count == 1


def test_unknown_keys_stay_null_and_bad_status_is_rejected():
    assert config_columns({"cam.lam": 0.1})["pooling"] is None
    with pytest.raises(ValueError, match="status='done' is invalid; allowed: completed, failed, stopped"):
        outcome_rows(StageOutcome(study="s", trial_id="t", stage="cam", status="done", config={}))


def test_one_file_per_trial_readable_by_every_parquet_reader(tmp_path):
    store = ResultsStore(str(tmp_path / "study"))
    store.write_outcome(outcome())
    paths = store.write_outcome(outcome(stage="segmentation"))
    store.write_outcome(outcome(trial_id="t2"))
    results = tmp_path / "study" / "results"
    assert paths == [str(results / "trial-t1.parquet")]
    assert sorted(p.name for p in results.iterdir()) == ["trial-t1.parquet", "trial-t2.parquet"]
    expected = sorted(store.read().column("row_id").to_pylist())
    assert len(expected) == 6
    assert_readers_agree(results, expected)


def assert_readers_agree(results, expected):
    """pandas, pyarrow.parquet, pyarrow.dataset, polars and DuckDB read one table, stage a plain string."""
    import duckdb
    import pandas as pd
    import polars as pl

    frame = pd.read_parquet(results)
    assert sorted(frame["row_id"]) == expected and not isinstance(frame["stage"].dtype, pd.CategoricalDtype)
    assert sorted(pq.read_table(results).column("row_id").to_pylist()) == expected
    assert sorted(ds.dataset(results).to_table().column("row_id").to_pylist()) == expected
    assert sorted(pl.read_parquet(f"{results}/*.parquet")["row_id"].to_list()) == expected
    rows = duckdb.sql(f"select row_id, stage from read_parquet('{results}/*.parquet')").fetchall()
    assert sorted(r[0] for r in rows) == expected and {r[1] for r in rows} <= {"cam", "affinity", "segmentation"}


def test_compaction_leaves_one_file_and_a_resumed_trial_moves_out_of_it(tmp_path):
    store = ResultsStore(str(tmp_path))
    for trial in ("t1", "t2", "t3"):
        store.write_outcome(outcome(trial_id=trial))
    before = sorted(store.read().column("row_id").to_pylist())
    assert store.compact().endswith("results/compacted.parquet")
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["compacted.parquet"]
    assert sorted(store.read().column("row_id").to_pylist()) == before
    assert store.compact() is None

    resumed = ResultsStore(str(tmp_path))  # a new driver
    resumed.write_outcome(outcome(trial_id="t2", stage="affinity"))
    table = resumed.read()
    assert table.num_rows == 8 and len(set(table.column("row_id").to_pylist())) == 8
    t2 = pq.read_table(tmp_path / "results" / "trial-t2.parquet")
    assert sorted(t2.column("stage").to_pylist()) == ["affinity", "affinity", "cam", "cam"]
    assert "t2" not in pq.read_table(tmp_path / "results" / "compacted.parquet").column("trial_id").to_pylist()
    resumed.compact()
    assert_readers_agree(tmp_path / "results", sorted(table.column("row_id").to_pylist()))


def test_rewriting_a_row_replaces_it_instead_of_duplicating(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.write_outcome(outcome())
    store.write_outcome(StageOutcome(study="s", trial_id="t1", stage="cam", status="failed", config=CONFIG,
                                     error="boom"))
    table = store.read()
    assert table.num_rows == 2
    assert set(table.column("status").to_pylist()) == {"failed"}
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    store = ResultsStore(str(tmp_path))
    row = outcome_rows(outcome())[0]
    row["miou"] = "not a number"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        store.write([row])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_process_killed_mid_write_leaves_only_a_hidden_temp_that_readers_skip(tmp_path):
    store = ResultsStore(str(tmp_path))
    (path,) = store.write([outcome_rows(outcome())[0]])
    folder = tmp_path / "results"
    (folder / ".trial-t1.parquet.0123.tmp").write_bytes(open(path, "rb").read()[:50])
    assert store.read().num_rows == 1
    assert ds.dataset(folder).count_rows() == 1


def _write_many(args):
    folder, worker = args
    store = ResultsStore(folder)
    for trial in range(10):
        store.write_outcome(outcome(trial_id=f"w{worker}-{trial % 5}"))


def test_concurrent_writers_never_clash(tmp_path):
    """Two processes write 2 x 5 trials twice each (rewrites race with each other)."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_write_many, [(str(tmp_path), w) for w in range(2)] * 2)
    table = store_table(tmp_path)
    assert table.num_rows == 2 * 5 * 2
    assert len(set(table.column("row_id").to_pylist())) == table.num_rows
    assert len(list((tmp_path / "results").glob("*.parquet"))) == 2 * 5


def store_table(folder):
    return ResultsStore(str(folder)).read()


def test_file_uri_storage(tmp_path):
    store = ResultsStore(f"file://{tmp_path}/study")
    store.write_outcome(outcome())
    assert ds.dataset(tmp_path / "study" / "results").count_rows() == 2


def test_a_file_replaced_while_it_is_read_is_read_again(tmp_path):
    """As on an object store: the listing saw one version, the read finds a broken one, the next a whole one."""
    import threading

    store = ResultsStore(str(tmp_path))
    (path,) = store.write_outcome(outcome())
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[:40])
    threading.Timer(0.1, lambda: open(path, "wb").write(whole)).start()
    assert store.read().num_rows == 2
