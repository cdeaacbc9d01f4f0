"""`wsss study run SPEC --set KEY=VALUE --grid KEY=A,B`: overrides of a shipped
spec, validated like the spec's own keys (one line, exit 2, before Ray starts),
and recorded whole in study.json."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from study.cli import main
from study.spec import SpecError, expand_grid, load_spec, num_trials

STUDIES = Path(__file__).resolve().parents[1] / "search_spaces" / "studies"
FIG2 = STUDIES / "fig2_gmp_lambda_fsl.yaml"
TPE = STUDIES / "optuna_tpe.yaml"


def test_set_fixes_pipeline_keys_and_settings_and_grid_narrows_the_sweep():
    spec = load_spec(FIG2, sets=["data.root=/data/VOC2012", "cam.epochs=1", "cam.resize_long=[64,80]",
                                 "cam.weights=null", "resources.gpus=0.5", "failure.max_retries=0", "seeds=[0,1]"],
                     grids=["cam.lam=0,0.5", "segmentation.lr=1e-3,2e-3"])
    assert spec.fixed == {"cam.pooling": "gmp", "data.root": "/data/VOC2012", "cam.epochs": 1,
                          "cam.resize_long": [64, 80], "cam.weights": None}
    assert [(a.key, a.values) for a in spec.axes] == [
        ("cam.lam", (0, 0.5)), ("cam.fsl", (False, True)), ("segmentation.lr", (1e-3, 2e-3))]
    assert spec.resources.gpus == 0.5 and spec.resources.cpus == 8 and spec.failure.max_retries == 0
    assert spec.seeds == (0, 1) and num_trials(spec) == 2 * 2 * 2 * 2
    nested = spec.pipeline_dict(expand_grid(spec)[0])
    assert nested["data"]["root"] == "/data/VOC2012" and nested["cam"]["epochs"] == 1
    assert nested["data"]["kind"] == "voc" and nested["cam"]["backbone"] == "resnet38d"  # the rest is the base's


def test_set_pins_a_searched_key_and_grid_keeps_an_axis_condition():
    pinned = load_spec(FIG2, sets=["cam.lam=0.3"])
    assert [a.key for a in pinned.axes] == ["cam.fsl"] and pinned.fixed["cam.lam"] == 0.3
    assert num_trials(pinned) == 2

    narrowed = load_spec(TPE, grids=["cam.fsl_sigma_init=2.0,8.0", "cam.pooling=gmp"], sets=["search.num_samples=3"])
    sigma = next(a for a in narrowed.axes if a.key == "cam.fsl_sigma_init")
    assert sigma.kind == "grid" and sigma.values == (2.0, 8.0) and sigma.when == (("cam.fsl", True),)
    assert next(a for a in narrowed.axes if a.key == "cam.pooling").values == ("gmp",)
    assert narrowed.search.num_samples == 3 and num_trials(narrowed) == 3

    unfixed = load_spec(FIG2, grids=["cam.pooling=gap,gmp"])  # a fixed key becomes an axis
    assert "cam.pooling" not in unfixed.fixed and unfixed.axes[-1].values == ("gap", "gmp")


@pytest.mark.parametrize(("sets", "grids", "message"), [
    (["cam.lamda=0.5"], [], "--set cam.lamda=0.5: unknown key cam.lamda; allowed: cam.backbone, "),
    (["model.lam=0.5"], [], "--set model.lam=0.5: unknown section 'model'; allowed: a pipeline key (data.*, cam.*"),
    (["search.trials=4"], [], "unknown key search.trials; allowed: algorithm, max_concurrent, "),
    (["cam.lam"], [], "--set: override 'cam.lam' is invalid; allowed: section.key=value"),
    (["cam.lam=[0"], [], "--set: override 'cam.lam=[0'"),
    (["cam.lam=2"], [], "cam.lam=2.0 is invalid; allowed: "),
    (["resources.gpus=2"], [], "resources.gpus=2.0 is invalid; allowed: a number in [0, 1]"),
    (["seeds=[]"], [], "seeds=[] is invalid; allowed: a non-empty list of distinct integers >= 0"),
    ([], ["search.num_samples=1,2"], "--grid search.num_samples=1,2: unknown section 'search'; allowed: a pipeline key"),
    ([], ["cam.lam="], "--grid 'cam.lam=' is invalid; allowed: section.key=a,b,c"),
    ([], ["cam.lam=0,0"], "space.cam.lam.grid=[0, 0] is invalid; allowed: distinct values"),
    ([], ["runtime.seed=0,1"], "space.runtime.seed is invalid; allowed: set seeds with the top-level `seeds` list"),
    (["cam.lam=0.5"], ["cam.lam=0,1"], "cam.lam is given to both --set and --grid; allowed: one of them per key"),
])
def test_bad_overrides_are_one_line(sets, grids, message):
    with pytest.raises(SpecError) as error:
        load_spec(FIG2, sets=sets, grids=grids)
    assert message in str(error.value) and "\n" not in str(error.value)


def cli(capsys, *argv):
    code = main(["study", "run", str(FIG2), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_bad_overrides_and_bare_assignments_before_ray_starts(tmp_path, capsys):
    import ray

    storage = ["--storage", str(tmp_path / "runs")]
    code, out, err = cli(capsys, *storage, "--set", "cam.lamda=0.5")
    assert code == 2 and out == "" and err.startswith("wsss study run: --set cam.lamda=0.5: unknown key cam.lamda")
    assert err.count("\n") == 1
    code, _, err = cli(capsys, *storage, "cam.lam=0,0.5")
    assert code == 2 and err == ("wsss study run: 'cam.lam=0,0.5' is not an argument; allowed: --set cam.lam=0,0.5 "
                                 "(the same value in every trial) or --grid cam.lam=0,0.5 "
                                 "(a sweep over comma-separated values)\n")
    code, _, err = cli(capsys, *storage, "--set", "resources.gpus=0", "--set", "runtime.device=cpu",
                      "--set", "data.root=/nowhere")
    assert code == 2 and "/nowhere" in err and err.count("\n") == 1  # preflight checks the overridden data root
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit):  # an unknown option stays argparse's usage error
        main(["study", "run", str(FIG2), "--sett", "cam.lam=0"])


VOC_MINI = Path(os.environ.get("WSSS_VOC_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012-mini"))
TINY_SETTINGS = [
    "runtime.device=cpu", "runtime.threads=1", "runtime.loader_workers=0", "resources.gpus=0", "resources.cpus=1",
    "data.train_split=train", "eval.bg_thresholds=[0.2]", "eval.overlays=0", "eval.workers=0",
    "crf.iterations=1", "crf.scale=0.25", "affinity.iterations=8",
    "segmentation.head_channels=32", "segmentation.dilation=2",
    *(f"{stage}.{key}" for stage in ("cam", "affinity", "segmentation") for key in (
        "backbone=resnet_small", "weights=null", "crop_size=64", "batch_size=8", "epochs=1")),
    *(f"{stage}.{key}" for stage in ("cam", "segmentation") for key in (
        "resize_long=[64,80]", "infer_scales=[0.25]", "infer_flip=false")),
]
"""The paper's VOC pipeline shrunk to seconds on a CPU: small backbones from
random init, 64 px crops, one epoch, CRF at a quarter scale."""


def voc_subset(root: Path, train: int, val: int) -> Path:
    """A VOC2012 folder with the first `train` / `val` ids of the mini set (its
    image and mask folders linked): no config key caps the training images."""
    source = VOC_MINI / "VOC2012"
    target = root / "VOC2012"
    (target / "ImageSets" / "Segmentation").mkdir(parents=True)
    for folder in ("JPEGImages", "SegmentationClassAug"):
        (target / folder).symlink_to(source / folder, target_is_directory=True)
    for split, count in (("train", train), ("val", val)):
        ids = (source / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
        (target / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return target


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason=f"real VOC sample not found at {VOC_MINI}")
def test_the_shipped_fig2_spec_runs_on_real_voc_photos_through_overrides(tmp_path, capsys, monkeypatch):
    """fig2_gmp_lambda_fsl.yaml, unedited, on real photographs: --set points it at
    the data and shrinks it, --grid narrows its 22 points to one."""
    import json

    import pyarrow.dataset as ds

    from study.schema import STAGES
    from study.spec import parse_spec

    monkeypatch.setenv("WSSS_CACHE", str(tmp_path / "cache"))
    data = voc_subset(tmp_path / "voc", train=12, val=6)
    sets = [f"data.root={data}", *TINY_SETTINGS]
    argv = [*(a for s in sets for a in ("--set", s)), "--grid", "cam.lam=0.5", "--grid", "cam.fsl=true",
            "--name", "fig2_voc", "--storage", str(tmp_path / "runs"), "--quiet", "--no-dashboard"]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert "study fig2_voc: 1 trials" in out and "1 of 1 trials completed" in out

    rows = ds.dataset(tmp_path / "runs" / "fig2_voc" / "results").to_table().to_pylist()
    assert {(r["stage"], r["split"]) for r in rows} == {(s, split) for s in STAGES for split in ("train", "val")}
    config = json.loads(rows[0]["config_json"])
    assert config["data.root"] == str(data) and config["data.kind"] == "voc" and config["cam.pooling"] == "gmp"
    assert (config["cam.lam"], config["cam.fsl"], config["cam.backbone"], config["cam.epochs"]) == (0.5, True, "resnet_small", 1)
    assert config["cam.formulation"] == "icam" and config["cam.mode"] == "seam"  # the paper spec's own settings
    assert all(r["status"] == "completed" and 0 <= r["miou"] <= 1 for r in rows)

    record = json.loads((tmp_path / "runs" / "fig2_voc" / "study.json").read_text())
    expected = load_spec(FIG2, sets=sets, grids=["cam.lam=0.5", "cam.fsl=true"])
    assert parse_spec(record["spec"]) == expected  # `wsss study resume` reruns the overridden spec


def test_a_ray_job_driver_refuses_a_relative_storage(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys)  # the default storage, ./runs
    assert code == 2 and err == ("wsss study run: --storage='runs' is relative in a Ray job, whose working directory "
                                 "is a temporary copy; allowed: an absolute folder every node reaches, or a URI "
                                 "(s3://, gs://)\n")
    assert main(["study", "resume", "fig2_gmp", "--storage", "runs"]) == 2
    assert not (tmp_path / "runs").exists()
