"""End to end on a local Ray (one session for the module): a grid study over a
stage-3 setting shares stages 1-2 through the cache and writes one Parquet row
per trial x stage x split; an Optuna TPE study with ASHA; the CLI's status/list."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.dataset as ds
import pytest

ray = pytest.importorskip("ray")

from study.cli import main  # noqa: E402
from study.runner import StudyError, run_study, study_status  # noqa: E402
from study.schema import STAGES  # noqa: E402
from study.spec import parse_spec  # noqa: E402

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("studies")
    ray.shutdown()


def journal_trials(path, name):
    """The trials of a study's Optuna journal, as optuna-dashboard reads them."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path)))).get_trials()


def tiny_spec(name, **entries):
    return parse_spec({"name": name, "base": TINY, "resources": {"cpus": 1}, **entries})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_grid_study_shares_upstream_stages_and_writes_every_row(storage, capsys):
    from ray.util.debug import reset_log_once

    spec = tiny_spec("grid", space={"segmentation.lr": {"grid": [0.01, 0.02]}}, search={"max_concurrent": 2})
    tensorboard = logging.getLogger("ray.tune.logger.tensorboardx")
    warnings = Records()
    reset_log_once("invalid_tbx_value")
    tensorboard.addHandler(warnings)
    try:
        table = run_study(spec, storage=storage, verbose=0)
    finally:
        tensorboard.removeHandler(warnings)
    assert warnings.messages == [], "every reported value is one TensorBoard logs or skips"
    assert [row["state"] for row in table] == ["TERMINATED", "TERMINATED"]
    assert [row["stage"] for row in table] == ["segmentation", "segmentation"]

    results = ds.dataset(storage / "grid" / "results").to_table().to_pylist()
    assert len(results) == 2 * len(STAGES) * 2
    assert {(r["trial_id"], r["stage"], r["split"]) for r in results} == {
        (t, s, split) for t in ("p0000", "p0001") for s in STAGES for split in ("train", "val")
    }
    assert all(r["status"] == "completed" and 0 <= r["miou"] <= 1 for r in results)
    assert all(r["study"] == "grid" and r["lambda"] == json.loads(r["config_json"])["cam.lam"]
               and r["backbone"] == "resnet_small" for r in results)
    assert all(r["class_names"][0] == "background" and len(r["per_class_iou"]) == len(r["class_names"]) for r in results)
    assert all(r["node"] and r["trial_dir"] and r["code_version"] and r["started_at"] <= r["finished_at"] for r in results)
    for r in results:  # the CAM stage's pointing game, cache hit included; none at the later stages
        if r["stage"] == "cam":
            rates = [v for v in r["per_class_pointing"] if v is not None]
            assert len(r["per_class_pointing"]) == len(r["class_names"]) and r["per_class_pointing"][0] is None
            assert rates and r["pointing"] == pytest.approx(sum(rates) / len(rates))
        else:
            assert r["pointing"] is None and r["per_class_pointing"] is None
    assert [p.name for p in (storage / "grid" / "results").iterdir()] == ["compacted.parquet"]
    assert all(r["trial_dir"] == f"trials/{r['trial_id']}" for r in results)
    assert all(list((storage / "grid" / r["overlay_dir"]).glob("*.png")) for r in results)
    journal = journal_trials(storage / "grid" / "optuna.journal", "grid")
    assert [t.state.name for t in journal] == ["COMPLETE", "COMPLETE"]
    final = {r["trial_id"]: r["miou"] for r in results if r["stage"] == "segmentation" and r["split"] == "val"}
    for trial in journal:
        assert sorted(trial.intermediate_values) == [1, 2, 3] and trial.value == final[trial.user_attrs["trial"]]
    assert sorted(t.params["segmentation.lr"] for t in journal) == [0.01, 0.02]
    cam_hits = sorted(r["cache_hit"] for r in results if r["stage"] == "cam" and r["split"] == "val")
    assert cam_hits == [False, True], "the second trial must reuse stage 1 from the shared cache"
    seg = {r["trial_id"]: r for r in results if r["stage"] == "segmentation" and r["split"] == "val"}
    assert '"segmentation.lr": 0.02' in seg["p0001"]["config_json"]
    assert not any(r["cache_hit"] for r in seg.values())
    keys = {(r["trial_id"], r["stage"]): (r["stage_key"], r["model_key"]) for r in results}
    assert all(stage_key and model_key and stage_key != model_key for stage_key, model_key in keys.values())
    for stage in STAGES:  # the trials differ in segmentation.lr only: they share stages 1-2, keys and training
        same = keys["p0000", stage] == keys["p0001", stage]
        assert same == (stage != "segmentation"), stage

    assert main(["study", "status", "grid", "--storage", str(storage)]) == 0
    assert main(["study", "list", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "p0001" in out and "TERMINATED" in out and "grid" in out
    header, first, second = [line.split() for line in out.splitlines() if line.startswith(("trial ", "p0000", "p0001"))][:3]
    assert header[:2] == ["trial", "lr"] and (first[1], second[1]) == ("0.010", "0.020")  # the swept value

    with pytest.raises(StudyError, match="already exists"):
        run_study(spec, storage=storage, verbose=0)


def test_optuna_tpe_study_with_asha(storage):
    spec = tiny_spec(
        "tpe",
        space={"segmentation.lr": {"loguniform": [0.001, 0.1]}, "segmentation.dilation": {"choice": [1, 2]}},
        search={"algorithm": "optuna", "num_samples": 2, "max_concurrent": 1},
        scheduler={"type": "asha", "grace_period": 1},
    )
    table = run_study(spec, storage=storage, verbose=0)
    assert len(table) == 2 and all(row["state"] == "TERMINATED" for row in table)
    rows = ds.dataset(storage / "tpe" / "results").to_table().to_pylist()
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == 2 and not trials & {"p0000", "p0001"}
    lrs = {r["trial_id"]: r["config_json"] for r in rows}
    assert all('"segmentation.lr": 0.0' in text for text in lrs.values())
    status = {row["trial"]: row for row in study_status("tpe", storage=storage)}
    assert set(status) == trials
    journal = {t.user_attrs["trial"]: t for t in journal_trials(storage / "tpe" / "optuna.journal", "tpe")}
    assert set(journal) == trials
    for trial_id, trial in journal.items():
        stages = {r["stage"] for r in rows if r["trial_id"] == trial_id and r["status"] == "completed"}
        assert trial.state.name == ("COMPLETE" if "segmentation" in stages else "PRUNED")
        assert set(trial.params) <= {"segmentation.lr", "segmentation.dilation"} and len(trial.intermediate_values) == len(stages)
