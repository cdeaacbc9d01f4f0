"""A study on a local multi-node Ray cluster (`ray.cluster_utils.Cluster`): two
worker nodes with a custom resource pin one trial each; removing one node
mid-study moves its trial to the other node, where it finishes."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from study.runner import run_study  # noqa: E402
from study.schema import STAGES  # noqa: E402
from study.spec import parse_spec  # noqa: E402

TINY = str(Path(__file__).resolve().parents[1] / "search_spaces" / "pipeline_tiny.yaml")


@pytest.fixture
def cluster():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, resources={"wsss_slot": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_trials_of_a_removed_node_finish_on_the_other_node(cluster, tmp_path):
    cluster, nodes = cluster
    spec = parse_spec({
        "name": "nodes", "base": TINY,
        "space": {"segmentation.lr": {"grid": [0.01, 0.02]}},
        "resources": {"cpus": 1, "custom": {"wsss_slot": 1}},
        "search": {"max_concurrent": 2},
        "failure": {"max_retries": 2},
    })
    results_dir = tmp_path / "nodes" / "results"

    def rows():
        return ds.dataset(results_dir).to_table().to_pylist() if results_dir.is_dir() else []

    runner = threading.Thread(target=run_study, args=(spec,), kwargs={"storage": tmp_path, "verbose": 0})
    runner.start()
    deadline = time.monotonic() + 300
    while not any(r["stage"] == "cam" for r in rows()):
        assert time.monotonic() < deadline, "no stage finished in time"
        time.sleep(0.2)
    removed = nodes[1]
    cluster.remove_node(removed)
    runner.join(timeout=400)
    assert not runner.is_alive()

    results = rows()
    keys = {(r["trial_id"], r["stage"], r["split"]) for r in results}
    assert keys == {(t, s, p) for t in ("p0000", "p0001") for s in STAGES for p in ("train", "val")}
    assert all(r["status"] == "completed" for r in results)
    finals = {r["node"].split("/")[1] for r in results if r["stage"] == "segmentation"}
    assert finals == {nodes[0].node_id[:12]}, "every trial finishes on the surviving node"
