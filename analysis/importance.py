"""Parameter importance (fANOVA) of a study's completed trials through `optuna.importance`.

The trials are replayed into an in-memory Optuna study as FrozenTrials whose
distributions are inferred from the data: floats -> FloatDistribution (log scale
when the values span more than two decades and are positive), integers ->
IntDistribution, booleans and strings -> CategoricalDistribution.
"""
from __future__ import annotations

import optuna
import pandas as pd

from analysis.frames import python_scalar, scored, varying
from analysis.store import extra_config

MIN_TRIALS = 5

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

