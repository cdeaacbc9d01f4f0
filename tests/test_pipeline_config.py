"""Pipeline config: YAML loading, validation with one-line errors, flattening."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wsss_core.pipeline.config import ConfigError, PipelineConfig, config_to_dict, flatten_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "search_spaces" / "pipelines").glob("*.yaml"))


def test_every_shipped_pipeline_config_loads() -> None:
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "tiny.yaml", "voc_cpu.yaml", "paper_voc.yaml", "paper_coco.yaml"} <= names
    for path in CONFIGS:
        assert isinstance(load_config(path), PipelineConfig)


@pytest.mark.parametrize("name", ["pipelines/paper_voc.yaml", "pipelines/paper_coco.yaml"])
def test_paper_configs_hold_the_papers_settings(name: str) -> None:
    cfg = load_config(REPO / "search_spaces" / name)
    cam = cfg.cam
    assert (cam.backbone, cam.mode, cam.crop_size, cam.batch_size, cam.epochs) == ("resnet38d", "seam", 448, 8, 8)
    assert (cam.lr, cam.weight_decay, cam.lam, cam.pooling, cam.fsl) == (0.01, 5e-4, 0.8, "gap", True)
    assert (cam.crf_alpha_low, cam.crf_alpha_high) == (2.0, 4.0)
    assert cam.infer_scales == (0.5, 1.0, 1.5, 2.0) and cam.infer_flip
    assert cfg.affinity.backbone == cfg.segmentation.backbone == "resnet38d"
    assert cfg.data.kind == ("voc" if "voc" in name else "coco")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"cam": {"lam": 1.5}}, "cam.lam=1.5"),
        ({"cam": {"lam": -0.1}}, "cam.lam=-0.1"),
        ({"cam": {"num_samples": 0}}, "cam.num_samples=0"),
        ({"cam": {"fsl_sigma_init": 0}}, "cam.fsl_sigma_init=0"),
        ({"cam": {"fsl_sigma_init": -2.0}}, "cam.fsl_sigma_init=-2.0"),
        ({"cam": {"pooling": "avg"}}, "cam.pooling='avg'"),
        ({"cam": {"mode": "siamese"}}, "cam.mode='siamese'"),
        ({"cam": {"crf_alpha_high": 1.0}}, "cam.crf_alpha_high=1.0"),
        ({"cam": {"epochs": 2.5}}, "cam.epochs=2.5"),
        ({"cam": {"fsl": "yes"}}, "cam.fsl='yes'"),
        ({"cam": {"infer_scales": []}}, "cam.infer_scales=[]"),
        ({"cam": {"lambda": 0.5}}, "unknown key cam.lambda"),
        ({"affinity": {"beta": 0}}, "affinity.beta=0"),
        ({"affinity": {"radius": 1}}, "affinity.radius=1"),
        ({"segmentation": {"backbone": "vgg16"}}, "segmentation.backbone='vgg16'"),
        ({"eval": {"splits": ["train"]}}, "eval.splits"),
        ({"runtime": {"device": "tpu"}}, "runtime.device='tpu'"),
        ({"crf": {"gauss_sxy": 0}}, "gauss_sxy"),
        ({"data": {"kind": "imagenet"}}, "kind='imagenet'"),
        ({"training": {"lr": 1}}, "unknown config"),
    ],
)
def test_bad_values_are_refused_with_one_line(override: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(override)
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cam: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_and_dotted_keys() -> None:
    cfg = load_config({"cam.lam": 0.25}, ["cam.pooling=gmp", "affinity.iterations=16", "cam.infer_scales=[1, 2]"])
    assert (cfg.cam.lam, cfg.cam.pooling, cfg.affinity.iterations) == (0.25, "gmp", 16)
    assert cfg.cam.infer_scales == (1.0, 2.0)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config({}, ["cam.lam"])


def test_flatten_gives_dotted_scalar_columns_and_round_trips() -> None:
    cfg = load_config(REPO / "search_spaces" / "pipelines" / "demo.yaml")
    flat = flatten_config(cfg)
    assert flat["cam.lam"] == cfg.cam.lam and flat["cam.pooling"] == "gmp"
    assert flat["cam.infer_scales"] == ",".join(str(s) for s in cfg.cam.infer_scales)
    assert flat["data.kind"] == "synthetic" and flat["runtime.seed"] == 0
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in flat.values())
    assert all(k.count(".") == 1 for k in flat)
    assert load_config(config_to_dict(cfg)) == cfg


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cam:\n  lam: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "wsss pipeline run: cam.lam=2.0 is invalid; allowed: a number in [0, 1]"


def test_a_study_spec_given_as_a_pipeline_config_names_the_right_command() -> None:
    spec = REPO / "search_spaces" / "studies" / "demo.yaml"
    with pytest.raises(ConfigError, match=r"is a study spec, not a pipeline config; run it with `wsss study run"):
        load_config(spec)
