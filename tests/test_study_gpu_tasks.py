"""No GPU held while waiting for a stage lease (study.stage_tasks), on a local
Ray with two logical GPUs (a scheduling resource only: runtime.device cpu).

Two trials share their stage-1 and stage-2 keys and run at once. Each stage
is computed once, by a Ray task holding one GPU; the trial that waits for the
other's stage-1 lease holds no GPU meanwhile (one of the two stays free, where
trials holding their GPU would leave none); a stage task's error fails its
trial with the error's own type and message."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

ray = pytest.importorskip("ray")

from study.runner import run_study, study_status  # noqa: E402
from study.spec import parse_spec  # noqa: E402
from study.trainable import trial_resources  # noqa: E402

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")
GPU_SPEC = {"base": TINY, "resources": {"cpus": 1, "gpus": 1}, "fixed": {"runtime.device": "cpu"}}


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("studies")
    ray.shutdown()


def rows(storage, name):
    return ds.dataset(storage / name / "results").to_table().to_pylist()


def test_a_trial_waiting_for_a_lease_holds_no_gpu_and_each_key_is_computed_once(storage):
    spec = parse_spec({"name": "gpu", **GPU_SPEC, "space": {"segmentation.lr": {"grid": [0.01, 0.02]}},
                       "search": {"max_concurrent": 2}})
    assert "gpu" not in trial_resources(spec) and trial_resources(spec)["cpu"] < 1
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), ray.available_resources().get("GPU", 0.0)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        table = run_study(spec, storage=storage, verbose=0)
    finally:
        done.set()
        sampler.join()
    assert [row["state"] for row in table] == ["TERMINATED", "TERMINATED"]
    assert not list((storage / "_cache" / "_reach").iterdir()), "the driver deleted its reach marker"
    results = [r for r in rows(storage, "gpu") if r["split"] == "val"]
    assert all(r["status"] == "completed" for r in results) and len(results) == 6
    for stage in ("cam", "affinity"):
        assert sorted(r["cache_hit"] for r in results if r["stage"] == stage) == [False, True], \
            f"{stage} is shared: computed once"
    assert not any(r["cache_hit"] for r in results if r["stage"] == "segmentation")

    (computed,) = [r for r in results if r["stage"] == "cam" and not r["cache_hit"]]
    (waiter,) = [r for r in results if r["stage"] == "cam" and r["cache_hit"]]
    waited, published = waiter["started_at"].timestamp(), computed["finished_at"].timestamp()
    assert waited < published - 2, "the second trial waited for the first one's lease"
    waiting = [gpus for at, gpus in samples if waited + 0.5 < at < published - 0.5]
    assert waiting and min(waiting) >= 1, f"a GPU is held by the waiting trial: {waiting}"
    assert min(gpus for _, gpus in samples) < 2, "stages ran as tasks holding a GPU"
    log = (storage / "gpu" / computed["trial_dir"] / "pipeline.log").read_text()
    assert "cam: computing on device cpu" in log, "the stage task's log lines reach the trial's log"


def test_an_error_in_a_stage_task_fails_the_trial_with_its_own_message(storage):
    spec = parse_spec({"name": "gpu-nan", **GPU_SPEC, "fixed": {**GPU_SPEC["fixed"], "cam.lr": 1.0e12,
                       "cam.lam": 0.0, "cam.fsl": False}, "failure": {"max_retries": 0}})
    (row,) = run_study(spec, storage=storage, verbose=0)
    assert row["state"] == "ERROR"
    failed = rows(storage, "gpu-nan")
    assert failed and all(r["status"] == "failed" and r["stage"] == "cam" for r in failed)
    assert all(r["error"].startswith("FloatingPointError") and "nan" in r["error"].lower() for r in failed)


def test_a_killed_stage_task_fails_its_trial_which_resumes_from_the_saved_epoch(storage):
    psutil = pytest.importorskip("psutil")
    spec = parse_spec({"name": "gpu-kill", **GPU_SPEC, "fixed": {**GPU_SPEC["fixed"], "affinity.epochs": 3},
                       "failure": {"max_retries": 1}})
    runner = threading.Thread(target=run_study, args=(spec,), kwargs={"storage": storage, "verbose": 0})
    runner.start()
    checkpoints = storage / "_cache" / "stages" / "affinity"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("*.partial/checkpoint.pt")):
        assert time.monotonic() < deadline, "no affinity epoch checkpoint"
        time.sleep(0.02)
    (task,) = [p for p in psutil.Process().children(recursive=True) if "ray::wsss-affinity" in " ".join(p.cmdline())]
    task.kill()
    runner.join(timeout=240)
    assert not runner.is_alive()
    (status,) = study_status("gpu-kill", storage=storage)
    assert status["state"] == "TERMINATED" and status["failures"] == 1 and status["stage"] == "segmentation"
    log = (storage / "gpu-kill" / "trials" / status["trial"] / "pipeline.log").read_text()
    assert "affinity: resuming after epoch" in log, "the retried trial's task resumed from the saved epoch"
