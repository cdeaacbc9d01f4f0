"""What the search algorithm optimises: the final stage's metric.

A trial reports its val metric after every stage (ASHA's time attribute is
the stage index). Ray Tune's OptunaSearch would report those as intermediate
values and then *complete* an early-stopped trial with its stage-1 value, as
if it were final. `FinalStageOptunaSearch` reports per-stage values as Optuna
intermediate values (step = stage index) and completes a trial only when the
last stage has reported; a trial stopped earlier is PRUNED, a failed one FAIL.
"""
from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from study.schema import STAGES

STAGE_INDEX = "stage_index"
TUNE_ID = "tune_trial_id"
"""The Optuna user attribute naming a trial's Tune trial id."""


def is_final(result: dict[str, Any] | None) -> bool:
    """Whether a Tune result comes from the last pipeline stage. Repeater's
    seed average carries no stage index: spec validation allows Repeater only
    with FIFO, where every completed trial ran every stage."""
    return bool(result) and int(result.get(STAGE_INDEX, len(STAGES))) == len(STAGES)


class FinalStageOptunaSearch(OptunaSearch):
    """OptunaSearch whose objective is the final-stage metric (see module doc);
    each Optuna trial names its Tune trial (user attribute TUNE_ID)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._completed_trials or result.get(self.metric) is None:
            return
        self._ot_trials[trial_id].report(result[self.metric], int(result[STAGE_INDEX]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result if is_final(result) and not error else None, error)
