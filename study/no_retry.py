"""Configuration errors are not retried.

Ray Tune retries every failed trial up to `failure.max_retries` times; a bad
config value, a missing or corrupt data file or a bad weights file fails
the same way every time. A trial wrapped by `not_retried` that hits one
reports `{NOT_RETRIED: message}` before raising it, and `NoRetryCallback`
(on the driver) then sets that trial's `max_failures` to 0, so Tune records
the error once. Divergence and lost workers are still retried.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

NOT_RETRIED = "wsss_not_retried"


def configuration_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean the trial's inputs are wrong."""
    from wsss_core.data import DataError
    from wsss_core.pipeline.config import ConfigError

    return ConfigError, DataError, FileNotFoundError


def not_retried(trainable: Callable[..., Any]) -> Callable[..., Any]:
    """A function trainable that flags configuration errors before raising them."""

    @functools.wraps(trainable)
    def wrapper(config: dict[str, Any], **kwargs: Any) -> Any:
        try:
            return trainable(config, **kwargs)
        except configuration_errors() as error:
            from ray import tune

            # Searchers read the metric from every result (Optuna: result[metric]).
            tune.report({NOT_RETRIED: f"{type(error).__name__}: {error}", "miou": math.nan, "contour_f": math.nan})
            raise

    return wrapper


class NoRetryCallback(Callback):
    """Driver side: a trial that flagged a configuration error is not restarted."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(NOT_RETRIED):
            trial.max_failures = 0
