"""Parameter importance of a study's completed trials through `optuna.importance`.

A study run by `wsss study run` has an Optuna record (its search.storage, or
its own optuna.journal: study.optuna_storage). Its importances are computed
on that study as optuna-dashboard computes them (PED-ANOVA on the completed
trials' final-stage values, the spec's own distributions), so the report and
the dashboard show the same figures.

Results without an Optuna record (a results folder copied alone) are replayed
into an in-memory Optuna study as FrozenTrials whose distributions are
inferred from the data: floats -> FloatDistribution (log scale when the values
span more than two decades and are positive), integers -> IntDistribution,
booleans and strings -> CategoricalDistribution; fANOVA at the stage with the
most scored trials.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import optuna
import pandas as pd
import pyarrow.fs as pafs

from analysis.frames import python_scalar, scored, varying
from analysis.store import extra_config, study_filesystem
from study.optuna_storage import reading_storage
from study.schema import STAGES, STUDY_FILE

MIN_TRIALS = 5
SEED_PARAM = "runtime.seed"
"""The seed's Optuna param name (study.spec.SEED_KEY): repeats, not a parameter."""


@dataclass(frozen=True)
class Importances:
    """Importance per parameter (largest first) for `metric` at `stage`, and the method's name."""

    values: dict[str, float]
    stage: str
    metric: str
    method: str


def study_importances(frame: pd.DataFrame, study_dir: str | os.PathLike) -> Importances | None:
    """The study's importances: from its Optuna record when it has one, else
    replayed from the rows; None when no stage has MIN_TRIALS scored trials."""
    recorded = optuna_importances(study_dir, str(frame["study"].iloc[0]))
    if recorded is not None:
        return recorded
    stage = best_stage_for_importance(frame)
    if stage is None:
        return None
    return Importances(param_importances(frame, stage), stage, "miou", "fANOVA")


def optuna_importances(study_dir: str | os.PathLike, name: str) -> Importances | None:
    """PED-ANOVA importances of the swept parameters (seed excluded) over the
    completed trials of the Optuna study `name` recorded for the study at
    `study_dir`, as optuna-dashboard computes them; None when the study has no
    Optuna record. Values are {} with fewer than MIN_TRIALS completed trials,
    fewer than two varying parameters, or one value for all."""
    record = _record(study_dir)
    if record is None:
        return None
    search = record["spec"].get("search", {})
    metric = search.get("metric", "miou")
    with reading_storage(str(study_dir), search.get("storage", "")) as storage:
        if storage is None:
            return None
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        names = sorted({param for trial in completed for param in trial.params} - {SEED_PARAM})
        swept = [param for param in names if len({repr(trial.params.get(param)) for trial in completed}) > 1]
        values = {}
        if len(completed) >= MIN_TRIALS and len(swept) >= 2 and len({trial.value for trial in completed}) > 1:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=swept)
    return Importances({param: float(value) for param, value in values.items()}, STAGES[-1], metric, "PED-ANOVA")


def _record(study_dir: str | os.PathLike) -> dict | None:
    """The study's study.json (its validated spec), or None."""
    filesystem, root = study_filesystem(study_dir)
    path = f"{root}/{STUDY_FILE}"
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())

def trial_parameters(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_id, one column per parameter that varies across the study.

    Well-known config columns first (schema order, seed excluded), then the
    varying keys found only in `config_json` (e.g. a searched learning rate).
    """
    trials = frame.drop_duplicates("trial_id").set_index("trial_id")
    params = trials[varying(trials)]
    extra = extra_config(trials)
    return params.join(extra) if not extra.empty else params

def infer_distribution(values: pd.Series) -> optuna.distributions.BaseDistribution:
    """An Optuna distribution covering the observed values of one parameter."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return optuna.distributions.CategoricalDistribution(tuple(sorted({python_scalar(v) for v in values}, key=str)))
    low, high = float(values.min()), float(values.max())
    if pd.api.types.is_integer_dtype(values):
        return optuna.distributions.IntDistribution(int(low), int(high))
    log = low > 0 and high / low > 100
    return optuna.distributions.FloatDistribution(low, high, log=log)

def param_importances(frame: pd.DataFrame, stage: str, split: str = "val", metric: str = "miou",
                      seed: int = 0) -> dict[str, float]:
    """fANOVA importance of every varying parameter for `metric` at `stage`, largest first.

    Returns {} when fewer than MIN_TRIALS trials are scored at that stage,
    fewer than two parameters vary, or every trial scored the same (nothing
    to attribute).
    """
    params = trial_parameters(frame)
    params = params[[name for name in params.columns if params[name].notna().all()]]
    values = scored(frame, stage, split).drop_duplicates("trial_id").set_index("trial_id")[metric]
    params = params.loc[params.index.intersection(values.index)]
    params = params[[name for name in params.columns if params[name].nunique() > 1]]
    if len(params) < MIN_TRIALS or params.shape[1] < 2 or values.loc[params.index].nunique() < 2:
        return {}
    distributions = {name: infer_distribution(params[name]) for name in params.columns}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created in memory" line amid `wsss report`'s output
    try:
        study = optuna.create_study(direction="maximize", study_name=f"importance-{stage}-{metric}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial_id, row in params.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={name: python_scalar(row[name]) for name in params.columns}, distributions=distributions,
            value=float(values.loc[trial_id]),
        ))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return {name: float(value) for name, value in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}

def best_stage_for_importance(frame: pd.DataFrame, split: str = "val") -> str | None:
    """The stage with the most scored trials (ties: the deepest), or None."""
    counts = scored(frame, split=split).groupby("stage", observed=True)["trial_id"].nunique()
    counts = counts[counts >= MIN_TRIALS]
    if counts.empty:
        return None
    return str(counts[counts == counts.max()].index[-1])

