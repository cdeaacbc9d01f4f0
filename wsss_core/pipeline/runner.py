"""`run_pipeline`: one trial, all three stages, each reused from the
content-addressed cache when its key matches, resumed from its last epoch
checkpoint when a previous run was killed. A stage also has a training key,
which leaves out the settings read only after training (the config's
INFERENCE_FIELDS, `eval`, the CRF): runs that differ only there train the
stage once and share its weights (`<stage>_model` in the store).

`compute_stage` computes and publishes one stage of a config into a store:
what a cluster runs where the accelerator is, when `run_pipeline`'s `compute`
hook sends a missing stage elsewhere (the caller keeps coordinating: it holds
the stage's lease meanwhile and then reads the published outputs)."""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from wsss_core.data import build_dataset
from wsss_core.pipeline import stage_affinity, stage_cam, stage_segmentation
from wsss_core.pipeline.cache import (
    FileLeases, LocalStageStore, StageLeases, StageStore, atomic_write_text, code_version, default_cache_dir,
    file_digest, hash_json, stage_key,
)
from wsss_core.pipeline.checkpoint import CHECKPOINT_NAME
from wsss_core.pipeline.config import PipelineConfig, config_to_dict, load_config
from wsss_core.pipeline.context import StageContext, read_stage_metrics
from wsss_core.pipeline.evaluate import ImagePool
from wsss_core.pipeline.lifetime import Interrupted, stop_on_signals
from wsss_core.pipeline.preflight import check_folder, check_inputs
from wsss_core.pipeline.training import TRAINED_FILES, TRAINED_NAME, EpochRecord, Runtime
from wsss_core.stages import STAGES

LOG_NAME = "pipeline.log"
METRICS_NAME = "metrics.json"
PARTIAL_METRICS_NAME = "metrics.partial.json"

StageCompute = Callable[[str, str], Path]
"""compute(stage, key): compute and publish a missing stage somewhere else
(called while this process holds the key's lease) and return the local folder
of its published outputs (e.g. the store's `fetch`)."""


@dataclass(frozen=True)
class StageResult:
    """One finished stage. metrics: {split: {"miou", "contour_f", "per_class_iou",
    "per_class_f"}} (values in [0, 1], per-class None where undefined); learned:
    {"fsl_sigma", "fsl_mu"} (None when FSL is off and after stages 2-3 they
    repeat stage 1's values); extra: stage specifics (cam: chosen bg_threshold and
    the sweep curve; all: per-epoch loss history). key: the stage's cache key;
    model_key: its training key (equal in runs that share the trained weights)."""

    stage: str
    index: int
    metrics: dict[str, dict[str, Any]]
    seconds: float
    cache_hit: bool
    key: str
    model_key: str
    learned: dict[str, float | None]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResult:
    """All stage results of a run, its folder and its config."""

    stages: list[StageResult]
    out_dir: Path
    config: PipelineConfig
    code_version: str

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The content of metrics.json."""
        return {result.stage: _stage_summary(result) for result in self.stages}


def run_pipeline(
    config: PipelineConfig | dict | str | Path,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    on_stage_end: Callable[[StageResult], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
    store: StageStore | None = None,
    leases: StageLeases | None = None,
    compute: StageCompute | None = None,
    until: str = STAGES[-1],
) -> PipelineResult:
    """Run (or reuse) the three stages, or those up to and including `until`
    (one of STAGES, e.g. "cam" for a CAM-stage ablation), and write out_dir/{metrics.json,
    pipeline.log, config.yaml, overlays/<stage>/*.png}.

    config: a PipelineConfig, a dict or a YAML path (see load_config);
    overrides: "section.key=value" strings on top. cache_dir: stage outputs
    (default $WSSS_CACHE or ~/.cache/wsss) and generated data. store / leases:
    where stage outputs live and who computes a missing one (default: a
    LocalStageStore and FileLeases on cache_dir; a cluster passes its own).
    compute: where a missing stage is computed (default: in this process);
    when given, this process only coordinates: its runtime is the CPU one
    (runtime.device is left to the compute) and it starts no image pool.
    on_stage_end(StageResult) is called after every stage, cache hits included;
    on_epoch(EpochRecord) after every training epoch this process runs.

    Inputs are checked first (config, folders, every data file, crop sizes):
    a bad one raises ConfigError, DataError or FileNotFoundError before
    anything is written to out_dir. Finished stages are recorded in
    metrics.partial.json; metrics.json appears only when all three are done.
    In the main thread SIGINT/SIGTERM raise `Interrupted` after stopping the
    pool (rerun to resume).

    CRF and evaluation run in a "spawn" process pool (eval.workers), so a
    script calling this must guard its entry point with
    `if __name__ == "__main__":`, as for any multiprocessing code; called
    while a pool worker imports an unguarded script it raises RuntimeError
    (the worker would otherwise wait forever on the parent's stage lock).
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError("run_pipeline was called while a process-pool worker imported your script; "
                           "guard the script's entry point with `if __name__ == \"__main__\":`")
    if until not in STAGES:
        raise ValueError(f"until={until!r} is not allowed; use one of {STAGES}")
    with stop_on_signals():
        cfg = load_config(config, overrides)
        out = check_folder(out_dir, "out_dir")
        cache_root = check_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache_dir")
        datasets = {split: build_dataset(cfg.data, split, cache_dir=cache_root / "data") for split in ("train", "val")}
        check_inputs(cfg, datasets, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS_NAME).unlink(missing_ok=True)
        log, handlers = _open_log(out, progress)
        try:
            cache = (store or LocalStageStore(cache_root), leases or FileLeases(cache_root), compute)
            return _run_stages(cfg, datasets, out, cache, on_stage_end, on_epoch, progress, log, until)
        except Interrupted as error:
            log.error("pipeline %s; rerun the same command to resume", error)
            raise
        except Exception:
            log.exception("pipeline failed")
            raise
        finally:
            for handler in handlers:
                log.removeHandler(handler)
                handler.close()


def _run_stages(
    cfg: PipelineConfig,
    datasets: dict[str, Any],
    out: Path,
    cache: tuple[StageStore, StageLeases, StageCompute | None],
    on_stage_end: Callable[[StageResult], None] | None,
    on_epoch: Callable[[EpochRecord], None] | None,
    progress: bool,
    log: logging.Logger,
    until: str,
) -> PipelineResult:
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    here = cache[2] is None
    runtime = dataclasses.replace(_runtime(cfg if here else _coordinator(cfg), progress, log), on_epoch=on_epoch)
    num_classes = datasets["train"].num_classes
    code = code_version()
    keys = _stage_keys(cfg, datasets, code)
    log.info("pipeline: %d train / %d val images, K=%d classes, device %s, code %s, cache %s",
             len(datasets["train"]), len(datasets["val"]), num_classes,
             runtime.device if here else "of the compute", code, cache[0])
    results: list[StageResult] = []
    with ImagePool(cfg.eval.workers if here else 0) as pool:
        ctx = StageContext(cfg, runtime, pool, datasets, num_classes)
        dirs: dict[str, Path] = {}
        for index, stage in enumerate(STAGES[:STAGES.index(until) + 1], start=1):
            result, dirs[stage] = _run_stage(ctx, stage, index, keys, cache, dirs, log)
            if stage != "cam":
                result = StageResult(**{**asdict(result), "learned": results[0].learned})
            _copy_overlays(dirs[stage] / "overlays", out / "overlays" / stage)
            results.append(result)
            complete = len(results) == len(STAGES)
            atomic_write_text(out / (METRICS_NAME if complete else PARTIAL_METRICS_NAME), _metrics_text(results))
            if complete:
                (out / PARTIAL_METRICS_NAME).unlink(missing_ok=True)
            if on_stage_end is not None:
                on_stage_end(result)
    return PipelineResult(results, out, cfg, code)


def _metrics_text(results: list[StageResult]) -> str:
    return json.dumps({r.stage: _stage_summary(r) for r in results}, indent=1, sort_keys=True)


def _run_stage(
    ctx: StageContext, stage: str, index: int, keys: dict[str, str],
    cache: tuple[StageStore, StageLeases, StageCompute | None], dirs: dict[str, Path], log: logging.Logger,
) -> tuple[StageResult, Path]:
    """Reuse the finished outputs of the stage's key, else take its lease and
    compute them (resuming saved progress; here or through `compute`), unless
    another holder finished them meanwhile. The compute also holds the lease of
    the training key, so runs that share it train once."""
    store, leases, compute = cache
    key, model = keys[stage], model_stage(stage)
    start = time.perf_counter()
    final, done = store.fetch(stage, key), True
    if final is None:
        with leases.hold(stage, key):
            final = store.fetch(stage, key)
            if final is None:
                with leases.hold(model, keys[model]):
                    if compute is None:
                        final = _compute_stage(ctx, stage, keys, store, dirs, log)
                    else:
                        log.info("%s: computing %s elsewhere", stage, key)
                        final = compute(stage, key)
                done = False
    if done:
        log.info("%s: cache hit %s (%s)", stage, key, final)
    seconds = time.perf_counter() - start
    stored = read_stage_metrics(final)
    learned = stored["learned"] or {"fsl_sigma": None, "fsl_mu": None}
    result = StageResult(stage, index, stored["splits"], seconds, done, key, keys[model], learned, stored["extra"])
    val = result.metrics.get("val", {})
    log.info("%s done in %.1f s%s: val mIoU %.4f, contour F %.4f", stage, seconds, " (cache hit)" if done else "",
             val.get("miou", float("nan")), val.get("contour_f", float("nan")))
    return result, final


def _compute_stage(
    ctx: StageContext, stage: str, keys: dict[str, str], store: StageStore, dirs: dict[str, Path],
    log: logging.Logger,
) -> Path:
    """Compute and publish the stage (the caller holds the leases of its key and
    training key); training is skipped when a run with the same training key
    published its weights, and published for the next one otherwise."""
    key, model = keys[stage], model_stage(stage)
    log.info("%s: computing %s", stage, key)
    work = store.work_dir(stage, key)
    trained = store.fetch(model, keys[model])
    if trained is not None and not (work / TRAINED_NAME).is_file():
        log.info("%s: training shared with an earlier run (same training settings, %s %s)", stage, model, keys[model])
        _link_files(trained, work, TRAINED_FILES)
    runtime = dataclasses.replace(ctx.runtime, on_checkpoint=lambda: store.save_progress(stage, key))
    ctx = dataclasses.replace(ctx, runtime=runtime)
    if stage == "cam":
        stage_cam.run(ctx, work)
    elif stage == "affinity":
        stage_affinity.run(ctx, dirs["cam"], work)
    else:
        stage_segmentation.run(ctx, dirs["cam"], dirs["affinity"], work)
    if trained is None:
        _link_files(work, store.work_dir(model, keys[model]), TRAINED_FILES)
        store.publish(model, keys[model])
    return store.publish(stage, key, drop=(CHECKPOINT_NAME,))


def model_stage(stage: str) -> str:
    """The store's name for the trained weights of `stage`, kept under its training key."""
    return f"{stage}_model"


def _link_files(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Hard-link (copy across file systems) source/name to target/name, in order."""
    for name in names:
        (target / name).unlink(missing_ok=True)
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)


def compute_stage(
    config: PipelineConfig | dict | str | Path,
    stage: str,
    *,
    cache_dir: str | Path,
    store: StageStore | None = None,
    key: str | None = None,
    log: logging.Logger | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> str:
    """Compute one stage of `config` (resuming saved progress) and publish it
    into `store` (default: a LocalStageStore on cache_dir); its key. The
    upstream stages must be finished in the store, and the caller must hold
    the leases of the stage's key and of its training key (`model_stage(stage)`).
    key: the key the caller derived; a different one here (other code, data or
    weights on this machine) is a RuntimeError before any work. Generated data
    goes to cache_dir/data, as in run_pipeline. on_epoch: as in run_pipeline."""
    cfg = load_config(config)
    cache_root = check_folder(cache_dir, "cache_dir")
    store = store or LocalStageStore(cache_root)
    log = log or logging.getLogger("wsss.pipeline.compute_stage")
    datasets = {split: build_dataset(cfg.data, split, cache_dir=cache_root / "data") for split in ("train", "val")}
    keys = _stage_keys(cfg, datasets, code_version())
    if key is not None and keys[stage] != key:
        raise RuntimeError(f"{stage}: this machine derives key {keys[stage]}, the caller {key}; code, data or "
                           "weights differ between the caller's machine and this one")
    dirs = {}
    for upstream in STAGES[:STAGES.index(stage)]:
        folder = store.fetch(upstream, keys[upstream])
        if folder is None:
            raise RuntimeError(f"{stage}: upstream stage {upstream} ({keys[upstream]}) is not finished in {store}")
        dirs[upstream] = folder
    runtime = dataclasses.replace(_runtime(cfg, False, log), on_epoch=on_epoch)
    log.info("%s: computing on device %s", stage, runtime.device)
    with ImagePool(cfg.eval.workers) as pool:
        ctx = StageContext(cfg, runtime, pool, datasets, datasets["train"].num_classes)
        _compute_stage(ctx, stage, keys, store, dirs, log)
    return keys[stage]


def _runtime(cfg: PipelineConfig, progress: bool, log: logging.Logger) -> Runtime:
    """The resolved runtime; sets torch's thread count when runtime.threads is set.
    frozen_bf16 acts only on frozen backbones: with none it is turned off here
    (no warning about this device; the stage keys come from `cfg`)."""
    if not any(section.freeze_backbone for section in (cfg.cam, cfg.affinity, cfg.segmentation)):
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, frozen_bf16=False))
    runtime = Runtime.from_config(cfg.runtime, progress=progress, log=log)
    if cfg.runtime.threads is not None:
        torch.set_num_threads(cfg.runtime.threads)
    return runtime


def _coordinator(cfg: PipelineConfig) -> PipelineConfig:
    """The config of a process that computes no stage itself: device cpu (the
    runtime is resolved but never trains, and CUDA need not exist here), and
    frozen_bf16 off (it computes no maps: no warning about this CPU; the stage
    keys come from `cfg`)."""
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device="cpu", frozen_bf16=False))


def _stage_keys(cfg: PipelineConfig, datasets: dict[str, Any], code: str) -> dict[str, str]:
    """The store's keys by store name. cam <- (cam, crf, eval, seed/amp/channels_last/frozen_bf16);
    affinity <- (affinity, ...) + cam key; segmentation <- (segmentation, crf, ...) + affinity key.
    <stage>_model (the training key) <- the stage's section less its INFERENCE_FIELDS, its
    weights, that runtime part and the upstream stage's key without `eval` anywhere in the
    chain (a stage trains on its upstream's train-split labels, which `eval` does not touch)."""
    sections = config_to_dict(cfg)
    runtime = {k: sections["runtime"][k] for k in ("seed", "amp", "channels_last", "frozen_bf16")}
    evaluation = {k: v for k, v in sections["eval"].items() if k != "workers"}
    reads_crf = {"cam": True, "affinity": False, "segmentation": True}
    identity = _dataset_identity(cfg, datasets)
    keys: dict[str, str] = {}
    upstream = labels_upstream = None
    for stage in STAGES:
        weights = _weights_digest(sections[stage].get("weights"))
        inference = type(getattr(cfg, stage)).INFERENCE_FIELDS
        training = {k: v for k, v in sections[stage].items() if k not in inference}
        model = model_stage(stage)
        keys[model] = stage_key(model, {stage: training, "weights": weights, "runtime": runtime},
                                labels_upstream, identity, code)
        own = {stage: sections[stage], "weights": weights, "runtime": runtime}
        if reads_crf[stage]:
            own["crf"] = sections["crf"]
        labels_upstream = stage_key(stage, own, labels_upstream, identity, code)
        keys[stage] = upstream = stage_key(stage, {**own, "eval": evaluation}, upstream, identity, code)
    return keys


def _weights_digest(weights: Any) -> str | None:
    """Contents hash of a local weights file (None for names such as "default")."""
    return file_digest(weights) if isinstance(weights, str) and Path(weights).is_file() else None


def _dataset_identity(cfg: PipelineConfig, datasets: dict[str, Any]) -> str:
    """Hash of the data config (the generated folder's path left out for
    synthetic data), the resolved root, the image ids of both splits and the
    contents of a labels file (label_source)."""
    data = config_to_dict(cfg)["data"]
    identity: dict[str, Any] = {"data": data}
    if Path(str(cfg.data.label_source)).is_file():
        identity["labels"] = file_digest(cfg.data.label_source)
    if not (cfg.data.kind == "synthetic" and cfg.data.root is None):
        identity["root"] = str(Path(getattr(datasets["train"], "root", cfg.data.root)).resolve())
    for split, dataset in datasets.items():
        identity[split] = getattr(dataset, "names", len(dataset))
    return hash_json(identity)


def _stage_summary(result: StageResult) -> dict[str, Any]:
    """metrics.json entry: val metrics at top level, every split under "splits"."""
    val = result.metrics.get("val", {})
    summary: dict[str, Any] = {
        "miou": val.get("miou"),
        "contour_f": val.get("contour_f"),
        "per_class_iou": val.get("per_class_iou"),
        "per_class_f": val.get("per_class_f"),
        "splits": result.metrics,
        "fsl_sigma": result.learned.get("fsl_sigma"),
        "fsl_mu": result.learned.get("fsl_mu"),
        "seconds": result.seconds,
        "cache_hit": result.cache_hit,
        "key": result.key,
        "model_key": result.model_key,
    }
    for key in ("pointing", "per_class_pointing"):  # the CAM stage's pointing game
        if key in val:
            summary[key] = val[key]
    if "bg_threshold" in result.extra:  # the CAM stage's chosen threshold
        summary["bg_threshold"] = result.extra["bg_threshold"]
    return summary


def _copy_overlays(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target)


class _TqdmHandler(logging.StreamHandler):
    """Log lines written through tqdm, so they do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def _open_log(out: Path, progress: bool) -> tuple[logging.Logger, list[logging.Handler]]:
    """A logger for this run writing out/pipeline.log (and stderr when progress)."""
    log = logging.getLogger(f"wsss.pipeline.{out.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(out / LOG_NAME)]
    if progress:
        handlers.append(_TqdmHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    return log, handlers
