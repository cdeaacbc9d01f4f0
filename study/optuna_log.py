"""Every study's trials in an Optuna storage, for `optuna-dashboard`.

A Tune callback in the driver records each trial with its swept values as
Optuna params (distributions from the spec's axes), its val metric after
every stage as intermediate values (step = stage index), the final-stage
value, and its state (RUNNING, COMPLETE; PRUNED when a scheduler stopped it
early; FAIL when it failed for good). It records grid studies, and TPE
studies whose spec names no search.storage (a TPE study with one searches in
it, and Optuna records it there itself: study.runner.searches_in_storage).

The storage is the spec's search.storage (study.optuna_storage), written as
trials report. Without one it is a journal file: `<study>/optuna.journal` for
a local storage; for an object store it is kept in the driver's
`$WSSS_CACHE/optuna/` (default ~/.cache/wsss) and copied to
`<study>/optuna.journal` whenever a trial finishes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune import Callback

from study.objective import STAGE_INDEX, TUNE_ID, is_final
from study.optuna_storage import JOURNAL_NAME, direction, open_storage
from study.spec import SEED_KEY, Axis, StudySpec
from study.store import resolve
from study.trainable import study_trial_id, trial_point
from wsss_core.pipeline.cache import default_cache_dir


def journal_path(study_uri: str, study: str) -> Path:
    """Where the driver writes the journal of a study."""
    if "://" not in study_uri:
        return Path(study_uri) / JOURNAL_NAME
    return default_cache_dir() / "optuna" / f"{study}.journal"


def distribution(axis: Axis) -> BaseDistribution:
    """The Optuna distribution of a spec axis."""
    if axis.kind in ("grid", "choice"):
        return CategoricalDistribution(list(axis.values))
    if axis.kind == "randint":
        return IntDistribution(int(axis.low), int(axis.high) - 1)
    return FloatDistribution(axis.low, axis.high, log=axis.kind == "loguniform")


class OptunaLogCallback(Callback):
    """Tune callback recording trials in an Optuna journal (see module doc)."""

    def __init__(self, study: str, study_uri: str, spec: StudySpec) -> None:
        self.study = study
        self.study_uri = study_uri
        self.spec = spec
        self.path = journal_path(study_uri, study)
        self._storage: Any = None
        self._trials: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None, "_trials": {}}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.spec.search.metric)
        number = self._trial(trial)
        if value is not None and STAGE_INDEX in result and not self._finished(number):
            self._storage.set_trial_intermediate_value(number, int(result[STAGE_INDEX]), float(value))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if is_final(result) and result.get(self.spec.search.metric) is not None:
            self._finish(trial, TrialState.COMPLETE, [float(result[self.spec.search.metric])])
        else:
            self._finish(trial, TrialState.PRUNED, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, TrialState.FAIL, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._upload()

    def _finish(self, trial: Any, state: TrialState, values: list[float] | None) -> None:
        number = self._trial(trial)
        if not self._finished(number):
            self._storage.set_trial_state_values(number, state, values)
        self._upload()

    def _finished(self, number: int) -> bool:
        return self._storage.get_trial(number).state.is_finished()

    def _trial(self, trial: Any) -> int:
        """The Optuna trial id of a Tune trial (created, with its params, on first sight)."""
        if self._storage is None:
            self._open()
        if trial.trial_id not in self._trials:
            number = self._storage.create_new_trial(self._study_id)
            key, point = trial_point(trial.config, self.spec)
            for axis in self.spec.axes:
                if axis.key in point:
                    dist = distribution(axis)
                    self._storage.set_trial_param(number, axis.key, dist.to_internal_repr(point[axis.key]), dist)
            if len(self.spec.seeds) > 1:
                seeds = CategoricalDistribution(list(self.spec.seeds))
                self._storage.set_trial_param(number, SEED_KEY, seeds.to_internal_repr(point[SEED_KEY]), seeds)
            self._storage.set_trial_user_attr(number, TUNE_ID, trial.trial_id)
            self._storage.set_trial_user_attr(number, "trial", study_trial_id(trial.config, self.spec, trial.trial_id))
            self._trials[trial.trial_id] = number
        return self._trials[trial.trial_id]

    def _open(self) -> None:
        """Open (or continue, after a resume) the storage and map its Tune trial ids."""
        if self.spec.search.storage:
            self._storage = open_storage(self.spec.search.storage)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._download()
            self._storage = open_storage(str(self.path))
        optuna.create_study(storage=self._storage, study_name=self.study, direction=direction(self.spec.search.mode),
                            load_if_exists=True)
        self._study_id = self._storage.get_study_id_from_name(self.study)
        for frozen in self._storage.get_all_trials(self._study_id, deepcopy=False):
            if TUNE_ID in frozen.user_attrs:
                self._trials[frozen.user_attrs[TUNE_ID]] = frozen._trial_id

    def _copied(self) -> bool:
        """Whether the records are a journal copied to an object-store study."""
        return "://" in self.study_uri and not self.spec.search.storage

    def _download(self) -> None:
        """A driver resuming an object-store study continues the stored journal."""
        if not self._copied() or self.path.is_file():
            return
        filesystem, root = resolve(self.study_uri)
        source = f"{root}/{JOURNAL_NAME}"
        if filesystem.get_file_info(source).type == pafs.FileType.File:
            with filesystem.open_input_stream(source) as stream:
                self.path.write_bytes(stream.read())

    def _upload(self) -> None:
        if not self._copied() or not self.path.is_file():
            return
        filesystem, root = resolve(self.study_uri)
        with filesystem.open_output_stream(f"{root}/{JOURNAL_NAME}") as stream:
            stream.write(self.path.read_bytes())
