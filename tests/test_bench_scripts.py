"""bench/ holds timing scripts only: each docstring names what it times and the
target ratio; each runs as a file from any folder (bench/study.py must not
shadow the study package) and as a module; `make bench` runs existing ones."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HELPERS = ("__init__", "speed_timing")
"""Modules of bench/ that are not scripts."""
SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if p.stem not in HELPERS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_names_what_it_times_and_its_target(name: str) -> None:
    doc = ast.get_docstring(ast.parse((REPO / "bench" / f"{name}.py").read_text())) or ""
    assert doc.startswith("Times "), doc[:80]
    assert re.search(r"^Target\b.*\d", doc, re.MULTILINE), f"bench/{name}.py names no target ratio"


@pytest.mark.parametrize("name", ["channels_last", "study"])
def test_scripts_run_as_files_from_any_folder(name: str, tmp_path: Path) -> None:
    """channels_last imports the shared timer (bench.speed_timing); study imports the study package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_make_bench_runs_existing_timing_scripts() -> None:
    listed = re.findall(r"python -m bench\.(\w+)", (REPO / "Makefile").read_text())
    assert listed and set(listed) <= set(SCRIPTS), listed
