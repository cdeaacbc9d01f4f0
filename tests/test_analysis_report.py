"""`wsss report`: one self-contained HTML file, watch mode, the CLI, and rendering in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from plotly.offline import get_plotlyjs

from analysis.cli import main
from analysis.report import build_report, watch_report, write_report
from tests.analysis_fixture import write_coco_lambda, write_demo, write_voc_ablation


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return write_voc_ablation(root), write_coco_lambda(root)


@pytest.fixture(scope="module")
def report(studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report.html"
    write_report([studies[0].path, studies[1].path], out)
    return out


def test_report_is_self_contained_with_plotlyjs_once(report):
    text = report.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()) == 1
    ours = text.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]+src=", ours)
    assert not re.search(r"(src|href)=['\"]https?://", ours)
    assert text.count("Plotly.newPlot(") >= 10


def test_report_has_every_section_that_applies(report, studies):
    text = report.read_text(encoding="utf-8").replace(get_plotlyjs(), "")
    for heading in ("Comparison of studies", "Ablation curves: metrics vs λ", "Learned FSL parameters",
                    "Table 1. Final predictions on COCO", "Table 2. Baseline vs ours", "Table 5. Naive normalisation",
                    "Table 6. Metrics vs the number of sampled pixels", "Best trials", "Config vs metrics",
                    "Parameter importance", "Per-class scores", "Trial timeline", "CAM overlays of the best trials",
                    "CAM localisation: the pointing game per class", "Failed trials"):
        assert heading in text, heading
    assert text.count("data:image/png;base64,") == 2 * 4 * 3 * 2  # 2 studies x 4 trials x 3 stages x 2 PNGs


def test_sections_without_data_are_left_out(studies):
    text = build_report([studies[1].path])  # COCO only: no lambda = 0, no naive, no num_samples sweep, no failures
    assert "Table 1. Final predictions on COCO" in text
    for absent in ("Table 2.", "Table 5.", "Table 6.", "Failed trials", "Comparison of studies"):
        assert absent not in text, absent


def test_gallery_shows_the_best_trial_of_each_lambda_first_with_its_config(tmp_path):
    demo = write_demo(tmp_path)
    text = build_report([demo.path])
    headings = re.findall(r"<h4>([^<]*)</h4>", text)
    assert [h.split(" · ")[1] for h in headings[:3]] == ["λ=0", "λ=0.5", "λ=1"] and len(headings) == 4
    val = demo.rows[(demo.rows["split"] == "val") & (demo.rows["stage"] == "segmentation")]
    for lam, heading in zip((0.0, 0.5, 1.0), headings):
        best = val[val["lambda"] == lam].sort_values("miou").iloc[-1]
        assert heading.startswith(best["trial_id"]) and heading.endswith("FSL")
        train = demo.rows[(demo.rows["trial_id"] == best["trial_id"]) & (demo.rows["split"] == "train")
                          & (demo.rows["stage"] == "segmentation")]["miou"].item()
        assert f"Final predictions (DeepLab-v1)<br>val mIoU {100 * best['miou']:.1f}%<br>train mIoU {100 * train:.1f}%" in text


def test_watch_regenerates_when_rows_land(studies, tmp_path):
    voc = studies[1].path
    out = tmp_path / "live.html"
    source = pq.read_table(next((voc / "results").iterdir()))
    landed = voc / "results" / "trial-zz.parquet"
    for column in ("row_id", "trial_id"):
        source = source.set_column(source.schema.get_field_index(column), column,
                                   pa.array([f"zz{i}" for i in range(source.num_rows)]))
    messages: list[str] = []

    def log(message: str) -> None:
        messages.append(message)
        if len(messages) == 1:
            pq.write_table(source, landed)  # rows land while the study runs

    try:
        writes = watch_report([voc], out, interval=0.01, iterations=3, log=log)
    finally:
        landed.unlink()
    assert writes == 2 and len(messages) == 2
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".live.html.*"))  # the temp file was renamed, not left behind


def test_cli_writes_report_and_reports_bad_folders_in_one_line(studies, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(studies[1].path), "-o", str(out)]) == 0
    assert out.stat().st_size > 1_000_000  # plotly.js inlined
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("wsss report: no results folder") and "\n" not in error


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_plots_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,3000", "--virtual-time-budget=3000",
         f"--screenshot={shot}", report.as_uri()],
        check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (3000, 1400)

    def count(rgb: str) -> int:
        target = np.array([int(rgb[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - target).sum(axis=-1) < 30).sum())

    # The lambda curves (with FSL red, without FSL blue) are drawn: only plotly paints these colours.
    assert count("#d62728") > 500
    assert count("#1f77b4") > 500
    assert (pixels.sum(axis=-1) < 200).sum() > 1000  # text was rendered too
