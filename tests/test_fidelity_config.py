"""Config keys of the reference-fidelity choices (issue 12): defaults follow the
authors' code (arvijj/icam), the paper-as-printed variants are one key away."""
from __future__ import annotations

from pathlib import Path

import pytest

from wsss_core.pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PAPER_PRESETS = ["pipeline_paper_voc.yaml", "pipeline_paper_coco.yaml"]


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


def test_paper_as_printed_fsl_is_one_override_away() -> None:
    cam = load_config({}, ["cam.fsl_normalization=pairs", "cam.fsl_learn=true"]).cam
    assert (cam.fsl_normalization, cam.fsl_learn) == ("pairs", True)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"cam": {"fsl_normalization": "mean"}}, "cam.fsl_normalization='mean' is invalid; allowed: pixels, pairs"),
        ({"cam": {"fsl_learn": "no"}}, "cam.fsl_learn='no'"),
    ],
)
def test_bad_fidelity_values_are_refused_with_one_line(override: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(override)
    assert fragment in str(error.value) and "\n" not in str(error.value)
