"""`ray job submit --working-dir . -- wsss study run ...` against a running
cluster: a `ray start --head` with its dashboard (the Jobs API) on 127.0.0.1,
the repository uploaded as the job's working directory (the nodes have no
PYTHONPATH to it), the job's driver joining that cluster through the
RAY_ADDRESS Ray sets for it instead of starting its own, and the study's
Parquet results in the storage. The head is stopped by PID."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

pytest.importorskip("ray")

from study.schema import STAGES
from tests.ray_nodes import node_port, start_node

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ROOT / "search_spaces" / "pipelines" / "tiny.yaml"


WAIT_FOR_JOB = """
import sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[3])
while not (status := client.get_job_status(sys.argv[2])).is_terminal() and time.monotonic() < deadline:
    time.sleep(2)
print(status.value)
print(client.get_job_logs(sys.argv[2]))
"""
"""The Jobs SDK, run with the client's environment: prints the job's final status, then its logs."""


@pytest.fixture
def head():
    """(dashboard URL, the nodes' and clients' env) of a one-node cluster with the dashboard; stopped by PID.
    Under a short /tmp folder: Ray's socket paths must stay under 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="wsss-job-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RAY_ADDRESS")}
    # RAY_AUTH_MODE=token: the Ray CLI then sends the cluster's token (~/.ray/auth_token), as a user's must
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    port = node_port()
    node = start_node("head", root, env, cpus=2, dashboard_port=port)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", url], env=env, capture_output=True,
                              check=False).returncode:
            assert node.process.poll() is None, f"ray start exited:\n{node.log_tail()}"
            assert time.monotonic() < deadline, f"the dashboard at {url} never answered:\n{node.log_tail()}"
            time.sleep(1)
        yield url, env
    finally:
        node.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_ray_job_submit_runs_a_study_on_the_running_cluster(head, tmp_path):
    url, env = head
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "job", "base": str(TINY), "resources": {"cpus": 1},
                                    "space": {"segmentation.lr": {"grid": [0.01, 0.02]}}}))
    storage = tmp_path / "runs"
    submission = "wsss-study-job-test"
    entrypoint = f"wsss study run {spec} --storage {storage} --quiet"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".", "--submission-id", submission,
         "--no-wait", "--", *entrypoint.split()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert submit.returncode == 0, submit.stderr

    done = subprocess.run([sys.executable, "-c", WAIT_FOR_JOB, url, submission, "300"], env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    status, _, logs = done.stdout.partition("\n")
    assert status == "SUCCEEDED", logs[-3000:]
    assert "2 of 2 trials completed" in logs
    assert "Started a local Ray instance" not in logs  # the driver joined the job's cluster
    assert f"Ray dashboard: {url}" in logs  # the cluster's, printed by the driver

    rows = ds.dataset(storage / "job" / "results").to_table().to_pylist()
    assert {(r["trial_id"], r["stage"], r["split"]) for r in rows} == {
        (trial, stage, split) for trial in ("p0000", "p0001") for stage in STAGES for split in ("train", "val")}
    assert all(r["status"] == "completed" for r in rows)


LOCAL_SESSIONS = """
import pathlib, sys, urllib.request
import ray
from study.runner import ray_session

with ray_session(None, dashboard=True):
    url = ray._private.worker.global_worker.node.address_info["webui_url"]
    token = pathlib.Path.home().joinpath(".ray", "auth_token").read_text().strip()
    request = urllib.request.Request(f"http://{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    print("answered", urllib.request.urlopen(request, timeout=30).status, flush=True)
with ray_session(None, dashboard=False):
    print("second", ray._private.worker.global_worker.node.address_info["webui_url"], flush=True)
"""


def test_a_local_ray_starts_its_dashboard_on_localhost_and_prints_its_url():
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    done = subprocess.run([sys.executable, "-c", LOCAL_SESSIONS], cwd=ROOT, env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    printed = [line for line in lines if line.startswith("Ray dashboard: ")]
    assert len(printed) == 1 and printed[0].startswith("Ray dashboard: http://127.0.0.1:"), lines
    assert "(sign in with the token `ray get-auth-token` prints)" in printed[0]
    assert "answered 200" in lines
    assert [line for line in lines if line.startswith("second")] == ["second "], "--no-dashboard starts none"
