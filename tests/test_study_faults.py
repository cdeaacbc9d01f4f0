"""Fault tolerance on a local Ray: a failing trial (NaN loss) is retried and
recorded without stopping the study; a worker killed mid-trial resumes from its
checkpoint with the same metrics as an uninterrupted run; a driver killed
mid-study is finished by `wsss study resume` with exactly one row per
trial x stage x split."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from study.cli import main  # noqa: E402
from study.runner import run_study, study_status  # noqa: E402
from study.schema import STAGES  # noqa: E402
from study.spec import parse_spec  # noqa: E402
from tests.test_study_run import journal_trials  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "search_spaces" / "pipelines" / "tiny.yaml")
SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("studies")
    ray.shutdown()


def tiny_raw(name, **entries):
    return {"name": name, "base": TINY, "resources": {"cpus": 1}, **entries}


def rows(storage, name):
    folder = storage / name / "results"
    return ds.dataset(folder).to_table().to_pylist() if folder.is_dir() else []


def wait_for(condition, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_nan_trial_is_retried_recorded_and_does_not_stop_the_study(storage):
    spec = parse_spec(tiny_raw(
        "nan", fixed={"cam.lam": 0.0, "cam.fsl": False}, space={"cam.lr": {"grid": [0.05, 1.0e12]}}, failure={"max_retries": 1}, search={"max_concurrent": 2},
    ))
    table = {row["trial"]: row for row in run_study(spec, storage=storage, verbose=0)}
    assert table["p0000"]["state"] == "TERMINATED" and table["p0000"]["stage"] == "segmentation"
    assert table["p0001"]["state"] == "ERROR"
    assert table["p0001"]["failures"] == 2, "one retry per failure.max_retries"
    results = rows(storage, "nan")
    good = [r for r in results if r["trial_id"] == "p0000"]
    assert len(good) == 6 and all(r["status"] == "completed" for r in good)
    failed = [r for r in results if r["trial_id"] == "p0001"]
    assert sorted(r["split"] for r in failed) == list(SPLITS)
    assert all(r["status"] == "failed" and r["stage"] == "cam" and r["miou"] is None for r in failed)
    assert all("FloatingPointError" in r["error"] and "nan" in r["error"].lower() for r in failed)
    folder = storage / "nan" / "results"
    assert [p.name for p in folder.iterdir()] == ["compacted.parquet"], "no more Parquet files than trials"
    frame, table = pd.read_parquet(folder), ds.dataset(folder).to_table().to_pandas()
    columns = ["row_id", "trial_id", "stage", "split", "status", "error", "miou", "trial_dir"]
    assert frame[columns].sort_values("row_id").reset_index(drop=True).equals(
        table[columns].sort_values("row_id").reset_index(drop=True))
    assert set(frame.loc[frame["trial_id"] == "p0001", "status"]) == {"failed"}
    assert not frame["trial_dir"].str.startswith("/").any() and not frame["overlay_dir"].dropna().str.contains("ray").any()
    journal = {t.user_attrs["trial"]: t.state.name for t in journal_trials(storage / "nan" / "optuna.journal", "nan")}
    assert journal == {"p0000": "COMPLETE", "p0001": "FAIL"}


def trial_workers():
    return [
        p for p in psutil.Process(os.getpid()).children(recursive=True)
        if "ImplicitFunc" in " ".join(p.cmdline())
    ]


def test_a_killed_worker_resumes_from_its_checkpoint_with_the_same_metrics(storage, tmp_path):
    from wsss_core.pipeline import run_pipeline

    raw = tiny_raw("kill", fixed={"affinity.epochs": 2, "runtime.threads": 1}, failure={"max_retries": 1})
    spec = parse_spec(raw)
    runner = threading.Thread(target=run_study, args=(spec,), kwargs={"storage": storage, "verbose": 0})
    runner.start()
    wait_for(lambda: any(r["stage"] == "cam" for r in rows(storage, "kill")))
    (worker,) = trial_workers()
    worker.kill()
    runner.join(timeout=300)
    assert not runner.is_alive()

    (status,) = study_status("kill", storage=storage)
    assert status["state"] == "TERMINATED" and status["failures"] == 1
    results = rows(storage, "kill")
    assert sorted((r["stage"], r["split"]) for r in results) == sorted((s, p) for s in STAGES for p in SPLITS)
    reference = run_pipeline(spec.pipeline_dict({"runtime.seed": 0}), tmp_path / "ref",
                             cache_dir=tmp_path / "cache", progress=False)
    for stage in reference.stages:
        for split, metrics in stage.metrics.items():
            (row,) = [r for r in results if r["stage"] == stage.stage and r["split"] == split]
            assert row["miou"] == pytest.approx(metrics["miou"], abs=1e-9)
            assert row["contour_f"] == pytest.approx(metrics["contour_f"], abs=1e-9)


def test_a_killed_driver_is_finished_by_study_resume_without_duplicate_rows(storage, tmp_path):
    spec_path = tmp_path / "driver.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_raw(
        "driver", space={"segmentation.lr": {"grid": [0.01, 0.03]}}, search={"max_concurrent": 1},
    )))
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "study", "run", str(spec_path), "--storage", str(storage), "--quiet"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(r["stage"] == "affinity" for r in rows(storage, "driver")))
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert len(rows(storage, "driver")) < 2 * len(STAGES) * len(SPLITS)

    assert main(["study", "resume", "driver", "--storage", str(storage), "--quiet"]) == 0
    results = rows(storage, "driver")
    keys = [(r["trial_id"], r["stage"], r["split"]) for r in results]
    assert len(keys) == len(set(keys)) == 2 * len(STAGES) * len(SPLITS)
    assert all(r["status"] == "completed" for r in results)


def test_ctrl_c_stops_the_study_with_exit_code_3_and_names_the_resume_command(storage, tmp_path):
    spec_path = tmp_path / "ctrl_c.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_raw(
        "ctrl_c", space={"segmentation.lr": {"grid": [0.01, 0.02, 0.03, 0.04]}}, search={"max_concurrent": 1},
    )))
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        driver = subprocess.Popen(
            [sys.executable, "-m", "study.cli", "study", "run", str(spec_path), "--storage", str(storage), "--quiet"],
            cwd=ROOT, start_new_session=True, stdout=out, stderr=err,
        )
        try:
            wait_for(lambda: any(r["stage"] == "affinity" for r in rows(storage, "ctrl_c")))
            driver.send_signal(signal.SIGINT)  # the driver alone, as a terminal's Ctrl-C reaches it first
            code = driver.wait(timeout=120)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
    assert code == 3, stderr.read_text()[-2000:]
    assert "0 failed" in stdout.read_text() and "failed:" not in stderr.read_text()
    assert f"continue it with: wsss study resume ctrl_c --storage {storage}" in stderr.read_text()

    assert main(["study", "resume", "ctrl_c", "--storage", str(storage), "--quiet"]) == 0
    assert {r["trial"]: r["state"] for r in study_status("ctrl_c", storage=storage)} == {
        f"p{i:04d}": "TERMINATED" for i in range(4)
    }
