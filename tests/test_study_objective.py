"""The search algorithm's objective is the final-stage metric: a trial stopped
after stage 1 is pruned, not completed with its stage-1 value; concurrency
defaults to what fits the cluster; trial threads follow its CPUs; Ray Client
needs an object-store storage."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

pytest.importorskip("ray")

from study.objective import FinalStageOptunaSearch  # noqa: E402
from study.runner import default_concurrency  # noqa: E402
from study.spec import parse_spec  # noqa: E402

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")


def result(stage_index, miou):
    return {"stage_index": stage_index, "miou": miou, "training_iteration": stage_index}


def test_stopped_trials_are_pruned_and_only_final_values_complete():
    searcher = FinalStageOptunaSearch(space={"lr": optuna.distributions.FloatDistribution(0.001, 0.1)},
                                      metric="miou", mode="max")
    for trial in ("full", "stopped", "failed"):
        assert searcher.suggest(trial) is not None
    for index, value in ((1, 0.9), (2, 0.5), (3, 0.4)):
        searcher.on_trial_result("full", result(index, value))
    searcher.on_trial_complete("full", result(3, 0.4))
    searcher.on_trial_result("stopped", result(1, 0.95))
    searcher.on_trial_complete("stopped", result(1, 0.95))
    searcher.on_trial_result("failed", result(1, 0.3))
    searcher.on_trial_complete("failed", None, error=True)

    trials = {t.number: t for t in searcher._ot_study.get_trials(deepcopy=False)}
    full, stopped, failed = trials[0], trials[1], trials[2]
    assert full.state == optuna.trial.TrialState.COMPLETE and full.value == 0.4
    assert full.intermediate_values == {1: 0.9, 2: 0.5, 3: 0.4}
    assert stopped.state == optuna.trial.TrialState.PRUNED  # Optuna keeps its last intermediate value
    assert failed.state == optuna.trial.TrialState.FAIL
    assert searcher._ot_study.best_value == 0.4, "a stage-1 value must never count as final"


def test_default_concurrency_fits_the_cluster():
    spec = parse_spec({"name": "c", "base": TINY, "space": {"cam.lam": {"grid": [0.0, 0.25, 0.5, 0.75, 1.0]}},
                       "resources": {"cpus": 2, "gpus": 0.5}})
    assert spec.search.max_concurrent == 0
    assert default_concurrency(spec, {"CPU": 16, "GPU": 1}) == 2  # GPU-bound
    assert default_concurrency(spec, {"CPU": 5, "GPU": 8}) == 2  # CPU-bound
    assert default_concurrency(spec, {"CPU": 64, "GPU": 8}) == 5  # no more than the trials
    assert default_concurrency(spec, {"CPU": 1}) == 1


def test_trial_threads_and_eval_pool_follow_its_cpus():
    from study.trainable import sized_to_resources
    from wsss_core.pipeline.config import load_config

    config = load_config(TINY, ["runtime.threads=null", "eval.workers=4"])
    sized = sized_to_resources(config, 3)
    assert (sized.runtime.threads, sized.eval.workers) == (3, 2)
    assert sized_to_resources(config, 0.5).eval.workers == 0
    assert sized_to_resources(load_config(TINY, ["runtime.threads=2"]), 8).runtime.threads == 2  # explicit wins


def test_ray_client_needs_an_object_store_storage(tmp_path):
    from study.runner import StudyError, run_study

    spec = parse_spec({"name": "client", "base": TINY})
    with pytest.raises(StudyError, match="is invalid with --address ray://head:10001; allowed: a URI"):
        run_study(spec, storage=tmp_path, address="ray://head:10001")
