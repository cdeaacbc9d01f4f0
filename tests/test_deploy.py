"""deploy/: the `ray up` cluster config passes Ray's own cluster-config
validation; the KubeRay RayJob is checked for structure (no Kubernetes API
server or CRD schema here) and its entrypoint through `wsss`'s own parser and
spec validation; the Slurm script passes `bash -n` and runs a tiny study to
its Parquet results under a one-node Slurm on localhost."""
from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pytest
import yaml

from study.schema import STAGES
from tests import slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TINY = ROOT / "search_spaces" / "pipelines" / "tiny.yaml"

RAYJOB_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint", "entrypointNumCpus",
    "entrypointNumGpus", "entrypointResources", "jobId", "managedBy", "metadata", "rayClusterSpec", "runtimeEnvYAML",
    "shutdownAfterJobFinishes", "submissionMode", "submitterConfig", "submitterPodTemplate", "suspend",
    "ttlSecondsAfterFinished",
}
RAYCLUSTER_FIELDS = {
    "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec",
    "headServiceAnnotations", "managedBy", "rayVersion", "suspend", "workerGroupSpecs",
}
HEAD_GROUP_FIELDS = {"enableIngress", "headService", "rayStartParams", "serviceType", "template"}
WORKER_GROUP_FIELDS = {
    "groupName", "idleTimeoutSeconds", "maxReplicas", "minReplicas", "numOfHosts", "rayStartParams", "replicas",
    "scaleStrategy", "suspend", "template",
}
"""KubeRay's ray.io/v1 RayJob and RayCluster spec fields (its Go API types)."""


def test_each_deploy_file_says_what_was_not_run_where_it_was_written():
    for path in sorted(DEPLOY.iterdir()):
        text = " ".join(path.read_text().split())
        assert re.search(r"not (run|built) (there|where this file was written)", text, re.IGNORECASE), path.name


def cluster_config():
    return yaml.safe_load((DEPLOY / "ray-cluster-aws.yaml").read_text())


def test_the_ray_up_config_passes_rays_cluster_config_validation():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = cluster_config()
    prepared = prepare_config(copy.deepcopy(config))  # `ray up` fills in the AWS defaults, then validates
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    gpu_types = [name for name in types if name != "head"]
    assert gpu_types and all(types[name]["node_config"]["InstanceType"].startswith("g") for name in gpu_types)
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):  # the project on every node
        assert "pip install -q -e /home/ray/wsss-study" in commands
    assert prepared["file_mounts"] == {"/home/ray/wsss-study": "."} and prepared["rsync_filter"] == [".gitignore"]
    assert "--dashboard-host=127.0.0.1" in " ".join(prepared["head_start_ray_commands"])

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_1x"]["node_confg"] = broken["available_node_types"]["gpu_1x"].pop("node_config")
    with pytest.raises(ValidationError):
        validate_config(prepare_config(broken))


def test_the_kuberay_rayjob_is_well_formed_and_its_entrypoint_validates(monkeypatch):
    from study.cli import build_parser
    from study.spec import load_spec

    manifest = yaml.safe_load((DEPLOY / "kuberay-rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    assert set(spec) <= RAYJOB_FIELDS and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_FIELDS and set(cluster["headGroupSpec"]) <= HEAD_GROUP_FIELDS
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_FIELDS and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    images = set()
    for group in groups:
        assert all(isinstance(value, str) for value in group["rayStartParams"].values())  # KubeRay: map of strings
        pod = group["template"]["spec"]
        volumes = {volume["name"] for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            images.add(container["image"])
            assert {mount["name"] for mount in container.get("volumeMounts", [])} <= volumes
    assert len(images) == 1 and cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1

    versions = {cluster["rayVersion"], *re.findall(r"rayproject/ray:([\d.]+)-", (DEPLOY / "Dockerfile").read_text()),
                *re.findall(r"rayproject/ray:([\d.]+)-", (DEPLOY / "ray-cluster-aws.yaml").read_text())}
    assert len(versions) == 1, f"deploy/ names several Ray versions: {versions}"

    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["wsss", "study", "run"]
    args = build_parser(argv[1:]).parse_args(argv[1:])
    monkeypatch.chdir(ROOT)  # the image's working directory is the repository
    study = load_spec(args.spec, sets=args.sets, grids=args.grids)
    assert study.fixed["data.root"] == "/data/VOC2012" and args.storage.startswith("s3://")


SBATCH = DEPLOY / "wsss-study.sbatch"


def test_the_slurm_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not slurm_cluster.available(), reason="Slurm (Debian: slurmctld slurmd slurm-client munge) not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="a one-node Slurm runs its daemons as root")
def test_the_slurm_script_runs_a_study_under_a_one_node_slurm(tmp_path):
    spec = tmp_path / "slurm.yaml"
    spec.write_text(yaml.safe_dump({"name": "slurm", "base": str(TINY), "resources": {"cpus": 1},
                                    "space": {"segmentation.lr": {"grid": [0.01, 0.02]}}}))
    storage = tmp_path / "runs"
    with slurm_cluster.one_node_slurm(tmp_path / "slurm", cpus=2) as env:
        env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
               "WSSS_CACHE": str(tmp_path / "cache")}
        env.pop("RAY_ADDRESS", None)
        # The script asks for 2 nodes with 4 GPUs each; this machine is one node with 2 CPUs and no GPU.
        done = subprocess.run(
            ["sbatch", "--wait", "--parsable", "--nodes=1", "--cpus-per-task=2", "--gpus-per-node=0", "--time=00:10:00",
             f"--output={tmp_path}/job-%j.log", str(SBATCH), "run", str(spec), "--storage", str(storage), "--quiet"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=500, check=False)
        job = done.stdout.strip().split(";")[0]
        log = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("job-*.log"))
        assert done.returncode == 0, f"{done.stderr}\n{log[-4000:]}"
    assert "Ray head on" in log and "2 of 2 trials completed" in log
    rows = ds.dataset(storage / "slurm" / "results").to_table().to_pylist()
    assert {(r["trial_id"], r["stage"], r["split"]) for r in rows} == {
        (trial, stage, split) for trial in ("p0000", "p0001") for stage in STAGES for split in ("train", "val")}
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if any(f"/tmp/ray-{job}" in a for a in p.info["cmdline"] or [])]
    assert not left, f"Ray processes outlived the job: {left}"
    shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)
