"""The jupytext notebooks under analysis/notebooks execute (nbclient) against the Parquet fixture."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

from tests.analysis_fixture import write_coco_lambda, write_voc_ablation

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "analysis" / "notebooks"


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    return write_voc_ablation(root), write_coco_lambda(root)


def _execute(name: str, env: dict[str, str], monkeypatch) -> list[dict]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = jupytext.read(NOTEBOOKS / name)
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def _plotly_traces(outputs: list[dict]) -> list[dict]:
    figures = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    return [trace for figure in figures for trace in (json.loads(figure) if isinstance(figure, str) else figure)["data"]]


def test_ablation_curves_notebook(studies, monkeypatch):
    outputs = _execute("ablation_curves.py", {"WSSS_STUDY_DIR": str(studies[0].path)}, monkeypatch)
    assert any("74 trials" in o.get("text", "") for o in outputs)
    traces = _plotly_traces(outputs)
    assert {t["name"] for t in traces} >= {"with FSL", "without FSL", "GAP", "GMP"}
    assert len([t for t in traces if t["name"] in ("with FSL", "without FSL")]) == 3 * 8  # 3 stages x 8 traces


def test_tables_notebook(studies, monkeypatch):
    outputs = _execute("tables.py", {"WSSS_STUDY_DIR": str(studies[0].path)}, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs)
    for title in ("Table 2. Baseline vs ours", "Table 5. Naive", "Table 6. Metrics vs the number", "\\begin{tabular}"):
        assert title in text
    assert any("text/html" in o.get("data", {}) for o in outputs)


def test_compare_studies_notebook(studies, monkeypatch):
    dirs = os.pathsep.join(str(s.path) for s in studies)
    outputs = _execute("compare_studies.py", {"WSSS_STUDY_DIRS": dirs}, monkeypatch)
    names = {t["name"] for t in _plotly_traces(outputs)}
    assert {"voc_ablation · with FSL", "coco_lambda · with FSL"} <= names
    assert any("Best config of each study" in o.get("data", {}).get("text/html", "") for o in outputs)
