"""The Tune callback that writes every trial x stage x split to the Parquet
store, and every training epoch to the `history` table (study.history).

Runs in the driver. A stage result becomes "completed" rows as soon as Tune
receives it; a trial that errors for good (retries spent) gets "failed" rows
for the stage it was in, with the error's message; a trial stopped early by the
scheduler (ASHA) gets "stopped" rows for the first stage it did not run.
Row ids are stable (`schema.row_id`), so a resumed study rewrites, never
duplicates. An epoch result becomes a history row as soon as Tune receives
it, while its stage still trains. When the experiment ends the trial files of
both tables are compacted into one each.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.artifacts import trial_folder
from study.history import EpochRow, HistoryStore
from study.schema import STAGES
from study.spec import StudySpec
from study.store import ResultsStore, StageOutcome
from study.trainable import EPOCH_KEY, PAYLOAD_KEY, flat_trial_config, study_trial_id


class ParquetResultsCallback(Callback):
    """Tune callback: stage results -> `<study_uri>/results/trial-<trial_id>.parquet`,
    epoch results -> `<study_uri>/history/trial-<trial_id>.parquet`."""

    def __init__(self, study: str, study_uri: str, spec: StudySpec) -> None:
        self.study = study
        self.spec = spec
        self.store = ResultsStore(study_uri)
        self.history = HistoryStore(study_uri)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if EPOCH_KEY in result:
            epoch = EpochRow(**json.loads(result[EPOCH_KEY]))
            self.history.write_epoch(self.study, study_trial_id(trial.config, self.spec, trial.trial_id), epoch)
        if PAYLOAD_KEY not in result:
            return
        payload = json.loads(result[PAYLOAD_KEY])
        self.store.write_outcome(StageOutcome(
            study=self.study,
            trial_id=study_trial_id(trial.config, self.spec, trial.trial_id),
            stage=payload["stage"],
            status="completed",
            config=flat_trial_config(trial.config, self.spec),
            metrics=payload["metrics"],
            learned=payload["learned"],
            seconds=payload["seconds"],
            started_at=_utc(payload["started_at"]),
            finished_at=_utc(payload["finished_at"]),
            cache_hit=payload["cache_hit"],
            stage_key=payload["stage_key"],
            model_key=payload["model_key"],
            node=payload["node"],
            trial_dir=payload["trial_dir"],
            overlay_dir=payload["overlay_dir"],
            code_version=payload["code_version"],
            class_names=payload.get("class_names"),
        ))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write_unfinished(trial, "failed", error_message(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _stages_reported(trial) < len(STAGES):
            self._write_unfinished(trial, "stopped", None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.store.compact()
        self.history.compact()

    def _write_unfinished(self, trial: Any, status: str, error: str | None) -> None:
        config = flat_trial_config(trial.config, self.spec)
        stage = STAGES[min(_stages_reported(trial), len(STAGES) - 1)]
        now = datetime.now(timezone.utc)
        trial_id = study_trial_id(trial.config, self.spec, trial.trial_id)
        self.store.write_outcome(StageOutcome(
            study=self.study,
            trial_id=trial_id,
            stage=stage,
            status=status,
            config=config,
            splits=tuple(config["eval.splits"].split(",")),
            error=error,
            finished_at=now,
            trial_dir=trial_folder(trial_id),
        ))


def error_message(trial: Any) -> str:
    """The last line of the trial's error (e.g. "FloatingPointError: cam: loss
    became nan in epoch 1; lower cam.lr"), or a note when none was recorded."""
    local = Path(trial.error_file) if trial.error_file else None
    text = local.read_text() if local is not None and local.is_file() else trial.get_error()
    if not text:
        return "trial failed without a recorded error"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    causes = [line for line in lines if ("Error:" in line or "Exception:" in line) and not line.startswith("ray.")]
    return (causes or lines or ["unknown error"])[-1]


def _stages_reported(trial: Any) -> int:
    return int((trial.last_result or {}).get("stage_index") or 0)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
