"""Run, resume, inspect and list studies.

A study lives in `<storage>/<name>/`: Tune's experiment (trial folders,
experiment state), `study.json` (the validated spec, so `resume` needs only the
name), `results/` (the Parquet store), `trials/<id>/` (artifacts) and
`optuna.journal`. The pipeline's stage cache lives in `<storage>/_cache` (a
local or shared folder, or the object store itself for s3:// / gs://), so
every study in the storage reuses finished upstream stages; `cache_dir`
overrides it. Before any trial runs, the driver writes a marker into the cache
that every trial must read (a node that cannot reach the cache fails with one
line; the driver deletes its marker when the study ends), and starts the
cluster's stage-lease table (`study.leases`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from study.schema import STAGES, STUDY_FILE
from study.spec import SpecError, StudySpec, check_study_name, expand_grid, num_trials, optuna_space, parse_spec
from study.store import ResultsStore
from study.trainable import TrialSetup, run_trial, study_trial_id, trial_resources

DASHBOARD_HOST = "127.0.0.1"
"""A local Ray's dashboard listens on this machine only (it can start jobs)."""
CACHE_FOLDER = "_cache"


class StudyError(ValueError):
    """A study that cannot be run, resumed or found; one line for the user."""


@dataclass(frozen=True)
class StudyLocation:
    """Where a study lives. storage: a local folder (made absolute) or a URI."""

    storage: str
    name: str

    @property
    def uri(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def results(self) -> str:
        return f"{self.uri}/results"

    @property
    def is_local(self) -> bool:
        return "://" not in self.storage


def locate(storage: str | os.PathLike, name: str) -> StudyLocation:
    """A StudyLocation; file:// URIs become plain local paths."""
    text = str(storage)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" not in text:
        text = str(Path(text).expanduser().resolve())
    return StudyLocation(text, name)


def run_study(
    spec: StudySpec,
    *,
    storage: str | os.PathLike,
    name: str | None = None,
    address: str | None = None,
    cache_dir: str | None = None,
    verbose: int = 1,
    dashboard: bool = True,
) -> list[dict[str, Any]]:
    """Run every trial of `spec` under `<storage>/<name>` (default: spec.name) and
    return the status table. `address`: None starts a local Ray sized to the
    machine (or joins the cluster in $RAY_ADDRESS, as a `ray job submit`
    driver does, or uses the Ray already initialised in this process); "auto"
    or "ray://host:port" joins a cluster. `dashboard`: a local Ray starts its
    dashboard (see ray_session).

    Before Ray starts, the name is checked (one folder name), every data
    configuration of the study is loaded and its files checked
    (study.preflight), and each tracker's package is looked up: a bad input
    is a StudyError and nothing is written."""
    location = locate(storage, _checked_name(name or spec.name))
    _check_client_storage(address, location)
    filesystem, path = _filesystem(location.uri)
    if filesystem.get_file_info(f"{path}/{STUDY_FILE}").type != pafs.FileType.NotFound:
        raise StudyError(f"study {location.name!r} already exists in {location.storage}; use `wsss study resume {location.name}` or another --name")
    _check_inputs(spec)
    _check_trackers(spec)
    _open_optuna_study(spec, location.name, resume=False)
    cache = _cache_location(cache_dir) if cache_dir else f"{location.storage.rstrip('/')}/{CACHE_FOLDER}"
    record = {
        "spec": spec.to_dict(),
        "cache_dir": cache,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "trials": num_trials(spec),
    }
    with ray_session(address, dashboard), reach_marker(cache) as marker:
        tuner = _build_tuner(spec, location, cache, marker, verbose)
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path}/{STUDY_FILE}") as stream:
            stream.write(json.dumps(record, indent=1).encode())
        tuner.fit()
    return study_status(location.name, storage=location.storage)


def resume_study(
    name: str, *, storage: str | os.PathLike, address: str | None = None, verbose: int = 1, dashboard: bool = True
) -> list[dict[str, Any]]:
    """Continue a study whose driver died: unfinished trials resume from their
    checkpoints, trials never started start; finished and failed (retries
    spent) ones stay as they are."""
    from ray import tune

    location = locate(storage, _checked_name(name))
    _check_client_storage(address, location)
    record = _read_record(location)
    spec = parse_spec(record["spec"])
    _open_optuna_study(spec, location.name, resume=True)
    with ray_session(address, dashboard), reach_marker(record["cache_dir"]) as marker:
        if not tune.Tuner.can_restore(location.uri):
            raise StudyError(f"study {name!r} in {location.storage} has no Tune experiment state to resume from")
        tuner = tune.Tuner.restore(
            location.uri,
            trainable=_trainable(spec, location, record["cache_dir"], marker),
            resume_unfinished=True,
            resume_errored=False,
            param_space=_param_space(spec),
        )
        tuner.fit()
    return study_status(name, storage=location.storage)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger `name` inside the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def planned_trials(location: StudyLocation) -> int:
    """How many trials the study's spec asks for (grid points x seeds, or num_samples)."""
    return _read_record(location)["trials"]


def study_status(name: str, *, storage: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per trial: its swept config values, state (Tune's), stage reached,
    val metrics of the last stage reached, failures and the error, if any."""
    from ray.tune import ExperimentAnalysis

    location = locate(storage, _checked_name(name))
    record = _read_record(location)
    spec = parse_spec(record["spec"])
    rows = {(r["trial_id"], r["stage"], r["split"]): r for r in ResultsStore(location.uri).read().to_pylist()}
    table = []
    try:
        with _quiet_logger("ray.tune.analysis.experiment_analysis"):  # warns of trials without metrics; ours are in Parquet
            trials = ExperimentAnalysis(location.uri).trials
    except (ValueError, FileNotFoundError):
        trials = []
    for trial in trials:
        trial_id = study_trial_id(trial.config, spec, trial.trial_id)
        reached = [s for s in STAGES if (trial_id, s, "val") in rows and rows[(trial_id, s, "val")]["status"] == "completed"]
        last = rows.get((trial_id, reached[-1], "val"), {}) if reached else {}
        errors = [r["error"] for (t, _, _), r in rows.items() if t == trial_id and r["error"]]
        config = next((json.loads(r["config_json"]) for (t, _, _), r in rows.items() if t == trial_id), {})
        swept = [axis.key for axis in spec.axes] + (["runtime.seed"] if len(spec.seeds) > 1 else [])
        table.append({
            "trial": trial_id,
            **{key.split(".")[-1]: config.get(key) for key in swept},
            "state": trial.status,
            "stage": reached[-1] if reached else "-",
            "miou": last.get("miou"),
            "contour_f": last.get("contour_f"),
            "failures": trial.num_failures,
            "error": errors[0] if errors else "",
        })
    return sorted(table, key=lambda row: row["trial"])


def list_studies(storage: str | os.PathLike) -> list[dict[str, Any]]:
    """The studies in a storage: name, trial count, result rows, creation time."""
    location = locate(storage, "")
    filesystem, path = _filesystem(location.storage)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return []
    studies = []
    for info in filesystem.get_file_info(pafs.FileSelector(path)):
        if info.type != pafs.FileType.Directory or info.base_name.startswith(("_", ".")):
            continue
        try:
            record = _read_record(locate(location.storage, info.base_name))
        except StudyError:
            continue
        rows = ResultsStore(f"{location.storage.rstrip('/')}/{info.base_name}").read().num_rows
        studies.append({
            "study": info.base_name,
            "trials": record["trials"],
            "rows": rows,
            "created_at": record["created_at"][:19],
            "description": record["spec"].get("description", "")[:60],
        })
    return sorted(studies, key=lambda row: row["created_at"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (floats to 3 decimals) of dict rows sharing keys."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _build_tuner(spec: StudySpec, location: StudyLocation, cache_dir: str, marker: str, verbose: int) -> Any:
    from ray import tune

    from study.callback import ParquetResultsCallback
    from study.no_retry import NoRetryCallback
    from study.optuna_log import OptunaLogCallback
    from study.tracking import tracking_callbacks

    search = spec.search
    repeats = 1 if search.algorithm == "grid" else len(spec.seeds)
    tune_config = tune.TuneConfig(
        search_alg=_searcher(spec, location.name),
        scheduler=_scheduler(spec),
        num_samples=1 if search.algorithm == "grid" else search.num_samples * repeats,
        max_concurrent_trials=search.max_concurrent or default_concurrency(spec, _cluster_resources()),
        trial_dirname_creator=_trial_dirname,
    )
    run_config = tune.RunConfig(
        name=location.name,
        storage_path=location.storage,
        failure_config=tune.FailureConfig(max_failures=spec.failure.max_retries),
        # Keep every (tiny) stage checkpoint: with num_to_keep=1 a driver killed
        # between deleting the previous checkpoint and snapshotting the experiment
        # state leaves the state pointing at a deleted checkpoint, and resume fails.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[ParquetResultsCallback(location.name, location.uri, spec),
                   *([] if searches_in_storage(spec) else [OptunaLogCallback(location.name, location.uri, spec)]),
                   NoRetryCallback(), *tracking_callbacks(spec, location.name, location.uri)],
        verbose=verbose,
    )
    return tune.Tuner(
        _trainable(spec, location, cache_dir, marker),
        param_space=_param_space(spec),
        tune_config=tune_config,
        run_config=run_config,
    )


def default_concurrency(spec: StudySpec, cluster: dict[str, float]) -> int:
    """Trials that fit the cluster's resources at once (search.max_concurrent 0):
    at least 1, at most the study's trial count."""
    wanted = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus, **spec.resources.custom}
    fits = [int(cluster.get(name, 0) // amount) for name, amount in wanted.items() if amount > 0]
    return max(1, min(min(fits), num_trials(spec)))


def _cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def _checked_name(name: str) -> str:
    try:
        return check_study_name(name, "name")
    except SpecError as error:
        raise StudyError(str(error)) from None


def _check_inputs(spec: StudySpec) -> None:
    from wsss_core.data import DataError
    from wsss_core.pipeline.config import ConfigError

    from study.preflight import check_study_inputs

    try:
        check_study_inputs(spec)
    except (ConfigError, DataError, FileNotFoundError) as error:
        raise StudyError(str(error)) from None


def _open_optuna_study(spec: StudySpec, name: str, *, resume: bool) -> None:
    """Create (or, resuming, find) the study in the spec's search.storage before Ray
    starts, so a storage that cannot be opened is one line and nothing runs."""
    if not spec.search.storage:
        return
    from study.optuna_storage import StorageError, create_optuna_study, direction

    try:
        create_optuna_study(spec.search.storage, name, direction(spec.search.mode), resume=resume)
    except StorageError as error:
        raise StudyError(str(error)) from None


def _check_trackers(spec: StudySpec) -> None:
    from study.tracking import check_trackers

    try:
        check_trackers(spec)
    except SpecError as error:
        raise StudyError(str(error)) from None


def _trainable(spec: StudySpec, location: StudyLocation, cache: str, marker: str) -> Any:
    """The trainable with its setup (marker: the driver's reach marker in the cache); starts the lease table."""
    from ray import tune

    from study.leases import start_lease_table

    from study.no_retry import not_retried

    start_lease_table()
    setup = TrialSetup(study=location.name, spec=spec, cache=cache, reach_marker=marker, study_uri=location.uri)
    return tune.with_resources(tune.with_parameters(not_retried(run_trial), setup=setup), trial_resources(spec))


@contextlib.contextmanager
def reach_marker(cache: str) -> Iterator[str]:
    """A fresh reach marker in the cache for the block (see study.stage_store), deleted after it."""
    from study.stage_store import remove_reach_marker, write_reach_marker

    marker = write_reach_marker(cache)
    try:
        yield marker
    finally:
        remove_reach_marker(marker)


def _param_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    if spec.search.algorithm == "grid":
        return {"point": tune.grid_search(expand_grid(spec))}
    return {}


def searches_in_storage(spec: StudySpec) -> bool:
    """Whether TPE searches in the spec's Optuna storage, which then records the
    trials itself (else study.optuna_log records them)."""
    return spec.search.algorithm == "optuna" and bool(spec.search.storage)


def _searcher(spec: StudySpec, name: str) -> Any:
    """None for grid studies (Tune's grid/FIFO); Optuna TPE on the final-stage
    metric, repeated once per seed (spec validation keeps Repeater off ASHA),
    searching in the spec's search.storage under the study's name when it names one."""
    if spec.search.algorithm == "grid":
        return None
    import optuna
    from ray.tune.search import Repeater

    from study.objective import FinalStageOptunaSearch
    from study.optuna_storage import open_storage

    stored = {"storage": open_storage(spec.search.storage), "study_name": name} if searches_in_storage(spec) else {}
    searcher = FinalStageOptunaSearch(
        space=functools.partial(optuna_space, axes=spec.axes, defaults=spec.defaults),
        metric=spec.search.metric,
        mode=spec.search.mode,
        sampler=optuna.samplers.TPESampler(seed=spec.search.seed),
        **stored,
    )
    return Repeater(searcher, repeat=len(spec.seeds)) if len(spec.seeds) > 1 else searcher


def _scheduler(spec: StudySpec) -> Any:
    """FIFO, or ASHA on the stage index; both searcher and scheduler get the
    metric directly (an Optuna define-by-run space refuses it from TuneConfig)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="stage_index",
        metric=spec.search.metric,
        mode=spec.search.mode,
        max_t=len(STAGES),
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


@contextlib.contextmanager
def ray_session(address: str | None, dashboard: bool = False) -> Iterator[None]:
    """Use the Ray already initialised in this process, else join the cluster at
    `address` (or at $RAY_ADDRESS, which `ray job submit` sets for its driver)
    or start a local Ray sized to the machine, and shut it down afterwards. A
    local Ray starts its dashboard on 127.0.0.1 when `dashboard` is true (a
    cluster's driver uses the cluster's); the dashboard's URL is printed.
    Trials keep the driver's working directory (RAY_CHDIR_TO_TRIAL_DIR=0), so
    relative data paths in configs mean the same in every trial. A trial's
    per-epoch results carry no val metric (study.trainable.TrialReporter), so
    Tune's check that every result holds the searcher's metric is off
    (TUNE_DISABLE_STRICT_METRIC_CHECKING=1)."""
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if ray.is_initialized():
        yield
        return
    joins = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    local = {} if joins else {"include_dashboard": dashboard, "dashboard_host": DASHBOARD_HOST}
    context = ray.init(address=address, **local)
    if getattr(context, "dashboard_url", None):
        sign_in = " (sign in with the token `ray get-auth-token` prints)" if os.environ.get("RAY_AUTH_MODE") == "token" else ""
        print(f"Ray dashboard: http://{context.dashboard_url}{sign_in}", flush=True)
    try:
        yield
    finally:
        ray.shutdown()


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def _check_client_storage(address: str | None, location: StudyLocation) -> None:
    """Ray Client (ray://) runs Tune on the head: a local folder would be the
    head's for Tune and this machine's for the rest of the study."""
    if address and address.startswith("ray://") and location.is_local:
        raise StudyError(f"--storage {location.storage} is invalid with --address {address}; allowed: a URI every "
                         "machine reaches (s3://, gs://), or run the driver on a cluster node with --address auto")


def _cache_location(cache: str) -> str:
    """An explicit cache: a URI as given, a folder made absolute (the same on every node)."""
    return cache if "://" in cache else str(Path(cache).expanduser().resolve())


def _read_record(location: StudyLocation) -> dict[str, Any]:
    filesystem, path = _filesystem(location.uri)
    target = f"{path}/{STUDY_FILE}"
    if filesystem.get_file_info(target).type == pafs.FileType.NotFound:
        raise StudyError(f"no study {location.name!r} in {location.storage}; see `wsss study list --storage {location.storage}`")
    with filesystem.open_input_stream(target) as stream:
        return json.loads(stream.read().decode())
