"""Stages computed by Ray tasks that hold the GPU, so a trial waiting for a
stage's lease holds none.

When a study asks for GPUs (`resources.gpus > 0`), a trial is a coordinator:
it asks Tune for TRIAL_CPUS CPU (plus the study's custom resources) and no
GPU, takes a stage's lease as usual (`study.leases`), and only then starts one
Ray task with the study's CPUs and GPUs that computes and publishes that stage
into the stage store (`wsss_core.pipeline.runner.compute_stage`, epoch
checkpoints saved to the store as in a trial). The trial keeps renewing the
lease while the task runs, reports each training epoch the task sends it
(study.epoch_relay), then reads the published outputs and reports as before
(its cache_hit is False: it caused the computation). A cache hit starts
no task. With `gpus == 0` nothing changes: the trial holds its CPUs and
computes in its own process.

Failures: an error raised in the task is raised in the trial with its own
type and message (the Parquet error line is the same as for a stage computed
in the trial); a task whose worker or node dies fails the trial (the task is
not retried by Ray), Tune retries the trial, which takes its own lease back at
once and resumes from the saved progress. A trial that dies takes its task
with it (Ray kills the tasks a dead worker owns) and stops renewing its
lease, which expires after `failure.lease_timeout`.

With `runtime.device: cpu` the GPU is a scheduling resource only (the task
holds it and computes on the CPU): how the tests exercise this on a machine
without one.
"""
from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from study.epoch_relay import EpochRelay, EpochSender

TRIAL_CPUS = 0.01
"""What a coordinating trial asks for: Tune needs a non-empty request, and a
whole CPU per waiting trial could leave no CPU for the stage tasks (N trials of
1 CPU on N CPUs would deadlock)."""


@ray.remote(max_retries=0)
def _compute(config: Any, stage: str, key: str, cache: str, epochs: EpochSender) -> str:
    """Compute and publish `stage` of `config` into the stage cache, sending each
    training epoch (with the log lines before it) to the trial; this task's log."""
    from study.stage_store import open_stage_store
    from wsss_core.pipeline.runner import compute_stage

    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger(f"wsss.stage_task.{uuid.uuid4().hex}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    epochs.log = text
    try:
        store, local = open_stage_store(cache)
        compute_stage(config, stage, cache_dir=local, store=store, key=key, log=log, on_epoch=epochs)
    finally:
        log.removeHandler(handler)
    return text.getvalue()


class StageTasks:
    """run_pipeline's `compute` hook: each missing stage computed by a Ray task
    holding `cpus` CPUs and `gpus` GPUs (see module doc).

    config: the trial's PipelineConfig; cache: the stage cache path or URI;
    store: the trial's StageStore (reads the published outputs); log_file: the
    trial's pipeline.log, which receives the task's log lines; on_epoch: called
    in the trial with each training epoch of the task, while it runs
    (study.epoch_relay).
    """

    def __init__(self, config: Any, cache: str, store: Any, *, cpus: float, gpus: float, log_file: Path,
                 on_epoch: Callable[[Any], None]) -> None:
        self.config = config
        self.cache = cache
        self.store = store
        self.cpus = cpus
        self.gpus = gpus
        self.log_file = log_file
        self.on_epoch = on_epoch

    def __call__(self, stage: str, key: str) -> Path:
        # "DEFAULT": scheduled on the cluster, not inside the trial's (CPU-only) placement group
        task = _compute.options(num_cpus=self.cpus, num_gpus=self.gpus, name=f"wsss-{stage}-{key}",
                                scheduling_strategy="DEFAULT")
        relay = EpochRelay(self.on_epoch, self.log_file)
        try:
            lines = relay.wait(task.remote(self.config, stage, key, self.cache, relay.sender))
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from error
            raise
        finally:
            relay.close()
        with open(self.log_file, "a") as handle:
            handle.write(lines)
        final = self.store.fetch(stage, key)
        if final is None:
            raise RuntimeError(f"{stage}: the stage task finished but {key} is not in the stage cache {self.cache}")
        return final
