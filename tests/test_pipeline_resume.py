"""A run killed (SIGKILL) mid-stage resumes from its last epoch checkpoint and
ends with exactly the numbers of an uninterrupted run (CPU, same seed).

Every run is a fresh `python -m wsss_core.pipeline.cli` process, as a killed
trial restarts in a new process (oneDNN may pick other kernels for a second
run inside one process, which moves float results in the last bits).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"
OVERRIDES = ["cam.epochs=6"]


def _command(out: Path, cache: Path) -> list[str]:
    cmd = [sys.executable, "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(TINY),
           "--out", str(out), "--cache", str(cache), "--quiet"]
    for item in OVERRIDES:
        cmd += ["--set", item]
    return cmd


def _wait_for_checkpoint(cache: Path, proc: subprocess.Popen, timeout: float = 300.0) -> int:
    """Poll until the cam stage has an epoch checkpoint; return its epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        for path in cache.glob("stages/cam/*.partial/checkpoint.pt"):
            return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
        time.sleep(0.05)
    raise AssertionError("no epoch checkpoint appeared")


def test_killed_run_resumes_with_identical_numbers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reference = subprocess.Popen(_command(tmp_path / "reference", tmp_path / "fresh"), cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_command(tmp_path / "killed", cache), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        epoch = _wait_for_checkpoint(cache, victim)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert 1 <= epoch < 6
    assert not [p for p in cache.glob("stages/cam/*") if p.is_dir() and not p.name.endswith(".partial")]

    resumed = subprocess.run(_command(tmp_path / "resumed", cache), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(600) == 0, reference.stderr.read() if reference.stderr else ""
    assert "cam: resuming after epoch" in (tmp_path / "resumed" / "pipeline.log").read_text()
    got = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    want = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    for stage in ("cam", "affinity", "segmentation"):
        assert got[stage]["key"] == want[stage]["key"]
        for field in ("splits", "fsl_sigma", "fsl_mu", "bg_threshold"):
            assert got[stage].get(field) == want[stage].get(field), (stage, field)
