"""docs/environment.md lists every environment variable the code reads or sets:
a variable added to the code without a row there fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "environment.md"
NAME = r"([A-Z][A-Z0-9_]+)"
TOUCHES = [
    re.compile(rf"environ\.get\(\s*[\"']{NAME}[\"']"),
    re.compile(rf"environ\.setdefault\(\s*[\"']{NAME}[\"']"),
    re.compile(rf"environ\[\s*[\"']{NAME}[\"']\s*\]"),
    re.compile(rf"getenv\(\s*[\"']{NAME}[\"']"),
    re.compile(rf"[\"']{NAME}[\"']\s+(?:not\s+)?in\s+os\.environ"),
    re.compile(rf"^[A-Z_]*_ENV\s*(?::\s*str\s*)?=\s*[\"']{NAME}[\"']", re.MULTILINE),
]
"""How code names a variable it reads or sets: os.environ.get("X"), os.environ["X"],
"X" in os.environ, os.getenv("X"), or a module constant SOMETHING_ENV = "X"."""
TEST_READS = TOUCHES[:1] + TOUCHES[3:4]
"""In tests only reads count: the variables tests set for the libraries they start are not the product's."""


def code_variables() -> dict[str, str]:
    """{variable: the first .py file (tracked or not ignored) that reads or sets it}."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    found: dict[str, str] = {}
    for name in files.split():
        patterns = TEST_READS if name.startswith("tests/") else TOUCHES
        text = (REPO / name).read_text(errors="replace")
        for pattern in patterns:
            for variable in pattern.findall(text):
                found.setdefault(variable, name)
    return found


def documented_variables() -> set[str]:
    """Variables named in the first column of a table row of docs/environment.md."""
    rows = re.findall(r"^\| ([^|]+) \|", DOC.read_text(), re.MULTILINE)
    return {name for row in rows for name in re.findall(rf"`{NAME}`", row)}


def test_every_variable_the_code_touches_has_a_row() -> None:
    found = code_variables()
    assert {"WSSS_CACHE", "WSSS_FEATURE_MEMO", "WSSS_STORAGE"} <= set(found), found
    missing = {name: where for name, where in found.items() if name not in documented_variables()}
    assert not missing, f"add to docs/environment.md: {missing}"


def test_every_wsss_row_is_read_by_the_code() -> None:
    stale = {name for name in documented_variables() if name.startswith("WSSS_")} - set(code_variables())
    assert not stale, f"docs/environment.md lists variables nothing reads: {sorted(stale)}"


def test_one_cache_variable() -> None:
    """Everything cached, generated data included, lives under $WSSS_CACHE."""
    assert not {name for name in code_variables() if name.startswith("WSSS_CACHE") and name != "WSSS_CACHE"}


def test_generated_data_and_stages_share_the_cache(tmp_path: Path, monkeypatch) -> None:
    """Without a cache_dir, a synthetic set is generated under $WSSS_CACHE/data,
    the folder run_pipeline gives it with the default cache."""
    from wsss_core.data import DataConfig, build_dataset
    from wsss_core.pipeline.cache import default_cache_dir

    monkeypatch.setenv("WSSS_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    dataset = build_dataset(DataConfig(synth_num_train=2, synth_num_val=1, synth_size=48), "val")
    assert len(dataset) == 1
    assert list((tmp_path / "cache" / "data" / "synthetic").iterdir())
