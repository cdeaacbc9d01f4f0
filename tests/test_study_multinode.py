"""A study on a real multi-node cluster with no shared working directory and
s3:// storage: a Ray head and worker nodes started as separate `ray start`
processes (own cwd, temp dir and cache mirror each), moto's S3 server on
127.0.0.1, drivers run as `wsss` subprocesses in their own folders.

The node running the first trial to finish stage 1 is killed mid-study (a new
node joins), the driver is killed after that trial moved on, `wsss study
resume` finishes the study; then every row is there once, each shared stage
was computed once, artifacts and the Optuna journal are on S3, and `wsss
report` renders the gallery from the S3 study.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("moto")

from study.store import ResultsStore  # noqa: E402
from tests.ray_nodes import head_port, start_node, wait_for_nodes  # noqa: E402
from tests.s3_server import moto_server, s3_env  # noqa: E402
from tests.test_study_run import journal_trials  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WSSS = str(Path(sys.executable).with_name("wsss"))
BUCKET = "wsss-multinode"
STUDY = f"s3://{BUCKET}/studies/nodes"
STAGES, SPLITS = ("cam", "affinity", "segmentation"), ("train", "val")


@pytest.fixture
def cluster(monkeypatch):
    """(env, head address, start_node(name), nodes) on a moto S3 server; every process stopped by PID.
    Nodes live under a short /tmp folder: Ray's socket paths must stay under 108 bytes."""
    nodes = []
    root = Path(tempfile.mkdtemp(prefix="wsss-nodes-", dir="/tmp"))
    with moto_server(BUCKET) as port:
        env = {**os.environ, **s3_env(port), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        for name, value in s3_env(port).items():
            monkeypatch.setenv(name, value)
        address = f"127.0.0.1:{head_port(root)}"

        def add(name, **options):
            nodes.append(start_node(name, root, env, **options))
            return nodes[-1]

        try:
            add("head", cpus=0)
            wait_for_nodes(address, nodes, env, root)  # workers give up if the head is slow to come up
            yield env, address, add, nodes
        finally:
            for node in reversed(nodes):
                node.kill()
            shutil.rmtree(root, ignore_errors=True)


def wsss(args, env, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    log = open(cwd / "wsss.log", "a")
    return subprocess.Popen([WSSS, *args], cwd=cwd, env={**env, "WSSS_CACHE": str(cwd / "cache")},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def rows():
    return ResultsStore(STUDY).read().to_pylist()


def publications():
    """{stage: how often any key of it was published}: the versions of the `_DONE` markers in
    the versioned bucket (a row's cache_hit can be rewritten by a trial resumed from an older
    checkpoint; the bucket's history cannot)."""
    import boto3

    listing = boto3.client("s3").list_object_versions(Bucket=BUCKET, Prefix="studies/_cache/stages/")
    return Counter(v["Key"].split("/")[3] for v in listing.get("Versions", []) if v["Key"].endswith("/_DONE"))


def wait_for(condition, what, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


@pytest.mark.slow
def test_study_survives_a_lost_node_and_a_lost_driver_on_s3(cluster, tmp_path):
    env, address, add, nodes = cluster
    import boto3

    boto3.client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    workers = [add(name, head_address=address, resources={"wsss_slot": 1}) for name in ("node-a", "node-b")]
    wait_for_nodes(address, nodes, env, tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "nodes", "base": str(ROOT / "search_spaces" / "pipelines" / "tiny.yaml"),
        "space": {"segmentation.lr": {"grid": [0.01, 0.02]}},
        # Stage 2 long enough (~15 s quiet) that the node is lost while it runs: at the tiny
        # config's 1 epoch (0.3 s) a quiet machine finished the trial before the kill.
        "fixed": {"affinity.epochs": 100},
        "resources": {"cpus": 1, "custom": {"wsss_slot": 1}}, "search": {"max_concurrent": 2},
        "failure": {"max_retries": 3, "lease_timeout": 10},
    }))
    storage = f"s3://{BUCKET}/studies"
    driver = wsss(["study", "run", str(spec), "--address", address, "--storage", storage, "--quiet"],
                  env, tmp_path / "driver-1")

    # Both trials share the stage-1 key: the trial that computed it (not the one
    # that read it from the cache, whose row may be written first) loses its node.
    first = wait_for(lambda: next((r for r in rows() if r["stage"] == "cam" and not r["cache_hit"]), None),
                     "the row of the trial that computed stage 1")
    lost_id = first["node"].split("/")[1]
    (lost,) = [n for n in workers if n.node_id().startswith(lost_id)]
    lost.kill()  # the node of the first trial, now in stage 2
    add("node-c", head_address=address, resources={"wsss_slot": 1})
    wait_for(lambda: any(r["trial_id"] == first["trial_id"] and r["stage"] != "cam" and lost_id not in r["node"]
                         for r in rows()), "the lost trial to finish a stage on another node")
    assert driver.poll() is None, "the study must still be running when its driver is lost"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    resumed = wsss(["study", "resume", "nodes", "--address", address, "--storage", storage, "--quiet"],
                   env, tmp_path / "driver-2")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "driver-2" / "wsss.log").read_text()[-3000:]

    results = rows()
    keys = sorted((r["trial_id"], r["stage"], r["split"]) for r in results)
    assert keys == sorted((t, s, p) for t in ("p0000", "p0001") for s in STAGES for p in SPLITS)
    assert all(r["status"] == "completed" for r in results)
    moved = {r["stage"]: r["node"].split("/")[1] for r in results if r["trial_id"] == first["trial_id"]}
    assert moved["segmentation"] != lost_id
    assert publications() == {"cam": 1, "affinity": 1, "segmentation": 2, "cam_model": 1, "affinity_model": 1,
                              "segmentation_model": 2}, "each stage key and training key computed once"

    filesystem, root = pafs.FileSystem.from_uri(f"s3://{BUCKET}/studies")
    listing = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    assert [i.base_name for i in listing if "/nodes/results/" in i.path] == ["compacted.parquet"]
    pngs = {i.path.rsplit("/", 1)[0] for i in listing if i.path.endswith(".png")}
    assert all(r["trial_dir"] == f"trials/{r['trial_id']}" and f"{root}/nodes/{r['overlay_dir']}" in pngs
               for r in results)
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(filesystem.open_input_stream(f"{root}/nodes/optuna.journal").read())
    assert sorted(t.state.name for t in journal_trials(journal, "nodes")) == ["COMPLETE", "COMPLETE"]

    report = tmp_path / "report.html"
    rendered = wsss(["report", STUDY, "-o", str(report)], env, tmp_path / "reader")
    assert rendered.wait(timeout=120) == 0, (tmp_path / "reader" / "wsss.log").read_text()[-2000:]
    text = report.read_text()
    assert "CAM overlays of the best trials" in text and text.count("data:image/png;base64,") >= 2
