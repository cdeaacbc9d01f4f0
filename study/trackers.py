"""The tracker callbacks (study.tracking): Ray Tune's own integrations, each
given TrialViews (flat parameter names, the study's trial name and group) and
results without the study's internal payloads.

Module-level classes, so Tune can pickle them with the run config (a resumed
study keeps its trackers). Imported only when a study tracks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.air.integrations.comet import CometLoggerCallback
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from study.spec import StudySpec
from study.tracking import Tracker, trial_group
from study.trainable import (
    EPOCH_KEY,
    PAYLOAD_KEY,
    flat_trial_config,
    study_trial_id,
    trial_point,
)


class TrialView:
    """A Tune trial as a tracker sees it: `config` is the trial's flattened
    pipeline config, `evaluated_params` its swept keys and seed (TensorBoard's
    HParams), str() its name `<study>/<trial id>`, `group` its point without the
    seed; every other attribute is the trial's."""

    def __init__(self, trial: Any, *, config: dict[str, Any], params: dict[str, Any], name: str, group: str) -> None:
        self.trial = trial
        self.config = config
        self.evaluated_params = params
        self.name = name
        self.group = group

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.trial, attribute)

    def __str__(self) -> str:
        return self.name


class FlatNames:
    """Mixin for a Ray Tune LoggerCallback: every hook gets the trial's TrialView
    (one per trial, so the callback's own per-trial tables stay consistent) and
    the result as `tracked_result` leaves it."""

    def bind(self, study: str, spec: StudySpec) -> None:
        self._study = study
        self._spec = spec
        self._views: dict[Any, TrialView] = {}

    def view(self, trial: Any) -> TrialView:
        if isinstance(trial, TrialView):
            return trial
        if trial not in self._views:
            _, point = trial_point(trial.config, self._spec)
            trial_id = study_trial_id(trial.config, self._spec, trial.trial_id)
            self._views[trial] = TrialView(
                trial, config=flat_trial_config(trial.config, self._spec), params=_hparams(point),
                name=f"{self._study}/{trial_id}", group=trial_group(self._study, point))
        return self._views[trial]

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(self.view(trial))  # type: ignore[misc]

    def log_trial_restore(self, trial: Any) -> None:
        super().log_trial_restore(self.view(trial))  # type: ignore[misc]

    def log_trial_save(self, trial: Any) -> None:
        super().log_trial_save(self.view(trial))  # type: ignore[misc]

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, self.view(trial), tracked_result(result))  # type: ignore[misc]

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(self.view(trial), failed=failed)  # type: ignore[misc]


def tracked_result(result: dict[str, Any]) -> dict[str, Any]:
    """A Tune result as trackers log it: without the nested config (logged once,
    flat, as parameters) and the JSON payloads the study's own callback reads."""
    return {key: value for key, value in result.items() if key not in ("config", PAYLOAD_KEY, EPOCH_KEY)}


def _hparams(point: dict[str, Any]) -> dict[str, Any]:
    """Point values as TensorBoard's HParams view takes them (numbers, strings, booleans; others as text)."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in point.items()}


class WandbTracker(FlatNames, WandbLoggerCallback):
    """A W&B run per trial, named `<study>/<trial id>`, grouped by its point.
    mode offline/disabled also tells Ray's API-key check in the driver that no
    key is needed."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.kwargs.get("mode") in ("offline", "disabled"):
            os.environ.setdefault("WANDB_MODE", self.kwargs["mode"])
        if self.kwargs.get("dir"):
            Path(self.kwargs["dir"]).mkdir(parents=True, exist_ok=True)
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        view = self.view(trial)
        self.group = view.group  # Ray reads it for this trial's wandb.init
        super().log_trial_start(view)


class MLflowTracker(FlatNames, MLflowLoggerCallback):
    """An MLflow run per trial, named `<study>/<trial id>`, tagged with the
    study, the trial id, its group and the spec's tags."""

    def __init__(self, base_tags: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_tags = base_tags

    def log_trial_start(self, trial: Any) -> None:
        view = self.view(trial)
        self.tags = {**self.base_tags, "study": self._study, "trial": view.name.rsplit("/", 1)[1], "group": view.group}
        super().log_trial_start(view)


class TensorBoardTracker(FlatNames, TBXLoggerCallback):
    """Event files in each Tune trial folder of the study, HParams with flat names."""


class CometTracker(FlatNames, CometLoggerCallback):
    """A Comet experiment per trial, named `<study>/<trial id>`; its group is one of its tags."""

    def __init__(self, base_tags: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_tags = base_tags

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.experiment_kwargs.get("offline_directory"):
            Path(self.experiment_kwargs["offline_directory"]).mkdir(parents=True, exist_ok=True)
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        view = self.view(trial)
        self.tags = [*self.base_tags, view.group]
        super().log_trial_start(view)


def build_tracker(tracker: Tracker, study: str, study_uri: str, spec: StudySpec) -> FlatNames:
    """The callback of one tracker, configured from its options (study.tracking.OPTIONS)."""
    callback = BUILDERS[tracker.name](tracker, study, study_uri)
    callback.bind(study, spec)
    return callback


def _wandb(tracker: Tracker, study: str, study_uri: str) -> WandbTracker:
    init = {key: tracker.option(key) for key in ("entity", "mode", "dir") if tracker.option(key)}
    return WandbTracker(project=tracker.option("project", study), tags=list(tracker.option("tags", ())), **init)


def _mlflow(tracker: Tracker, study: str, study_uri: str) -> MLflowTracker:
    return MLflowTracker({tag: "true" for tag in tracker.option("tags", ())},
                         experiment_name=tracker.option("experiment", study),
                         tracking_uri=tracker.option("tracking_uri") or default_mlflow_uri(study_uri))


def _tensorboard(tracker: Tracker, study: str, study_uri: str) -> TensorBoardTracker:
    return TensorBoardTracker()


def _comet(tracker: Tracker, study: str, study_uri: str) -> CometTracker:
    online = tracker.option("mode", "online") == "online"
    kwargs = {"project_name": tracker.option("project", study)}
    if tracker.option("workspace"):
        kwargs["workspace"] = tracker.option("workspace")
    if tracker.option("dir") and not online:
        kwargs["offline_directory"] = tracker.option("dir")
    return CometTracker(list(tracker.option("tags", ())), online=online, tags=[], **kwargs)


BUILDERS = {"wandb": _wandb, "mlflow": _mlflow, "tensorboard": _tensorboard, "comet": _comet}
"""Each tracker's callback, from its options."""


def default_mlflow_uri(study_uri: str) -> str | None:
    """None (MLflow reads $MLFLOW_TRACKING_URI) when that is set, else an SQLite
    store in a local study folder, else None (MLflow's own default)."""
    if os.environ.get("MLFLOW_TRACKING_URI") or "://" in study_uri:
        return None
    return f"sqlite:///{study_uri.rstrip('/')}/mlflow.db"
