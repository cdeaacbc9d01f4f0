"""The three-stage pipeline end to end on tiny synthetic data, stage outputs,
the cache across runs, both CAM modes, and the process-pool pieces."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_core.data import build_dataset, read_mask
from wsss_core.pipeline import load_config, run_pipeline
from wsss_core.pipeline import pool_tasks, runner, stage_affinity, stage_cam, stage_segmentation
from wsss_core.pipeline.cache import code_version
from wsss_core.pipeline.context import StageContext
from wsss_core.pipeline.evaluate import ImagePool, score_split
from wsss_core.pipeline.training import Runtime

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    seen = []
    result = run_pipeline(TINY, out, cache_dir=cache, on_stage_end=seen.append, progress=False)
    return result, seen, out, cache


def test_every_stage_reports_metrics_in_range(tiny_run) -> None:
    result, seen, out, _ = tiny_run
    assert [(r.stage, r.index, r.cache_hit) for r in seen] == [
        ("cam", 1, False), ("affinity", 2, False), ("segmentation", 3, False)]
    for stage in seen:
        assert set(stage.metrics) == {"train", "val"}
        for split in stage.metrics.values():
            assert 0.0 <= split["miou"] <= 1.0 and 0.0 <= split["contour_f"] <= 1.0
            assert len(split["per_class_iou"]) == len(split["per_class_f"]) == 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"cam", "affinity", "segmentation"}
    for stage, values in metrics.items():
        assert values["miou"] == values["splits"]["val"]["miou"]
        assert 0.0 <= values["contour_f"] <= 1.0
    assert metrics["cam"]["bg_threshold"] in (0.2, 0.4)
    assert metrics["cam"]["per_class_pointing"] == seen[0].metrics["val"]["per_class_pointing"]
    for split, values in seen[0].metrics.items():
        rates = values["per_class_pointing"]
        assert len(rates) == 6 and rates[0] is None
        assert all(0.0 <= r <= 1.0 for r in rates[1:] if r is not None) and any(r is not None for r in rates)
        assert values["pointing"] == pytest.approx(np.mean([r for r in rates if r is not None]))
    assert all("per_class_pointing" not in values for stage in seen[1:] for values in stage.metrics.values())
    sigma, mu = metrics["cam"]["fsl_sigma"], metrics["cam"]["fsl_mu"]
    assert sigma > 0 and (sigma, mu) != (2.0, 0.0)  # learned, moved from the initial values
    assert metrics["segmentation"]["fsl_sigma"] == sigma


def test_log_overlays_and_stage_outputs_are_written(tiny_run) -> None:
    result, seen, out, cache = tiny_run
    log = (out / "pipeline.log").read_text()
    for stage in ("cam", "affinity", "segmentation"):
        assert f"{stage} done" in log
        panels = sorted((out / "overlays" / stage).glob("*.png"))
        assert len(panels) == 1
        width, height = Image.open(panels[0]).size
        assert width > 4 * 64 and height > 64
    cam_dir = cache / "stages" / "cam" / seen[0].key
    train = build_dataset(result.config.data, "train", cache_dir=cache / "data")
    assert len(list((cam_dir / "labels" / "train").glob("*.png"))) == len(train) == 16
    assert len(list((cam_dir / "cams" / "train").glob("*.npz"))) == 16
    for sample in (train[i] for i in range(len(train))):
        allowed = {0, 255} | {int(c) + 1 for c in np.flatnonzero(sample.labels)}
        assert set(np.unique(read_mask(cam_dir / "labels" / "train" / f"{sample.name}.png")).tolist()) <= allowed
    aff_dir = cache / "stages" / "affinity" / seen[1].key
    assert len(list((aff_dir / "labels" / "train").glob("*.png"))) == 16
    assert not list((cache / "stages").glob("*/*.partial"))
    assert "checkpoint.pt" not in {p.name for p in cam_dir.iterdir()}


def test_second_run_hits_the_cache_and_a_stage3_change_reuses_stages_1_and_2(tiny_run, tmp_path: Path) -> None:
    first, _, _, cache = tiny_run
    again = run_pipeline(TINY, tmp_path / "again", cache_dir=cache, progress=False)
    assert [r.cache_hit for r in again.stages] == [True, True, True]
    assert again.metrics()["segmentation"]["miou"] == first.metrics()["segmentation"]["miou"]
    assert "cache hit" in (tmp_path / "again" / "pipeline.log").read_text()
    changed = run_pipeline(TINY, tmp_path / "changed", cache_dir=cache, progress=False,
                           overrides=["segmentation.epochs=2"])
    assert [r.cache_hit for r in changed.stages] == [True, True, False]
    assert [r.key for r in changed.stages[:2]] == [r.key for r in first.stages[:2]]
    assert changed.stages[2].key != first.stages[2].key


def test_contour_f_absent_rule_reaches_every_stage(tiny_run, tmp_path: Path) -> None:
    """eval.contour_f_absent=skip on one image per split: the classes missing from it
    are None in per_class_f and left out of contour_f, in all three stages."""
    _, _, _, cache = tiny_run
    skipped = run_pipeline(TINY, tmp_path / "skip", cache_dir=cache, progress=False,
                           overrides=["eval.contour_f_absent=skip", "eval.max_images=1"])
    for stage in skipped.stages:
        for split in stage.metrics.values():
            scores = split["per_class_f"][1:]
            scored = [f for f in scores if f is not None]
            assert split["contour_f"] == pytest.approx(sum(scored) / len(scored))
            if stage.stage != "segmentation":  # labels keep to the image's classes; DeepLab may not
                assert None in scores, stage.stage


def test_runs_that_differ_only_after_training_share_each_stages_training(tiny_run, tmp_path: Path) -> None:
    first, _, _, cache = tiny_run
    shared = run_pipeline(TINY, tmp_path / "shared", cache_dir=cache, progress=False,
                          overrides=["eval.overlays=2", "segmentation.crf=false"])
    assert [r.cache_hit for r in shared.stages] == [False, False, False]
    assert all(a.key != b.key for a, b in zip(shared.stages, first.stages))
    assert [a.model_key for a in shared.stages] == [b.model_key for b in first.stages]
    assert shared.metrics()["cam"]["model_key"] == first.stages[0].model_key
    log = (tmp_path / "shared" / "pipeline.log").read_text()
    assert all(f"{stage}: training shared with an earlier run" in log for stage in runner.STAGES)
    assert " epoch 1/" not in log, "a shared training must not train again"
    for a, b in zip(shared.stages, first.stages):
        assert a.extra["history"] == b.extra["history"] and a.extra["train_seconds"] == b.extra["train_seconds"]
        folders = [cache / "stages" / r.stage / r.key for r in (a, b)]
        assert (folders[0] / "model.pt").read_bytes() == (folders[1] / "model.pt").read_bytes()
    assert shared.metrics()["cam"]["miou"] == first.metrics()["cam"]["miou"]
    assert shared.metrics()["segmentation"]["miou"] != first.metrics()["segmentation"]["miou"], "no CRF acted"
    # New CAM inference settings: the CAM network is shared, AffinityNet trains on the new labels.
    flipped = run_pipeline(TINY, tmp_path / "flipped", cache_dir=cache, progress=False, until="affinity",
                           overrides=["cam.infer_flip=true"])
    log = (tmp_path / "flipped" / "pipeline.log").read_text()
    assert "cam: training shared" in log and "affinity: training shared" not in log and "affinity epoch 1/" in log
    assert flipped.metrics()["cam"]["miou"] != first.metrics()["cam"]["miou"]
    assert [r.model_key == f.model_key for r, f in zip(flipped.stages, first.stages)] == [True, False]
    retrained = run_pipeline(TINY, tmp_path / "retrained", cache_dir=cache, progress=False, until="cam",
                             overrides=["cam.lr=0.02"])
    assert "training shared" not in (tmp_path / "retrained" / "pipeline.log").read_text()
    assert retrained.stages[0].extra["history"] != first.stages[0].extra["history"]
    assert retrained.stages[0].model_key != first.stages[0].model_key
    assert len([p for p in (cache / "stages" / "cam_model").iterdir() if p.is_dir()]) == 2


def test_until_stops_after_the_named_stage_and_keeps_the_partial_metrics(tiny_run, tmp_path: Path) -> None:
    first, _, _, cache = tiny_run
    seen = []
    cam_only = run_pipeline(TINY, tmp_path / "cam", cache_dir=cache, progress=False, on_stage_end=seen.append, until="cam")
    assert [r.stage for r in cam_only.stages] == [r.stage for r in seen] == ["cam"]
    assert cam_only.stages[0].key == first.stages[0].key and cam_only.stages[0].cache_hit
    assert not (tmp_path / "cam" / "metrics.json").exists()
    assert set(json.loads((tmp_path / "cam" / "metrics.partial.json").read_text())) == {"cam"}
    with pytest.raises(ValueError, match=r"until='deeplab' is not allowed; use one of \('cam', 'affinity', 'segmentation'\)"):
        run_pipeline(TINY, tmp_path / "bad", cache_dir=cache, progress=False, until="deeplab")


def test_stage_keys_chain_upstream_changes_downstream(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    datasets = {s: build_dataset(cfg.data, s, cache_dir=tmp_path) for s in ("train", "val")}
    base = runner._stage_keys(cfg, datasets, code_version())

    def keys(*overrides: str) -> dict[str, str]:
        return runner._stage_keys(load_config(TINY, list(overrides)), datasets, code_version())

    changed = keys("cam.lam=0.9")
    assert all(changed[s] != base[s] for s in base)
    changed = keys("affinity.beta=4")
    assert changed["cam"] == base["cam"] and changed["affinity"] != base["affinity"]
    assert changed["segmentation"] != base["segmentation"]
    assert keys("eval.workers=3") == base  # the pool size does not change results
    assert keys("runtime.seed=1")["cam"] != base["cam"]
    assert keys("runtime.frozen_bf16=true")["cam"] != base["cam"], "bfloat16 features change the results"


def _another_value(value):
    """A different valid value of a config field; None where the test has none
    (None values, strings without a listed alternative choice)."""
    if isinstance(value, str):
        choices = {"one_minus_sum": "threshold", "threshold": "one_minus_sum", "logits": "probs", "probs": "logits"}
        return choices.get(value)
    change = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 0.125,
              tuple: lambda v: (*v, v[-1]) if v else (1.0,)}.get(type(value))
    return None if change is None else change(value)


@pytest.mark.parametrize("stage", runner.STAGES)
def test_training_keys_leave_out_exactly_the_inference_fields_and_eval(stage: str, tmp_path: Path) -> None:
    import dataclasses

    cfg = load_config(TINY)
    datasets = {s: build_dataset(cfg.data, s, cache_dir=tmp_path) for s in ("train", "val")}
    base = runner._stage_keys(cfg, datasets, "c")
    section = getattr(cfg, stage)
    names = {f.name for f in dataclasses.fields(section)}
    assert set(type(section).INFERENCE_FIELDS) <= names
    model = runner.model_stage(stage)
    for name in names:
        changed = _another_value(getattr(section, name))
        if changed is None:
            continue
        cfg2 = dataclasses.replace(cfg, **{stage: dataclasses.replace(section, **{name: changed})})
        keys = runner._stage_keys(cfg2, datasets, "c")
        assert keys[stage] != base[stage], name
        assert (keys[model] == base[model]) == (name in type(section).INFERENCE_FIELDS), name
    evaluated = runner._stage_keys(load_config(TINY, ["eval.overlays=3", "eval.max_images=2"]), datasets, "c")
    assert evaluated[stage] != base[stage] and evaluated[model] == base[model]


@pytest.mark.parametrize("stage", runner.STAGES)
def test_training_never_reads_what_its_training_key_leaves_out(stage: str, tiny_run, tmp_path: Path) -> None:
    """The stage trains twice on the same upstream labels: as configured, and with
    every INFERENCE_FIELDS value, the CRF and eval changed. Equal weights, or runs
    that differ only there would share weights trained differently (_stage_keys)."""
    import dataclasses

    _, seen, _, cache = tiny_run
    upstream = [cache / "stages" / r.stage / r.key for r in seen]
    base = load_config(TINY)
    section = getattr(base, stage)
    changed = {name: _another_value(getattr(section, name)) for name in type(section).INFERENCE_FIELDS}
    assert None not in changed.values(), f"give _another_value a choice for {changed}"
    other = dataclasses.replace(
        base, **{stage: dataclasses.replace(section, **changed)},
        crf=dataclasses.replace(base.crf, iterations=base.crf.iterations + 1, scale=0.5),
        eval=dataclasses.replace(base.eval, overlays=base.eval.overlays + 1, bg_thresholds=(0.3,)),
    )
    weights = []
    for name, cfg in (("base", base), ("changed", other)):
        work = tmp_path / name
        work.mkdir()
        ctx = _context(cfg, tmp_path)
        {"cam": lambda: stage_cam.train(ctx, work),
         "affinity": lambda: stage_affinity.train(ctx, upstream[0], work),
         "segmentation": lambda: stage_segmentation.train(ctx, upstream[1], work)}[stage]()
        weights.append(torch.load(work / "model.pt"))
    assert weights[0].keys() == weights[1].keys()
    differing = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not differing, f"{stage}: {changed} changed the trained weights {differing[:3]}"


def _context(cfg, tmp_path: Path) -> StageContext:
    runtime = Runtime.from_config(cfg.runtime, progress=False, log=logging.getLogger("test_pipeline"))
    datasets = {s: build_dataset(cfg.data, s, cache_dir=tmp_path / "data") for s in ("train", "val")}
    return StageContext(cfg, runtime, ImagePool(0), datasets, datasets["train"].num_classes)


@pytest.mark.parametrize("mode", ["plain", "seam"])
def test_both_cam_modes_train_and_the_loss_falls(mode: str, tmp_path: Path) -> None:
    cfg = load_config(TINY, [f"cam.mode={mode}", "cam.epochs=4", "cam.lr=0.02"])
    trained = stage_cam.train(_context(cfg, tmp_path), tmp_path)
    history = trained["history"]
    assert len(history) == 4
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"cls", "fsl"} <= set(history[0])
    assert ({"er", "ecr"} <= set(history[0])) == (mode == "seam")
    assert (tmp_path / "model.pt").is_file()


def test_pool_tasks_never_import_torch() -> None:
    code = "import sys, wsss_core.pipeline.pool_tasks; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_script_without_a_main_guard_fails_with_the_fix_instead_of_hanging(tmp_path: Path) -> None:
    """Pool workers (spawn) import the calling script; an unguarded run_pipeline call
    there would wait forever on the parent's stage lock."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from wsss_core.pipeline import run_pipeline\n"
        f"run_pipeline({str(TINY)!r}, {str(tmp_path / 'out')!r}, cache_dir={str(tmp_path / 'cache')!r},\n"
        "             progress=False, overrides=['eval.workers=1'])\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "guard the script's entry point with `if __name__ == \"__main__\":`" in proc.stderr


def test_pool_scores_equal_in_process_scores() -> None:
    rng = np.random.default_rng(0)
    items = []
    for _ in range(6):
        gt = rng.integers(0, 3, size=(24, 24)).astype(np.uint8)
        gt[:2] = 255
        pred = np.where(rng.random((24, 24)) < 0.7, gt % 255, rng.integers(0, 3, size=(24, 24))).astype(np.uint8)
        items.append(({"a": pred, "b": np.zeros_like(pred)}, gt))
    kwargs = dict(num_classes=3, bound_th=0.05, contour_f_absent="one", total=len(items), desc="t", progress=False)
    with ImagePool(0) as inline, ImagePool(2) as pool:
        assert score_split(pool, iter(items), **kwargs) == score_split(inline, iter(items), **kwargs)


def test_a_pool_worker_that_dies_is_reported_with_its_exit_code() -> None:
    with pytest.raises(RuntimeError, match=r"^cam scores \(val\): an image-pool worker \(eval.workers=1\) "
                                           r"died without passing back a Python error \(exit codes \[3\];.* set eval.workers=0"):
        with ImagePool(1) as pool:
            list(pool.imap(os._exit, [(3,)], desc="cam scores (val)", total=1, progress=False))


def test_confident_crf_labels_follow_the_alpha_rule() -> None:
    from wsss_core.crf import CRFConfig

    image = np.full((40, 40, 3), 90, dtype=np.uint8)
    image[10:30, 10:30] = (220, 40, 40)
    cam = np.zeros((1, 40, 40), dtype=np.float32)
    cam[0, 10:30, 10:30] = 1.0
    cam[0, 6:34, 6:34] = np.maximum(cam[0, 6:34, 6:34], 0.45)
    label = pool_tasks.confident_crf_label(image, cam, np.array([3]), 2.0, 4.0, CRFConfig())
    assert label[20, 20] == 3 and label[0, 0] == 0
    assert set(np.unique(label).tolist()) <= {0, 3, 255}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_with_amp_and_channels_last(tmp_path: Path) -> None:
    result = run_pipeline(TINY, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False,
                          overrides=["runtime.device=cuda", "runtime.amp=true", "runtime.channels_last=true"])
    assert all(0.0 <= r.metrics["val"]["miou"] <= 1.0 for r in result.stages)


def test_on_epoch_receives_every_training_epoch_of_every_stage(tmp_path: Path) -> None:
    records = []
    cfg = load_config(TINY)
    run_pipeline(cfg, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, on_epoch=records.append)
    seen = [(r.stage, r.epoch) for r in records]
    expected = [(stage, epoch) for stage in ("cam", "affinity", "segmentation")
                for epoch in range(1, getattr(cfg, stage).epochs + 1)]
    assert seen == expected
    assert all(r.images > 0 and r.seconds > 0 and r.step > 0 and "loss" in r.losses for r in records)
    for stage in ("cam", "affinity", "segmentation"):
        lrs = [r.lr for r in records if r.stage == stage]
        assert 0 < lrs[-1] and lrs == sorted(lrs, reverse=True) and lrs[0] <= getattr(cfg, stage).lr
