"""The report's parameter importance comes from the study's own Optuna record
(its search.storage, or its optuna.journal) and equals optuna-dashboard's
figures for that study; results without a record fall back to the replay."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from analysis.importance import optuna_importances, study_importances
from analysis.report import build_report
from analysis.store import load_results
from study.schema import STAGES
from tests.analysis_fixture import write_optuna_search

DISTRIBUTIONS = {
    "cam.lam": FloatDistribution(0.0, 1.0), "cam.pooling": CategoricalDistribution(["gap", "gmp"]),
    "cam.fsl": CategoricalDistribution([False, True]), "cam.fsl_weight": FloatDistribution(0.1, 10 ** 0.5, log=True),
}
FIXTURE_NAMES = {"cam.lam": "lambda", "cam.pooling": "pooling", "cam.fsl": "fsl", "cam.fsl_weight": "fsl_weight"}


def record_trials(storage, name, rows, *, seeds=False):
    """The fixture's trials as study.optuna_log records them: params from the
    spec's axes, a val value per stage reached, COMPLETE after the last stage
    (else PRUNED)."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    val = rows[rows["split"] == "val"]
    for trial_id, trial_rows in val.groupby("trial_id"):
        first = trial_rows.iloc[0]
        params = {key: (bool(first[column]) if key == "cam.fsl" else first[column]) for key, column in FIXTURE_NAMES.items()}
        distributions = dict(DISTRIBUTIONS)
        if seeds:
            params["runtime.seed"] = int(first["seed"]) % 2
            distributions["runtime.seed"] = CategoricalDistribution([0, 1])
        steps = {STAGES.index(stage) + 1: float(miou) for stage, miou in zip(trial_rows["stage"], trial_rows["miou"])}
        final = len(STAGES) in steps
        study.add_trial(create_trial(
            params=params, distributions=distributions, intermediate_values=steps,
            state=TrialState.COMPLETE if final else TrialState.PRUNED, value=steps[len(STAGES)] if final else None,
            user_attrs={"trial": trial_id},
        ))
    return study


def write_record(study_dir, storage=""):
    spec = {"name": study_dir.name, "search": {"algorithm": "optuna", "metric": "miou", "mode": "max", "storage": storage}}
    (study_dir / "study.json").write_text(json.dumps({"spec": spec, "trials": 24}))


def dashboard_importances(storage, name):
    """optuna-dashboard's own computation, as its param_importances API runs it."""
    from optuna_dashboard._importance import get_param_importance_from_trials_cache
    from optuna_dashboard._inmemory_cache import InMemoryCache

    study_id = storage.get_study_id_from_name(name)
    trials = storage.get_all_trials(study_id)
    return {entry["name"]: entry["importance"]
            for entry in get_param_importance_from_trials_cache(InMemoryCache(), storage, study_id, 0, trials)}


def test_importance_of_a_sqlite_study_equals_the_dashboards(tmp_path):
    fixture = write_optuna_search(tmp_path)
    url = f"sqlite:///{tmp_path}/lab.db"
    record_trials(url, "optuna_search", fixture.rows)
    write_record(fixture.path, url)

    found = optuna_importances(fixture.path, "optuna_search")
    assert found.method == "PED-ANOVA" and found.stage == STAGES[-1] and found.metric == "miou"
    expected = dashboard_importances(optuna.storages.RDBStorage(url), "optuna_search")
    assert set(found.values) == set(DISTRIBUTIONS) and found.values == pytest.approx(expected)
    assert list(found.values) == sorted(found.values, key=found.values.get, reverse=True)

    page = build_report([fixture.path])
    assert "Parameter importance (PED-ANOVA) for" in page and "cam.fsl_weight" in page


def test_the_studys_own_journal_is_read_and_the_seed_is_no_parameter(tmp_path):
    fixture = write_optuna_search(tmp_path)
    journal = JournalStorage(JournalFileBackend(str(fixture.path / "optuna.journal")))
    record_trials(journal, "optuna_search", fixture.rows, seeds=True)
    write_record(fixture.path)
    found = study_importances(load_results(fixture.path), fixture.path)
    assert found.method == "PED-ANOVA" and set(found.values) == set(DISTRIBUTIONS)


def test_results_without_an_optuna_record_are_replayed(tmp_path):
    fixture = write_optuna_search(tmp_path)
    assert optuna_importances(fixture.path, "optuna_search") is None
    found = study_importances(load_results(fixture.path), fixture.path)
    assert found.method == "fANOVA" and "lambda" in found.values
    write_record(fixture.path)  # a record, but no journal beside it
    assert optuna_importances(fixture.path, "optuna_search") is None


def test_too_few_completed_trials_give_no_figures(tmp_path):
    fixture = write_optuna_search(tmp_path, num_trials=6)  # 4 complete, 2 pruned
    url = f"sqlite:///{tmp_path}/few.db"
    record_trials(url, "optuna_search", fixture.rows)
    write_record(fixture.path, url)
    assert optuna_importances(fixture.path, "optuna_search").values == {}
