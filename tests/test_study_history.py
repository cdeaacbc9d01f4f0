"""The `history` table (study.history): one row per trial x stage x training
epoch, written while the stage trains, read by pandas, pyarrow.dataset, polars
and DuckDB, drawn in the report.

On a local Ray with one logical GPU: a trial computing in its own process and
a trial whose stages run as GPU tasks (study.stage_tasks; runtime.device cpu)
both grow the table epoch by epoch while the CAM stage trains, and their
pipeline.log reaches the study storage before the stage ends."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from study.history import EpochRow, HistoryStore
from study.schema import HISTORY_SCHEMA

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")
EPOCHS = 6


def epoch(stage: str, number: int, loss: float) -> EpochRow:
    return EpochRow(stage=stage, epoch=number, epochs=3, step=2 * number, losses={"loss": loss, "cls": loss / 2},
                    lr=0.1 / number, images=16, seconds=0.5, finished_at=1_800_000_000.0 + number, node="host/abc")


def test_epoch_rows_merge_by_id_compact_and_read_with_every_reader(tmp_path):
    import duckdb
    import pandas as pd
    import polars as pl

    store = HistoryStore(str(tmp_path))
    for number, loss in ((1, 0.9), (2, 0.7), (2, 0.6)):  # epoch 2 trained again after a restart: replaced
        store.write_epoch("s", "p0000", epoch("cam", number, loss))
    store.write_epoch("s", "p0001", epoch("affinity", 1, 0.5))
    assert sorted(p.name for p in (tmp_path / "history").iterdir()) == ["trial-p0000.parquet", "trial-p0001.parquet"]
    frame = pd.read_parquet(tmp_path / "history").sort_values(["trial_id", "epoch"])
    assert list(frame["loss"]) == [0.9, 0.6, 0.5] and list(frame["stage_index"]) == [1, 1, 2]
    assert dict(frame["loss_parts"].iloc[1]) == {"loss": 0.6, "cls": 0.3}
    assert list(frame["images_per_second"]) == [32.0, 32.0, 32.0]
    assert (frame["finished_at"] - frame["started_at"]).dt.total_seconds().tolist() == [0.5, 0.5, 0.5]
    assert store.compact().endswith("compacted.parquet")
    assert [p.name for p in (tmp_path / "history").iterdir()] == ["compacted.parquet"]
    assert ds.dataset(tmp_path / "history").to_table().schema.equals(HISTORY_SCHEMA, check_metadata=False)
    assert pl.read_parquet(tmp_path / "history" / "*.parquet").height == 3
    assert duckdb.sql(f"select count(*) from '{tmp_path}/history/*.parquet' where stage = 'cam'").fetchall() == [(2,)]
    resumed = HistoryStore(str(tmp_path))  # a resumed study's driver: rows of the compacted file are kept
    resumed.write_epoch("s", "p0000", epoch("cam", 3, 0.5))
    assert sorted(resumed.read().column("epoch").to_pylist()) == [1, 1, 2, 3]
    assert len(pd.read_parquet(tmp_path / "history")) == 4


ray = pytest.importorskip("ray")

from study.cli import main
from study.runner import run_study
from study.spec import parse_spec


def test_an_epoch_result_leaves_asha_and_the_searcher_alone():
    """Epoch results carry the stage index of the last finished stage and no val metric:
    ASHA returns before looking at the trial, and the Optuna searcher records nothing."""
    from ray.tune.schedulers import TrialScheduler

    from study.objective import STAGE_INDEX
    from study.runner import _scheduler, _searcher
    from study.trainable import epoch_metrics
    from wsss_core.pipeline.training import EpochRecord

    spec = parse_spec({"name": "asha", "base": TINY, "space": {"cam.lam": {"uniform": [0.0, 1.0]}},
                       "search": {"algorithm": "optuna", "num_samples": 2}, "scheduler": {"type": "asha"}})
    result = {STAGE_INDEX: 1, **epoch_metrics(EpochRecord("affinity", 1, 2, 4, {"loss": 0.5}, 0.1, 16, 0.5))}
    assert spec.search.metric not in result and "train/affinity/loss" in result
    assert _scheduler(spec).on_trial_result(None, None, result) == TrialScheduler.CONTINUE
    _searcher(spec, "epochs").on_trial_result("never-suggested", result)  # a stage result here would raise KeyError


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("studies")
    ray.shutdown()


@dataclass
class Watch:
    """What a reader polling the study folder saw while the study ran: per
    snapshot, CAM history rows, whether the CAM result row was there, and the
    stored pipeline.log."""

    folder: Path
    snapshots: list[tuple[int, bool, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        while not self.done.is_set():
            history = ds.dataset(self.folder / "history").to_table() if (self.folder / "history").is_dir() else None
            results = ds.dataset(self.folder / "results").to_table() if (self.folder / "results").is_dir() else None
            log = self.folder / "trials" / "p0000" / "pipeline.log"
            self.snapshots.append((
                0 if history is None else history.column("stage").to_pylist().count("cam"),
                results is not None and "cam" in results.column("stage").to_pylist(),
                log.read_text() if log.is_file() else "",
            ))
            time.sleep(0.03)

    def during_cam(self) -> list[tuple[int, str]]:
        """(CAM epochs in the history, stored log) of the snapshots taken before the CAM stage ended."""
        return [(rows, log) for rows, cam_done, log in self.snapshots if not cam_done]


def watched_study(storage: Path, name: str, **entries) -> Watch:
    spec = parse_spec({"name": name, "base": TINY, "fixed": {"cam.epochs": EPOCHS}, **entries})
    watch = Watch(storage / name)
    poller = threading.Thread(target=watch.poll)
    poller.start()
    try:
        table = run_study(spec, storage=storage, verbose=0)
    finally:
        watch.done.set()
        poller.join()
    assert [row["state"] for row in table] == ["TERMINATED"]
    return watch


def assert_grew_while_cam_trained(watch: Watch) -> None:
    seen = sorted({rows for rows, _ in watch.during_cam()})
    assert len([rows for rows in seen if 0 < rows < EPOCHS]) >= 2, f"CAM epochs seen before the stage ended: {seen}"
    assert seen == sorted(seen) and max(seen) <= EPOCHS
    logs = [log for rows, log in watch.during_cam() if "cam epoch 1/" in log]
    assert logs, "pipeline.log reached the storage while the CAM stage trained"
    history = ds.dataset(watch.folder / "history").to_table().to_pylist()
    cam = [row for row in history if row["stage"] == "cam"]
    assert [row["epoch"] for row in sorted(cam, key=lambda r: r["epoch"])] == list(range(1, EPOCHS + 1))
    assert {row["stage"] for row in history} == {"cam", "affinity", "segmentation"}
    assert all(row["loss"] > 0 and row["lr"] > 0 and row["images"] == 16 and row["trial_id"] == "p0000" for row in history)
    assert [p.name for p in (watch.folder / "history").iterdir()] == ["compacted.parquet"]


def test_history_grows_epoch_by_epoch_while_a_stage_trains_and_the_report_draws_it(storage, tmp_path):
    watch = watched_study(storage, "epochs", resources={"cpus": 1})
    assert_grew_while_cam_trained(watch)

    out = tmp_path / "report.html"
    assert main(["report", str(watch.folder), "-o", str(out)]) == 0
    text = out.read_text()
    section = re.search(r"<section><h3>Training curves per stage</h3>.*?</section>", text, re.DOTALL)
    assert section is not None and '"name":"p0000"' in section.group(0).replace(" ", "")
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed (apt-get install chromium): the screenshot check needs it")
    head = text[:text.index("<body>") + len("<body>")]
    page = tmp_path / "curves.html"
    page.write_text(f"{head}{section.group(0)}</body></html>")
    shot = tmp_path / "curves.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,700", "--virtual-time-budget=3000",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    line = np.abs(pixels - np.array([0x1F, 0x77, 0xB4])).sum(axis=-1) < 30  # the first trial's colour
    assert line.sum() > 1000, "the trial's curves are drawn"
    assert line[:, :500].sum() > 300, "the CAM column (left) holds a multi-epoch line"


def test_a_stage_task_sends_its_epochs_and_log_lines_to_the_waiting_trial(storage):
    watch = watched_study(storage, "task_epochs", resources={"cpus": 1, "gpus": 1}, seeds=[1],  # no cache hit
                          fixed={"cam.epochs": EPOCHS, "runtime.device": "cpu"})
    assert_grew_while_cam_trained(watch)
    log = (watch.folder / "trials" / "p0000" / "pipeline.log").read_text()
    assert "cam: computing on device cpu" in log, "the task's own log lines reach the trial's log"
    assert log.count(f"cam epoch {EPOCHS}/{EPOCHS}") == 1, "each task line is appended once"
