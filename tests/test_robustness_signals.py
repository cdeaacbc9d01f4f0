"""Every process a run starts ends with it: a `wsss pipeline run` stopped by
SIGTERM or SIGINT while its evaluation pool is alive exits 143 / 130 with one
line and no worker or resource tracker left; killed by SIGKILL, its workers
and the tracker notice the dead parent and exit. metrics.json only ever
describes a complete run."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

from wsss_core.pipeline.evaluate import ImagePool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"
# Two pool workers, and enough stage-3 epochs that the run is still going once they exist.
OVERRIDES = ["eval.workers=2", "segmentation.epochs=30"]


def start_run(tmp_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-W", "ignore", "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(TINY),
           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]
    for item in OVERRIDES:
        cmd += ["--set", item]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pool_processes(pid: int) -> list:
    """The run's spawned pool workers and its resource tracker."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing" in cmdline:
            found.append(child)
    return found


def wait_for_pool(proc: subprocess.Popen, timeout: float = 240.0) -> list:
    """Wait until both workers and the tracker run; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before its pool started: {proc.communicate()}"
        found = pool_processes(proc.pid)
        if sum("spawn_main" in " ".join(p.cmdline()) for p in found) == 2 and len(found) == 3:
            return found
        time.sleep(0.05)
    raise AssertionError("the evaluation pool never started")


def alive(processes: list, timeout: float = 15.0) -> list:
    """Those of `processes` still running after `timeout` s (zombies count as ended)."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
            except psutil.NoSuchProcess:
                pass
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_and_its_pool_with_one_line(tmp_path: Path, signum: int) -> None:
    proc = start_run(tmp_path)
    try:
        pool = wait_for_pool(proc)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum
    line, = stderr.strip().splitlines()
    assert line.startswith(f"wsss pipeline run: interrupted by {name}; ") and "resumes" in line
    assert alive(pool) == []
    out = tmp_path / "out"
    assert not (out / "metrics.json").exists(), "an interrupted run must not look complete"
    assert f"pipeline interrupted by {name}" in (out / "pipeline.log").read_text()
    finished = [p for p in (tmp_path / "cache" / "stages").glob("segmentation/*")
                if p.is_dir() and not p.name.endswith(".partial")]
    assert finished == [], "an interrupted stage must not be published to the cache"


def test_workers_and_tracker_exit_when_the_run_is_killed(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    partial = tmp_path / "out" / "metrics.partial.json"
    try:
        pool = wait_for_pool(proc)
        deadline = time.monotonic() + 120
        while not partial.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert alive(pool) == [], "pool workers or the resource tracker outlived a SIGKILLed run"
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert partial.is_file() and '"cam"' in partial.read_text(), "finished stages are kept, marked partial"


def test_leaving_the_pool_by_an_exception_kills_its_workers() -> None:
    workers = []
    with pytest.raises(RuntimeError, match="stop"), ImagePool(2) as pool:
        assert list(pool.imap(abs, [(-1,), (-2,)], desc="t", total=2, progress=False)) == [1, 2]
        workers = [psutil.Process(p.pid) for p in pool._executor._processes.values()]
        assert len(workers) == 2
        raise RuntimeError("stop")
    assert alive(workers, timeout=5) == []


def test_metrics_json_appears_only_with_the_last_stage(tmp_path: Path) -> None:
    from wsss_core.pipeline import run_pipeline

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a previous run's: replaced, never mixed with this one
    seen = []
    run_pipeline(TINY, out, cache_dir=tmp_path / "cache", progress=False, on_stage_end=lambda result: seen.append(
        (result.stage, (out / "metrics.json").exists(), (out / "metrics.partial.json").exists())))
    assert seen == [("cam", False, True), ("affinity", False, True), ("segmentation", True, False)]
