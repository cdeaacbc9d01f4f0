"""Figure content (analysis.figures, analysis.importance) checked against the fixture's rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import figures
from analysis.importance import infer_distribution, param_importances, trial_parameters
from analysis.store import load_results
from tests.analysis_fixture import LAMBDA_GRID, VOC_CLASSES, write_coco_lambda, write_optuna_search, write_voc_ablation


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    written = {"voc": write_voc_ablation(root), "coco": write_coco_lambda(root), "optuna": write_optuna_search(root)}
    return {name: (study, load_results(study.path)) for name, study in written.items()}


def _expected(rows: pd.DataFrame, stage: str, pooling: str, fsl: bool, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lambdas, mean %, std %) over seeds, computed straight from the written rows."""
    part = rows[(rows["stage"] == stage) & (rows["split"] == "val") & (rows["status"] != "failed") & ~rows["naive"]
                & (rows["num_samples"] == 1) & (rows["pooling"] == pooling) & (rows["fsl"] == fsl)]
    lambdas = np.array(sorted(part["lambda"].unique()))
    values = [100 * part.loc[part["lambda"] == lam, metric].to_numpy() for lam in lambdas]
    return lambdas, np.array([v.mean() for v in values]), np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])


@pytest.mark.parametrize("stage", ["cam", "segmentation"])
def test_lambda_curves_show_seed_mean_and_std_per_fsl_and_pooling(studies, stage):
    study, frame = studies["voc"]
    fig = figures.lambda_curves(frame, stage)
    layout = fig.layout
    assert [a.text for a in layout.annotations] == ["GMP: Area mIoU (%)", "GMP: Contour F-score (%)",
                                                   "GAP: Area mIoU (%)", "GAP: Contour F-score (%)"]
    assert layout.xaxis.title.text == "λ" and layout.yaxis.title.text == "Area mIoU (%)"
    assert layout.yaxis2.title.text == "Contour F-score (%)"
    assert {t.name for t in fig.data} == {"with FSL", "without FSL"}
    assert len(fig.data) == 8  # 2 poolings x 2 metrics x FSL on/off
    axes = {("x", "y"): ("gmp", "miou"), ("x2", "y2"): ("gmp", "contour_f"),
            ("x3", "y3"): ("gap", "miou"), ("x4", "y4"): ("gap", "contour_f")}
    for trace in fig.data:
        pooling, metric = axes[(trace.xaxis, trace.yaxis)]
        lambdas, mean, std = _expected(study.rows, stage, pooling, trace.name == "with FSL", metric)
        if stage == "segmentation":
            np.testing.assert_allclose(lambdas, LAMBDA_GRID)
        np.testing.assert_allclose(trace.x, lambdas)
        np.testing.assert_allclose(trace.y, mean)
        np.testing.assert_allclose(trace.error_y.array, np.nan_to_num(std))
        assert trace.line.color == figures.FSL_COLOURS[trace.name == "with FSL"]


def test_lambda_curves_skip_studies_without_a_lambda_sweep(studies):
    _, coco = studies["coco"]
    single = coco[coco["lambda"] == 0.8]
    assert figures.lambda_curves(single) is None


def test_compare_lambda_curves_names_each_study(studies):
    frames = {"voc": studies["voc"][1], "coco": studies["coco"][1]}
    fig = figures.compare_lambda_curves(frames)
    names = {t.name for t in fig.data}
    assert {"voc · with FSL", "voc · without FSL", "coco · with FSL"} <= names
    coco = [t for t in fig.data if t.name == "coco · with FSL"]
    assert all(t.line.dash == "dash" for t in coco)
    np.testing.assert_allclose(coco[0].x, [0.8, 0.9, 1.0])
    assert figures.compare_lambda_curves({"voc": frames["voc"]}) is None


def test_stage_lambda_curves_put_every_stage_side_by_side(studies):
    study, frame = studies["voc"]
    fig = figures.stage_lambda_curves(frame)
    stages = ("cam", "affinity", "segmentation")
    assert [a.text for a in fig.layout.annotations][:3] == [figures.STAGE_LABELS[s] for s in stages]
    assert len(fig.data) == 3 * 4 * 2  # stages x (2 poolings x 2 metrics) x FSL on/off
    assert sum(t.showlegend for t in fig.data) == 2
    rows = [(pooling, metric) for pooling in ("gmp", "gap") for metric in ("miou", "contour_f")]
    for index, trace in enumerate(fig.data):
        col, rest = divmod(index, 8)
        pooling, metric = rows[rest // 2]
        lambdas, mean, std = _expected(study.rows, stages[col], pooling, trace.name == "with FSL", metric)
        np.testing.assert_allclose(trace.x, lambdas)
        np.testing.assert_allclose(trace.y, mean)
        np.testing.assert_allclose(trace.error_y.array, np.nan_to_num(std))
    _, coco = studies["coco"]
    assert figures.stage_lambda_curves(coco[coco["lambda"] == 0.8]) is None


def test_learned_sigma_mu_vs_lambda(studies):
    study, frame = studies["voc"]
    fig = figures.learned_fsl_parameters(frame)
    rows = study.rows[(study.rows["stage"] == "cam") & study.rows["fsl"] & (study.rows["num_samples"] == 1)
                      & ~study.rows["naive"] & (study.rows["split"] == "val")]
    for trace in fig.data:
        name = "fsl_sigma" if trace.yaxis == "y" else "fsl_mu"
        part = rows[rows["pooling"] == trace.name.lower()]
        expected = part.groupby("lambda")[name].mean()
        np.testing.assert_allclose(trace.x, expected.index)
        np.testing.assert_allclose(trace.y, expected.to_numpy())
    assert {t.name for t in fig.data} == {"GMP", "GAP"}


def test_per_class_heatmap_has_class_columns_and_group_means(studies):
    study, frame = studies["coco"]
    fig = figures.per_class_heatmap(frame, "segmentation", top=3)
    iou, f = fig.data
    assert list(iou.x) == VOC_CLASSES
    rows = study.rows[(study.rows["stage"] == "segmentation") & (study.rows["split"] == "val")]
    best = rows.sort_values("miou").iloc[-1]
    np.testing.assert_allclose(iou.z[-1], np.array(best["per_class_iou"]) * 100)  # best group on top
    np.testing.assert_allclose(f.z[-1], np.array(best["per_class_f"]) * 100)
    assert len(iou.y) == 3


def test_pointing_heatmap_shows_foreground_classes_of_the_cam_stage(studies):
    study, frame = studies["coco"]
    fig = figures.pointing_heatmap(frame, top=3)
    (trace,) = fig.data
    assert list(trace.x) == VOC_CLASSES[1:]  # background has no pointing game
    rows = study.rows[(study.rows["stage"] == "cam") & (study.rows["split"] == "val")]
    best = rows.sort_values("miou").iloc[-1]
    np.testing.assert_allclose(trace.z[-1], np.array(best["per_class_pointing"][1:], dtype=float) * 100)
    assert len(trace.y) == 3
    assert figures.pointing_heatmap(frame[frame["stage"] != "cam"]) is None


def test_trial_timeline_bars_per_node_start_at_trial_start(studies):
    study, frame = studies["optuna"]
    fig = figures.trial_timeline(frame)
    assert sorted(t.name for t in fig.data) == ["node-1", "node-2"]
    ran = study.rows[study.rows["started_at"].notna()]  # stopped/failed rows carry no start time
    assert sum(len(t.y) for t in fig.data) == len(ran.drop_duplicates(["trial_id", "stage"]))
    first = study.rows.sort_values("started_at").iloc[0]
    trace = next(t for t in fig.data if t.name == first["node"])
    assert trace.y[0] == first["trial_id"]
    assert pd.Timestamp(trace.base[0]) == first["started_at"].tz_convert(None)
    assert trace.x[0] == pytest.approx(first["seconds"] * 1000)


def test_parallel_coordinates_dimensions_are_searched_params_then_metrics(studies):
    study, frame = studies["optuna"]
    params = trial_parameters(frame)
    assert list(params.columns) == ["lambda", "pooling", "fsl", "fsl_weight", "cam.lr"]  # the seed is no parameter
    fig = figures.parallel_coordinates(frame, params, "segmentation")
    dims = fig.data[0].dimensions
    assert [d.label for d in dims] == [*params.columns, "Area mIoU (%)", "Contour F-score (%)"]
    finished = study.rows[(study.rows["stage"] == "segmentation") & (study.rows["split"] == "val")]
    assert len(dims[0].values) == finished["trial_id"].nunique() == 16
    assert sorted(dims[-2].values) == pytest.approx(sorted(finished["miou"] * 100))
    assert list(dims[1].ticktext) == ["gap", "gmp"]


def test_fanova_importance_ranks_the_parameter_that_drives_the_metric(studies):
    _, frame = studies["optuna"]
    importances = param_importances(frame, "cam")
    assert set(importances) == {"lambda", "pooling", "fsl", "fsl_weight", "cam.lr"}
    assert next(iter(importances)) == "lambda"  # the fixture's metric depends mostly on lambda
    assert sum(importances.values()) == pytest.approx(1.0)
    fig = figures.importance_bars(importances, "cam")
    assert list(fig.data[0].y)[-1] == "lambda"


def test_importance_needs_enough_trials_and_two_parameters(studies):
    _, frame = studies["coco"]
    assert set(param_importances(frame, "segmentation")) == {"lambda", "dataset"}  # 6 trials
    assert param_importances(frame[frame["dataset"] == "coco2014"], "segmentation") == {}  # 3 trials, 1 parameter


def test_infer_distribution_from_values():
    assert infer_distribution(pd.Series([1e-3, 0.5])).log
    assert not infer_distribution(pd.Series([0.0, 1.0])).log
    assert infer_distribution(pd.Series([1, 5, 10])).high == 10
    assert infer_distribution(pd.Series(["gmp", "gap"])).choices == ("gap", "gmp")
    assert infer_distribution(pd.Series([True, False])).choices == (False, True)


def test_importance_is_empty_when_every_trial_scored_the_same(studies):
    _, frame = studies["optuna"]
    flat = frame.assign(miou=0.5)
    assert param_importances(flat, "cam") == {}
