"""Trackers (study.tracking) with the real libraries on a local Ray: one tiny
study (one point, two seeds, two CAM epochs) tracked by MLflow (SQLite store in
the study folder), TensorBoard, W&B (offline) and Comet (offline), each read
back with its own reader; the API keys set in the environment appear in no file
of the study or of the trackers. The spec's `tracking` and `--track` are
validated like every spec key."""
from __future__ import annotations

import json
import os
import struct
import uuid
import zipfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from study.cli import main
from study.runner import run_study
from study.spec import SpecError, parse_spec
from study.tracking import Tracker, tracking_callbacks, with_trackers

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml")
SECRETS = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in
           ("WANDB_API_KEY", "COMET_API_KEY", "MLFLOW_TRACKING_PASSWORD")}
GROUP = "tracked: cam.lam=0.5"


def tiny(**entries):
    return parse_spec({"name": "tracked", "base": TINY, **entries})


def test_tracking_accepts_names_or_options_and_refuses_secrets():
    spec = tiny(tracking=["mlflow", "tensorboard"])
    assert spec.tracking == (Tracker("mlflow"), Tracker("tensorboard"))
    spec = tiny(tracking={"wandb": {"project": "wsss", "tags": ["a"], "mode": "offline"}, "comet": None})
    assert spec.tracking[0].options == {"project": "wsss", "tags": ("a",), "mode": "offline"}
    assert parse_spec(spec.to_dict()).tracking == spec.tracking, "study.json keeps the trackers"
    assert "tracking" not in tiny().to_dict()
    added = with_trackers(spec, ["mlflow,tensorboard", "wandb"]).tracking
    assert [t.name for t in added] == ["wandb", "comet", "mlflow", "tensorboard"] and added[0] == spec.tracking[0]
    bad = {
        "x": "tracking.x is invalid; allowed: wandb, mlflow, tensorboard, comet",
        "api": "unknown key tracking.wandb.api_key; allowed: project, tags, entity, mode, dir",
        "uri": "tracking.mlflow.tracking_uri holds a password",
        "mode": "tracking.comet.mode='disabled' is invalid; allowed: online, offline",
        "tags": "tracking.mlflow.tags='a' is invalid; allowed: a list of non-empty strings",
    }
    values = {"x": ["x"], "api": {"wandb": {"api_key": "k"}}, "uri": {"mlflow": {"tracking_uri": "https://u:pw@host"}},
              "mode": {"comet": {"mode": "disabled"}}, "tags": {"mlflow": {"tags": "a"}}}
    for case, message in bad.items():
        with pytest.raises(SpecError) as error:
            tiny(tracking=values[case])
        assert str(error.value).startswith(message), error.value
    with pytest.raises(SpecError, match=r"^--track='neptune' is invalid; allowed: wandb, mlflow"):
        with_trackers(spec, ["wandb,neptune"])


def test_tracker_callbacks_pickle_with_the_run_config(tmp_path, monkeypatch):
    """Tune pickles the callbacks into the experiment (tuner.pkl, with ray.cloudpickle); a resumed
    study unpickles them. Module-level classes travel by reference."""
    from ray import cloudpickle

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = tiny(tracking={"wandb": {"mode": "offline"}, "mlflow": {}, "tensorboard": {},
                          "comet": {"mode": "offline", "dir": str(tmp_path / "comet")}})
    callbacks = tracking_callbacks(spec, "tracked", str(tmp_path))
    assert [type(c).__name__ for c in callbacks] == ["WandbTracker", "MLflowTracker", "TensorBoardTracker", "CometTracker"]
    assert callbacks[1].tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    for callback in callbacks:
        data = cloudpickle.dumps(callback)
        assert type(callback).__name__.encode() in data and b"study.trackers" in data
        clone = cloudpickle.loads(data)
        assert type(clone) is type(callback) and clone._study == "tracked" and clone._spec == spec


def test_a_bad_track_option_is_one_line_and_exit_2(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: cli\nbase: {TINY}\n")
    assert main(["study", "run", str(spec), "--storage", str(tmp_path), "--track", "mlflow,neptune"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "wsss study run: --track='neptune' is invalid; allowed: wandb, mlflow, tensorboard, comet"
    assert not (tmp_path / "cli").exists()


def test_a_tracker_without_its_package_stops_the_run_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from study import tracking

    monkeypatch.setitem(tracking.PACKAGES, "comet", "comet_ml_not_installed_here")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: cli\nbase: {TINY}\n")
    assert main(["study", "run", str(spec), "--storage", str(tmp_path), "--track", "comet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("wsss study run: tracking.comet needs the comet_ml_not_installed_here package") and "\n" not in error
    assert not (tmp_path / "cli").exists()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    env = {**SECRETS, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": None,
           "COMET_DISABLE_AUTO_LOGGING": "1"}
    saved = {name: os.environ.get(name) for name in env}
    for name, value in env.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # workers inherit the environment
    spec = tiny(
        resources={"cpus": 1}, fixed={"cam.epochs": 2}, space={"cam.lam": {"grid": [0.5]}}, seeds=[0, 1],
        search={"max_concurrent": 2},
        tracking={"mlflow": {"tags": ["paper"]}, "tensorboard": {},
                  "wandb": {"dir": str(root / "wandb"), "tags": ["paper"]},
                  "comet": {"mode": "offline", "dir": str(root / "comet"), "tags": ["paper"]}})
    try:
        table = run_study(spec, storage=root / "studies", verbose=0)
        yield root, table
    finally:
        ray.shutdown()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def test_the_study_runs_with_every_tracker(tracked):
    root, table = tracked
    assert [(row["trial"], row["state"]) for row in table] == [("p0000", "TERMINATED"), ("p0001", "TERMINATED")]
    record = json.loads((root / "studies" / "tracked" / "study.json").read_text())
    assert set(record["spec"]["tracking"]) == {"mlflow", "tensorboard", "wandb", "comet"}


def test_mlflow_holds_one_run_per_trial_with_flat_params_and_stage_and_epoch_metrics(tracked):
    import mlflow

    root, _ = tracked
    store = root / "studies" / "tracked" / "mlflow.db"
    assert store.is_file(), "the default store lies in the study folder"
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["tracked"]).sort_values("tags.trial")
    assert list(runs["tags.trial"]) == ["p0000", "p0001"]
    assert list(runs["tags.mlflow.runName"]) == ["tracked/p0000", "tracked/p0001"]
    assert set(runs["tags.group"]) == {GROUP} and set(runs["tags.paper"]) == {"true"}
    assert list(runs["params.cam.lam"]) == ["0.5", "0.5"] and list(runs["params.runtime.seed"]) == ["0", "1"]
    assert set(runs["params.cam.pooling"]) == {"gap"} and set(runs["params.cam.epochs"]) == {"2"}
    assert not [c for c in runs.columns if c.startswith(("params.point", "metrics.config", "metrics.wsss"))]
    assert runs[[f"metrics.{stage}_miou" for stage in ("cam", "affinity", "segmentation")]].notna().all().all()
    client = mlflow.MlflowClient()
    for run_id in runs["run_id"]:
        losses = client.get_metric_history(run_id, "train/cam/loss")
        assert len(losses) == 2 and all(m.value > 0 for m in losses)
        assert [m.value for m in client.get_metric_history(run_id, "train/cam/epoch")] == [1, 2]
        assert len(client.get_metric_history(run_id, "train/segmentation/lr")) == 1
        assert [m.value for m in client.get_metric_history(run_id, "stage_index")] == [0, 0, 1, 1, 2, 2, 3]


def test_tensorboard_events_hold_flat_hparams_and_epoch_curves(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    root, _ = tracked
    events = sorted((root / "studies" / "tracked").glob("trial_*/events.out.tfevents.*"))
    assert len(events) == 2
    for path in events:
        reader = EventAccumulator(str(path))
        reader.Reload()
        assert [e.step for e in reader.Scalars("ray/tune/train/cam/loss")] == [1, 2]
        assert len(reader.Scalars("ray/tune/segmentation_miou")) == 1
        content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert set(hparams) == {"cam.lam", "runtime.seed"} and hparams["cam.lam"].number_value == 0.5


def wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): a 7-byte header, then
    LevelDB-log framing (32 KiB blocks, 7-byte chunk headers) around wandb's own
    `Record` protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)


def test_wandb_offline_runs_hold_flat_config_group_and_history(tracked):
    root, _ = tracked
    logs = sorted((root / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2
    names = []
    for path in logs:
        records = list(wandb_records(path))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        names.append(run.display_name)
        assert run.run_group == GROUP and list(run.tags) == ["paper"] and run.project == "tracked"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["cam.lam"] == 0.5 and config["cam.pooling"] == "gap" and "point" not in config
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        assert [row["train/cam/epoch"] for row in history if "train/cam/loss" in row] == [1, 2]
        assert [row["stage_index"] for row in history if "segmentation_miou" in row] == [3]
        assert not [key for row in history for key in row if key.startswith(("wsss", "config"))]
    assert sorted(names) == ["tracked/p0000", "tracked/p0001"]


def test_comet_offline_archives_hold_flat_parameters_and_epoch_metrics(tracked):
    root, _ = tracked
    archives = sorted((root / "comet").glob("*.zip"))
    assert len(archives) == 2
    for archive in archives:
        with zipfile.ZipFile(archive) as folder:
            messages = [json.loads(line) for line in folder.read("messages.json").splitlines()]
            assert GROUP in json.loads(folder.read("experiment.json"))["tags"]
        parameters = {m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
                      for m in messages if m["type"] == "parameter_msg"}
        assert parameters["cam.lam"] == 0.5 and not [k for k in parameters if k.startswith("point")]
        metrics = [m["payload"]["metric"] for m in messages if m["type"] == "metric_msg"]
        assert sorted(m["step"] for m in metrics if m["metricName"] == "train/cam/loss") == [1, 2]


def test_no_secret_from_the_environment_reaches_any_file(tracked):
    root, _ = tracked
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    assert len(files) > 50 and any(p.suffix == ".wandb" for p in files) and any(p.suffix == ".zip" for p in files)
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as folder:
                data += b"".join(folder.read(name) for name in folder.namelist())
        leaked = [name for name, secret in SECRETS.items() if secret.encode() in data]
        assert not leaked, f"{leaked} in {path}"
