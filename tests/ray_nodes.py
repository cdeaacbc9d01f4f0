"""Ray nodes as separate `ray start --block` processes on 127.0.0.1, each with
its own working directory, temp dir and stage-cache mirror, stopped by PID."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.s3_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    folder: Path

    def node_id(self, timeout: float = 60.0) -> str:
        """The raylet's node id (hex), read from its command line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                try:
                    args = child.cmdline()
                except psutil.Error:
                    continue
                if args and Path(args[0]).name == "raylet":
                    found = [a.split("=", 1)[1] for a in args if a.startswith("--node_id=")]
                    if found:
                        return found[0]
            time.sleep(0.5)
        raise AssertionError(f"no raylet found for node {self.name}")

    def kill(self) -> None:
        """Kill the node's whole process group at once (a lost machine)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_node(name: str, root: Path, env: dict[str, str], *, head_address: str | None = None,
               cpus: int = 1, resources: dict[str, float] | None = None) -> Node:
    """`ray start --block` in `root/name/{cwd,tmp,cache}`; the head when head_address is None."""
    folder = root / name
    for sub in ("cwd", "tmp", "cache"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(6)]
    args = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
            f"--temp-dir={folder / 'tmp'}", f"--resources={json.dumps(resources or {})}",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}", "--disable-usage-stats"]
    args += ["--head", f"--port={head_port(root)}", "--include-dashboard=false"] if head_address is None \
        else [f"--address={head_address}"]
    node_env = {**env, "WSSS_CACHE": str(folder / "cache"), "TMPDIR": str(folder / "tmp")}
    log = open(folder / "ray-start.log", "w")
    process = subprocess.Popen(args, cwd=folder / "cwd", env=node_env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return Node(name, process, folder)


def head_port(root: Path) -> int:
    """The head's GCS port, chosen once per cluster folder."""
    path = root / "head-port"
    if not path.exists():
        path.write_text(str(free_port()))
    return int(path.read_text())


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 120
while sum(1 for n in ray.nodes() if n["Alive"]) != int(sys.argv[2]):
    assert time.monotonic() < deadline, ray.nodes()
    time.sleep(0.5)
"""


def wait_for_nodes(address: str, nodes: list[Node], env: dict[str, str], cwd: Path) -> None:
    """Block until exactly the nodes in `nodes` are alive in the cluster; fail if one exits."""
    waiter = subprocess.Popen([sys.executable, "-c", WAIT_FOR_NODES, address, str(len(nodes))], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while waiter.poll() is None:
            dead = [n.name for n in nodes if n.process.poll() is not None]
            assert not dead, f"ray start exited for {dead}: {(nodes[0].folder.parent / dead[0] / 'ray-start.log')}"
            time.sleep(0.5)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, "the cluster did not reach its node count"
