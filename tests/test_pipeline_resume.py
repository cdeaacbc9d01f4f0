"""A run killed (SIGKILL) mid-stage resumes from its last epoch checkpoint and
ends with exactly the numbers of an uninterrupted run (CPU, same seed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from wsss_core.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipeline_tiny.yaml"
OVERRIDES = ["cam.epochs=6", "affinity.epochs=2"]


def _wait_for_checkpoint(cache: Path, proc: subprocess.Popen, timeout: float = 240.0) -> int:
    """Poll until the cam stage has an epoch checkpoint; return its epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "process ended early"
        for path in cache.glob("stages/cam/*.partial/checkpoint.pt"):
            return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
        time.sleep(0.05)
    raise AssertionError("no epoch checkpoint appeared")


def test_killed_run_resumes_with_identical_numbers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(TINY),
           "--out", str(tmp_path / "killed"), "--cache", str(cache), "--quiet"]
    for item in OVERRIDES:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        epoch = _wait_for_checkpoint(cache, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= epoch < 6 and not [p for p in cache.glob("stages/cam/*") if p.is_dir() and p.suffix != ".partial"]

    resumed = run_pipeline(TINY, tmp_path / "resumed", cache_dir=cache, progress=False, overrides=OVERRIDES)
    assert "cam: resuming after epoch" in (tmp_path / "resumed" / "pipeline.log").read_text()
    reference = run_pipeline(TINY, tmp_path / "reference", cache_dir=tmp_path / "fresh", progress=False,
                             overrides=OVERRIDES)
    assert [r.key for r in resumed.stages] == [r.key for r in reference.stages]
    for got, want in zip(resumed.stages, reference.stages):
        assert got.metrics == want.metrics, got.stage
        assert got.learned == want.learned
        assert got.extra["history"] == want.extra["history"]
    written = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert written["cam"]["fsl_sigma"] == reference.stages[0].learned["fsl_sigma"]
