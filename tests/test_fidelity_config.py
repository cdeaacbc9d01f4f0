"""Config keys of the reference-fidelity choices: defaults follow the
authors' code (arvijj/icam), the paper-as-printed variants are one key away."""
from __future__ import annotations

from pathlib import Path

import pytest

from study.spec import expand_grid, load_spec
from wsss_core.pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PAPER_PRESETS = ["pipelines/paper_voc.yaml", "pipelines/paper_coco.yaml"]


def test_fsl_defaults_are_the_authors_code() -> None:
    cam = load_config({}).cam
    assert (cam.fsl_normalization, cam.fsl_sigma_init, cam.fsl_mu_init, cam.fsl_learn, cam.fsl_weight) == (
        "pixels", 5.0, 2.5, False, 1.0,
    )


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_the_authors_fsl(name: str) -> None:
    cam = load_config(REPO / "search_spaces" / name).cam
    assert (cam.fsl, cam.fsl_normalization, cam.fsl_sigma_init, cam.fsl_mu_init, cam.fsl_learn) == (
        True, "pixels", 5.0, 2.5, False,
    )


@pytest.mark.parametrize("source", [{}, *(REPO / "search_spaces" / name for name in PAPER_PRESETS)])
def test_sampled_pixels_default_to_train_cams_100_and_the_paper_text_is_one_override_away(source) -> None:
    from wsss_core.formulations import CamSettings

    assert load_config(source).cam.num_samples == 100 == CamSettings().num_samples
    assert load_config(source, ["cam.num_samples=1"]).cam.num_samples == 1


def test_contour_f_scores_a_class_absent_everywhere_as_the_authors_script_does() -> None:
    assert load_config({}).eval.contour_f_absent == "one"  # icam contour_fscore.py: precision = recall = 1


def test_paper_as_printed_fsl_is_one_override_away() -> None:
    cam = load_config({}, ["cam.fsl_normalization=pairs", "cam.fsl_learn=true"]).cam
    assert (cam.fsl_normalization, cam.fsl_learn) == ("pairs", True)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"cam": {"fsl_normalization": "mean"}}, "cam.fsl_normalization='mean' is invalid; allowed: pixels, pairs"),
        ({"cam": {"fsl_learn": "no"}}, "cam.fsl_learn='no'"),
        ({"eval": {"contour_f_absent": "zero"}}, "eval.contour_f_absent='zero' is invalid; allowed: one, skip"),
    ],
)
def test_bad_fidelity_values_are_refused_with_one_line(override: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(override)
    assert fragment in str(error.value) and "\n" not in str(error.value)


AUTHORS_SPECS = ["fig2_gmp_lambda_fsl", "fig3_gap_lambda_fsl", "figs5_8_fine_lambda", "table1_coco", "table6_num_samples"]


def _trial_configs(name: str):
    spec = load_spec(REPO / "search_spaces" / "studies" / f"{name}.yaml")
    return [load_config(spec.pipeline_dict(point)) for point in expand_grid(spec)]


@pytest.mark.parametrize("name", AUTHORS_SPECS)
def test_paper_figure_and_table_specs_run_the_authors_code(name: str) -> None:
    for cfg in _trial_configs(name):
        cam = cfg.cam
        assert (cam.formulation, cam.mode, cam.momentum, cam.bce_eps, cam.bce_background) == ("icam", "seam", 5e-4, 1e-3, ("gmp",))
        assert (cam.fsl_normalization, cam.fsl_mu_init, cam.fsl_learn, cam.bg) == ("pixels", 2.5, False, "one_minus_sum")
        assert (cfg.affinity.lr, cfg.affinity.momentum, cfg.segmentation.momentum) == (0.01, 5e-4, 0.9)


def test_table2_and_table5_compare_seam_with_the_authors_code() -> None:
    table2 = [(c.cam.formulation, c.cam.lam, c.cam.fsl, c.cam.crf_alpha_high) for c in _trial_configs("table2_seam_baseline")]
    assert table2 == [("seam", 0.0, False, 24.0), ("icam", 0.8, True, 4.0)]
    table5 = [(c.cam.formulation, c.cam.lam, c.cam.fsl, c.cam.naive) for c in _trial_configs("table5_naive")]
    assert table5 == [("seam", 0.0, False, True), ("seam", 0.0, True, True), ("seam", 0.8, False, True),
                      ("seam", 0.8, True, True), ("icam", 0.8, True, False)]
    assert len(set(table5)) == len(table5)


@pytest.mark.parametrize("learn", [False, True])
def test_fsl_parameters_reach_the_optimizer_only_when_learned(learn: bool) -> None:
    import torch

    from wsss_core.pipeline.stage_cam import CAMTrainer, build_cam_net

    cam = load_config({"cam.mode": "plain", "cam.fsl_learn": learn}).cam
    trainer = CAMTrainer(build_cam_net(cam, 4, 0), cam, torch.Generator().manual_seed(0))
    names = [g["name"] for g in trainer.param_groups(cam.lr, cam.weight_decay)]
    assert ("fsl" in names) == learn
    assert trainer.fsl.log_sigma.requires_grad == learn and trainer.fsl.mu_parameter.requires_grad == learn
