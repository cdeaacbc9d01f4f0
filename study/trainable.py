"""The Tune trainable: one trial = one run of the three-stage pipeline.

The trial reports to Tune after every stage (`stage_index` 1..3 is the
scheduler's time attribute) with a small checkpoint recording the stages done,
and after every training epoch, wherever the epoch runs (TrialReporter).
Stage outputs live in the pipeline's content-addressed cache on the study
storage, so trials sharing upstream settings reuse them, and a restarted trial
(worker killed, node lost, driver resumed) picks up finished stages from the
cache and an interrupted stage from its last epoch checkpoint.

With `resources.gpus > 0` the trial holds no GPU: it coordinates (Tune gives
it `trial_resources`), and each stage it must compute runs as a Ray task
holding the study's CPUs and GPUs, started once the trial holds the stage's
lease (study.stage_tasks); a trial waiting for another trial's lease leaves
the GPU to others. With `gpus == 0` the trial computes in its own process.

The Tune config of a trial is {"point": {"key": "p0003", "cam.lam": 0.5,
"runtime.seed": 0, ...}} in grid studies and {"cam.lam": ..., "__trial_index__":
i} (Optuna + Repeater, i indexes spec.seeds) in Optuna studies; trackers see
it flattened (study.trackers.TrialView), the stable point key kept as the trial id.
"""
from __future__ import annotations

import json
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.artifacts import overlay_folder, trial_folder, upload_log, upload_stage
from study.history import EpochRow
from study.leases import ActorLeases
from study.objective import STAGE_INDEX
from study.schema import STAGES
from study.spec import SEED_KEY, StudySpec
from study.stage_store import check_reachable, open_stage_store
from study.stage_tasks import TRIAL_CPUS, StageTasks

PROGRESS_FILE = "progress.json"
TRIAL_INDEX = "__trial_index__"
PAYLOAD_KEY = "wsss_json"
"""The result key of a stage's outcome (study.callback writes it to Parquet), as a JSON
string: TensorBoard logs the scalars beside it and skips it (lists of names and NaN-led
scores would draw warnings), and trackers never see it (study.trackers)."""
EPOCH_KEY = "wsss_epoch"
"""The result key of one training epoch's history row (study.history.EpochRow), as a JSON string."""


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its config (pickled to the workers).

    cache: the pipeline's stage cache, a folder every node mounts or a
    pyarrow filesystem URI (s3://); reach_marker: a file the driver wrote into
    it, read first by every trial. study_uri: the study folder (local path or
    URI) that receives the trial's artifacts.
    """

    study: str
    spec: StudySpec
    cache: str
    reach_marker: str
    study_uri: str


def trial_point(config: dict[str, Any], spec: StudySpec) -> tuple[str | None, dict[str, Any]]:
    """(stable point key or None, dotted point values incl. runtime.seed) of a Tune config."""
    if "point" in config:
        point = dict(config["point"])
        return str(point.pop("key")), point
    keys = {axis.key for axis in spec.axes}
    point = {key: value for key, value in config.items() if key in keys}
    point[SEED_KEY] = spec.seeds[int(config.get(TRIAL_INDEX, 0)) % len(spec.seeds)]
    return None, point


def study_trial_id(config: dict[str, Any], spec: StudySpec, tune_trial_id: str) -> str:
    """The trial id stored in Parquet: the grid point key (stable across driver
    restarts, so a resumed study rewrites rather than duplicates rows), else
    Tune's trial id."""
    key, _ = trial_point(config, spec)
    return key or tune_trial_id


def trial_config(config: dict[str, Any], spec: StudySpec) -> Any:
    """The validated PipelineConfig of a trial."""
    from wsss_core.pipeline.config import load_config

    return load_config(spec.pipeline_dict(trial_point(config, spec)[1]))


def sized_to_resources(pipeline_config: Any, cpus: float) -> Any:
    """The trial's config with torch threads (when unset) and the CRF/eval pool
    sized to its CPUs: `cpus` threads, at most `cpus - 1` pool processes."""
    import dataclasses

    runtime, evaluation = pipeline_config.runtime, pipeline_config.eval
    whole = max(1, int(cpus))
    return dataclasses.replace(
        pipeline_config,
        runtime=dataclasses.replace(runtime, threads=runtime.threads or whole),
        eval=dataclasses.replace(evaluation, workers=min(evaluation.workers, whole - 1)),
    )


def flat_trial_config(config: dict[str, Any], spec: StudySpec) -> dict[str, Any]:
    """Dotted-key flattened pipeline config of a trial (Parquet's config columns)."""
    from wsss_core.pipeline.config import flatten_config

    return flatten_config(trial_config(config, spec))


def trial_resources(spec: StudySpec) -> dict[str, float]:
    """What Tune reserves for a trial: its CPUs and GPUs, or, when the study uses
    GPUs, TRIAL_CPUS and no GPU (its stages run as GPU tasks); custom resources always."""
    resources = spec.resources
    if resources.gpus > 0:
        return {"cpu": TRIAL_CPUS, **resources.custom}
    return {"cpu": resources.cpus, "gpu": resources.gpus, **resources.custom}


def epoch_metrics(record: Any) -> dict[str, float]:
    """Tracker metrics of one training epoch (an EpochRecord): `train/<stage>/<loss part>`
    ("loss" is the minimised sum), `train/<stage>/lr`, `.../images_per_second`, `.../epoch`."""
    prefix = f"train/{record.stage}"
    return {
        **{f"{prefix}/{name}": float(value) for name, value in record.losses.items()},
        f"{prefix}/lr": float(record.lr),
        f"{prefix}/images_per_second": float(record.images_per_second),
        f"{prefix}/epoch": int(record.epoch),
    }


def stage_metrics(result: Any) -> dict[str, Any]:
    """Tracker and scheduler metrics of one finished stage (a StageResult): the
    val split's scores, also under `<stage>_<name>`, and the stage index."""
    val = result.metrics.get("val", {})
    return {
        STAGE_INDEX: STAGES.index(result.stage) + 1,
        "miou": val.get("miou"),
        "contour_f": val.get("contour_f"),
        **{f"{result.stage}_{name}": val.get(name) for name in ("miou", "contour_f")},
    }


@dataclass
class TrialReporter:
    """What a running trial tells Tune and copies to the study storage.

    After each stage: the stage's files, then one result (stage_metrics and the
    JSON payload study.callback stores) with a checkpoint naming the stages
    done; stages reported before a restart (`done`, from the Tune checkpoint)
    are not reported again. After each training epoch: pipeline.log, then one
    result with epoch_metrics and the epoch's history row (EPOCH_KEY). An epoch
    result carries the stage index of the last stage reported and no val
    metric, so neither ASHA nor the searcher acts on it (Tune's strict metric
    check is off in the driver, study.runner.ray_session).
    """

    setup: TrialSetup
    trial_id: str
    out_dir: Path
    node: str
    code_version: str
    class_names: list[str]
    done: int = 0

    def stage_end(self, result: Any) -> None:
        index = STAGES.index(result.stage) + 1
        if index <= self.done:
            return
        upload_stage(self.out_dir, self.setup.study_uri, self.trial_id, result.stage)
        self._report_stage({**stage_metrics(result), PAYLOAD_KEY: json.dumps(self._payload(result))}, result.stage)
        self.done = index

    def epoch_end(self, record: Any) -> None:
        from ray import tune

        upload_log(self.out_dir, self.setup.study_uri, self.trial_id)
        row = EpochRow(stage=record.stage, epoch=record.epoch, epochs=record.epochs, step=record.step,
                       losses=dict(record.losses), lr=float(record.lr), images=record.images,
                       seconds=record.seconds, finished_at=time.time(), node=self.node)
        tune.report({STAGE_INDEX: self.done, **epoch_metrics(record), EPOCH_KEY: json.dumps(row.to_dict())})

    def _payload(self, result: Any) -> dict[str, Any]:
        """The stage's outcome as study.callback stores it (one Parquet row per split)."""
        finished = time.time()
        return {
            "stage": result.stage,
            "metrics": result.metrics,
            "seconds": result.seconds,
            "cache_hit": bool(result.cache_hit),
            "stage_key": result.key,
            "model_key": result.model_key,
            "learned": dict(result.learned or {}),
            "started_at": finished - float(result.seconds),
            "finished_at": finished,
            "node": self.node,
            "trial_dir": trial_folder(self.trial_id),
            "overlay_dir": overlay_folder(self.trial_id, result.stage),
            "code_version": self.code_version,
            "class_names": self.class_names,
        }

    @staticmethod
    def _report_stage(metrics: dict[str, Any], stage: str) -> None:
        """Report with a checkpoint holding the stage index (read back after a restart)."""
        from ray import tune

        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps({STAGE_INDEX: metrics[STAGE_INDEX], "stage": stage}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def stages_done() -> int:
    """The stage index in the trial's Tune checkpoint (0 without one)."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        return int(json.loads((Path(folder) / PROGRESS_FILE).read_text())[STAGE_INDEX])


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Run the pipeline for one trial, reporting after each stage and each training epoch (TrialReporter)."""
    import ray
    from ray import tune

    from wsss_core.data import build_dataset
    from wsss_core.pipeline import run_pipeline
    from wsss_core.pipeline.cache import code_version
    from wsss_core.pipeline.runner import LOG_NAME

    pipeline_config = sized_to_resources(trial_config(config, setup.spec), setup.spec.resources.cpus)
    trial_id = study_trial_id(config, setup.spec, tune.get_context().get_trial_id())
    scratch = tempfile.TemporaryDirectory(prefix=f"wsss-{trial_id}-")
    out_dir = Path(scratch.name)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    check_reachable(setup.reach_marker, node)
    store, local_cache = open_stage_store(setup.cache)
    class_names = list(build_dataset(pipeline_config.data, "val", cache_dir=local_cache / "data").class_names)
    reporter = TrialReporter(setup, trial_id, out_dir, node, code_version(), class_names, done=stages_done())
    resources = setup.spec.resources
    compute = None if resources.gpus == 0 else StageTasks(
        pipeline_config, setup.cache, store, cpus=resources.cpus, gpus=resources.gpus, log_file=out_dir / LOG_NAME,
        on_epoch=reporter.epoch_end)
    with scratch:
        run_pipeline(pipeline_config, out_dir, cache_dir=local_cache, on_stage_end=reporter.stage_end,
                     on_epoch=reporter.epoch_end, progress=False, store=store, compute=compute,
                     leases=ActorLeases(f"{setup.study}/{trial_id}", ttl=setup.spec.failure.lease_timeout))
