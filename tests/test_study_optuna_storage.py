"""`search.storage`: any Optuna storage URL. optuna-dashboard's own loader
(`optuna.load_study` on the URL) reads a running study's trials, with an
intermediate value per finished stage, before the study ends: a grid study
recorded into sqlite and a TPE study searching in it (Ray Tune's OptunaSearch)."""
from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Self

import optuna
import pytest

from study.optuna_storage import EnvironmentRDBStorage, check_storage, open_storage
from study.spec import SpecError, parse_spec

ray = pytest.importorskip("ray")

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")


def tiny_spec(name, **entries):
    return parse_spec({"name": name, "base": TINY, "resources": {"cpus": 1}, **entries})


def test_storage_values_are_checked_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_storage("sqlite:///studies.db") == f"sqlite:///{tmp_path}/studies.db"
    assert check_storage(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    assert check_storage("runs/optuna.journal") == str(tmp_path / "runs" / "optuna.journal")
    assert check_storage("postgresql://lab@db.example/optuna") == "postgresql://lab@db.example/optuna"
    assert check_storage("postgresql://lab:${OPTUNA_DB_PASSWORD}@db/optuna") == "postgresql://lab:${OPTUNA_DB_PASSWORD}@db/optuna"
    assert tiny_spec("s", search={"storage": "sqlite:///x.db"}).search.storage == f"sqlite:///{tmp_path}/x.db"
    for storage, message in [
        ("s3://bucket/optuna.db", "search.storage='s3://bucket/optuna.db' is invalid; allowed: an RDB URL"),
        ("postgresql://lab:hunter2@db/optuna", "search.storage names a password; allowed: ${VARIABLE} in its place"),
    ]:
        with pytest.raises(SpecError) as error:
            tiny_spec("s", search={"storage": storage})
        assert str(error.value).startswith(message) and "hunter2" not in str(error.value)


def test_a_url_password_comes_from_the_environment_and_never_pickles(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_TEST_DB_FOLDER", str(tmp_path))
    storage = open_storage("sqlite:///${WSSS_TEST_DB_FOLDER}/secret.db")
    assert isinstance(storage, EnvironmentRDBStorage) and (tmp_path / "secret.db").is_file()
    optuna.create_study(storage=storage, study_name="s")
    pickled = pickle.dumps(storage)
    assert str(tmp_path).encode() not in pickled and b"${WSSS_TEST_DB_FOLDER}" in pickled
    assert pickle.loads(pickled).get_study_id_from_name("s") is not None
    monkeypatch.delenv("WSSS_TEST_DB_FOLDER")
    with pytest.raises(ValueError, match="needs the environment variable WSSS_TEST_DB_FOLDER"):
        pickle.loads(pickled)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("studies")
    ray.shutdown()


class Poller:
    """optuna-dashboard's view of a study, read every 0.3 s from another thread."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.snapshots: list[list[optuna.trial.FrozenTrial]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.snapshots.append(optuna.load_study(study_name=self.name, storage=self.url).get_trials())
            except KeyError:  # not created yet
                pass
            time.sleep(0.3)

    def __enter__(self) -> Self:
        optuna.storages.RDBStorage(self.url)  # the schema exists before two processes could race to create it
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def live(self) -> list[list[optuna.trial.FrozenTrial]]:
        """Snapshots taken while some trial had stage values and some trial was still running."""
        return [trials for trials in self.snapshots
                if any(t.intermediate_values for t in trials) and any(t.state.name == "RUNNING" for t in trials)]


def test_grid_study_is_recorded_live_into_sqlite(storage):
    url = f"sqlite:///{storage}/lab.db"
    spec = tiny_spec("grid_sqlite", space={"cam.lam": {"grid": [0.0, 1.0]}},
                     search={"storage": url, "max_concurrent": 1})
    with Poller(url, "grid_sqlite") as poller:
        from study.runner import run_study

        table = run_study(spec, storage=storage, verbose=0)
    assert [row["state"] for row in table] == ["TERMINATED", "TERMINATED"]
    assert poller.live(), "no snapshot showed a running trial's stage values"
    assert min(len(t.intermediate_values) for t in poller.live()[0] if t.intermediate_values) >= 1

    trials = optuna.load_study(study_name="grid_sqlite", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["cam.lam"] for t in trials) == [0.0, 1.0]
    assert all(sorted(t.intermediate_values) == [1, 2, 3] and t.value == t.intermediate_values[3] for t in trials)
    assert not (storage / "grid_sqlite" / "optuna.journal").exists()


def test_tpe_searches_in_the_sqlite_storage_and_resumes_refuse_nothing(storage):
    from study.runner import StudyError, run_study

    url = f"sqlite:///{storage}/lab.db"  # the same database as the grid study: one database, many studies
    spec = tiny_spec("tpe_sqlite", space={"cam.lam": {"uniform": [0.0, 1.0]}},
                     search={"algorithm": "optuna", "num_samples": 2, "storage": url, "max_concurrent": 1})
    with Poller(url, "tpe_sqlite") as poller:
        table = run_study(spec, storage=storage, verbose=0)
    assert [row["state"] for row in table] == ["TERMINATED", "TERMINATED"]
    assert poller.live()

    study = optuna.load_study(study_name="tpe_sqlite", storage=url)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs["tune_trial_id"] for t in trials} == {row["trial"] for row in table}
    assert all(sorted(t.intermediate_values) == [1, 2, 3] and t.value == t.intermediate_values[3] for t in trials)
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == ["grid_sqlite", "tpe_sqlite"]

    with pytest.raises(StudyError, match="Optuna study 'tpe_sqlite' already exists in search.storage"):
        run_study(spec, storage=storage / "elsewhere", verbose=0)


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://lab@127.0.0.1:9/optuna", "cannot be opened: "),
    ("sqlite:////nonexistent-folder/lab.db", "cannot be opened: (sqlite3.OperationalError) unable to open database file"),
])
def test_a_storage_that_cannot_be_opened_is_one_line_before_ray_starts(tmp_path, url, reason):
    from study.runner import StudyError, run_study

    spec = tiny_spec("unreachable", search={"storage": url})
    with pytest.raises(StudyError) as error:
        run_study(spec, storage=tmp_path, verbose=0)
    assert str(error.value).startswith(f"search.storage {url} {reason}") and "\n" not in str(error.value)
    assert not (tmp_path / "unreachable").exists()  # nothing written, no trial started
