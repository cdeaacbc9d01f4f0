"""The paper's tables (analysis.tables): cells checked against the fixture's rows, and their renderings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import tables
from analysis.store import load_results
from tests.analysis_fixture import NUM_SAMPLES_GRID, write_coco_lambda, write_optuna_search, write_voc_ablation


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    written = {"voc": write_voc_ablation(root), "coco": write_coco_lambda(root), "optuna": write_optuna_search(root)}
    return {name: (study, load_results(study.path)) for name, study in written.items()}


def _cell(rows: pd.DataFrame, metric: str, **where: object) -> str:
    """'mean ± std' in percent over the matching val rows, formatted as the paper (one decimal)."""
    part = rows[(rows["split"] == "val") & (rows["status"] != "failed")]
    for name, value in where.items():
        part = part[part[name] == value]
    values = part[metric].to_numpy() * 100
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def test_table6_sampled_pixels(studies):
    study, frame = studies["voc"]
    table = tables.sampled_pixels_table(frame)
    cells = table.cells()
    assert list(cells.index) == list(NUM_SAMPLES_GRID)
    assert list(cells.columns) == [("Area mIoU", "CAM"), ("Area mIoU", "DLB"), ("Contour F-score", "CAM"), ("Contour F-score", "DLB")]
    for n in NUM_SAMPLES_GRID:
        where = dict(num_samples=n, pooling="gap", fsl=True, naive=False)
        where["lambda"] = 1.0
        assert cells.at[n, ("Area mIoU", "CAM")] == _cell(study.rows, "miou", stage="cam", **where)
        assert cells.at[n, ("Contour F-score", "DLB")] == _cell(study.rows, "contour_f", stage="segmentation", **where)
    assert "λ=1" in table.caption and "GAP" in table.caption


def test_table2_baseline_vs_ours_by_stage(studies):
    study, frame = studies["voc"]
    cells = tables.baseline_table(frame).cells()
    assert list(cells.index) == ["CAMs", "+ AffinityNet", "+ DeepLab-v1"]
    rows = study.rows[(study.rows["stage"] == "segmentation") & (study.rows["split"] == "val") & ~study.rows["naive"]
                      & (study.rows["lambda"] > 0)]
    best = rows.groupby(["lambda", "pooling", "fsl", "num_samples"])["miou"].mean().idxmax()
    ours = f"Ours (λ={best[0]:g})"
    assert list(cells.columns.get_level_values(1)) == ["SEAM", ours, "SEAM", ours]
    for stage, label in (("cam", "CAMs"), ("segmentation", "+ DeepLab-v1")):
        assert cells.at[label, ("Area mIoU", "SEAM")] == _cell(
            study.rows, "miou", stage=stage, naive=False, fsl=False, pooling=best[1], num_samples=1, **{"lambda": 0.0})
        assert cells.at[label, ("Contour F-score", ours)] == _cell(
            study.rows, "contour_f", stage=stage, naive=False, fsl=best[2], pooling=best[1], num_samples=best[3], **{"lambda": best[0]})


def test_table5_naive_normalisation(studies):
    study, frame = studies["voc"]
    cells = tables.naive_table(frame).cells()
    rows = study.rows
    ours = rows[(rows["stage"] == "segmentation") & (rows["split"] == "val") & ~rows["naive"] & rows["fsl"]
                & (rows["lambda"] > 0) & (rows["pooling"] == "gap") & (rows["num_samples"] == 1)]
    best = ours.groupby("lambda")["miou"].mean().idxmax()
    assert list(cells.index) == ["SEAM", "SEAM + importance sampling (λ=0.8) (naive)",
                                 "SEAM + feature similarity loss (naive)", f"Ours (λ={best:g})"]
    assert cells.at["SEAM + importance sampling (λ=0.8) (naive)", "Area mIoU"] == _cell(
        rows, "miou", stage="segmentation", naive=True, fsl=False)
    assert cells.at[f"Ours (λ={best:g})", "Contour F-score"] == _cell(
        rows, "contour_f", stage="segmentation", naive=False, fsl=True, pooling="gap", num_samples=1, **{"lambda": best})


def test_table1_lambda_on_coco(studies):
    study, frame = studies["coco"]
    cells = tables.coco_lambda_table(frame).cells()
    assert list(cells.index) == ["0.8", "0.9", "1"]
    assert list(cells.columns) == [("Area mIoU", "2014"), ("Area mIoU", "2017"), ("Contour F-score", "2014"), ("Contour F-score", "2017")]
    for lam in (0.8, 0.9, 1.0):
        assert cells.at[f"{lam:g}", ("Area mIoU", "2017")] == _cell(study.rows, "miou", stage="segmentation", dataset="coco2017", **{"lambda": lam})
    assert tables.coco_lambda_table(studies["voc"][1]) is None  # no COCO rows: the section is left out


def test_tables_absent_without_their_data(studies):
    _, coco = studies["coco"]
    assert tables.sampled_pixels_table(coco) is None
    assert tables.naive_table(coco) is None
    assert tables.baseline_table(coco) is None  # no lambda = 0 run
    assert tables.failures_table(coco) is None


def test_best_trials_are_sorted_by_final_miou(studies):
    study, frame = studies["optuna"]
    table = tables.best_trials_table(frame, top=5)
    final = study.rows[(study.rows["stage"] == "segmentation") & (study.rows["split"] == "val")].sort_values("miou", ascending=False)
    assert list(table.means.index) == final["trial_id"].head(5).tolist()
    np.testing.assert_allclose(table.means[("Area mIoU", "DLB")], final["miou"].head(5) * 100)
    assert ("config", "seed") in table.means.columns and ("config", "lambda") in table.means.columns


def test_status_and_failures(studies):
    study, frame = studies["voc"]
    counts = tables.status_table(frame).means["trials"]
    assert counts["all"] == study.rows["trial_id"].nunique()
    assert counts["failed"] == 2
    failed = tables.failures_table(frame).means
    assert list(failed["stage"]) == ["affinity", "cam"]
    assert failed["error"].str.contains("out of memory").all()
    assert tables.status_table(studies["optuna"][1]).means["trials"]["stopped"] == 8


def test_renderings_carry_the_same_cells(studies):
    table = tables.coco_lambda_table(studies["coco"][1])
    cell = table.cells().iat[0, 0]
    html, markdown, latex = table.to_html(), table.to_markdown(), table.to_latex()
    assert "<th colspan=2>Area mIoU</th>" in html and f"<td>{cell}</td>" in html
    assert "| λ | Area mIoU 2014 | Area mIoU 2017 |" in markdown and f"| 0.8 | {cell} |" in markdown
    assert "\\multicolumn{2}{c}{Area mIoU}" in latex and "\\cmidrule(lr){2-3}" in latex
    assert f"0.8 & {cell}" in latex and "$\\lambda$" in latex
    seeded = tables.baseline_table(studies["voc"][1]).to_latex()
    assert "$\\pm$" in seeded and "±" not in seeded


def test_best_config_of_each_study_side_by_side(studies):
    frames = {"voc": studies["voc"][1], "coco": studies["coco"][1]}
    table = tables.best_by_study_table(frames)
    assert [label.split(":")[0] for label in table.means.index] == ["voc", "coco"]
    coco = studies["coco"][0].rows
    best = coco[(coco["stage"] == "segmentation") & (coco["split"] == "val")]["miou"].max() * 100
    assert table.means.iloc[1][("Area mIoU", "DLB")] == pytest.approx(best)
    assert tables.best_by_study_table({"voc": frames["voc"]}) is None
