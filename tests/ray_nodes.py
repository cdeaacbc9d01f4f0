"""Ray nodes as separate `ray start --block` processes on 127.0.0.1, each with
its own working directory, temp dir and stage-cache mirror, stopped by PID."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
EPHEMERAL_LOW = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
RAY_WORKER_PORTS_END = 19999  # Ray's default --max-worker-port
_handed_out: set[int] = set()


def node_port() -> int:
    """A free port between Ray's worker ports and the kernel's ephemeral range: unlike a port
    the kernel picked for `bind(0)`, no other process is handed it before `ray start` binds it."""
    while True:
        port = random.randrange(RAY_WORKER_PORTS_END + 1, EPHEMERAL_LOW)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


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

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's `ray start` output and of its raylet's log (why it exited)."""
        logs = [self.folder / "ray-start.log", self.folder / "tmp" / "session_latest" / "logs" / "raylet.out"]
        return "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-chars:]}" for log in logs if log.exists())

    def kill(self) -> None:
        """Kill the node's whole process group at once (a lost machine)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_node(name: str, root: Path, env: dict[str, str], *, head_address: str | None = None,
               cpus: int = 1, resources: dict[str, float] | None = None, dashboard_port: int | None = None) -> Node:
    """`ray start --block` in `root/name/{cwd,tmp,cache}`; the head when head_address is None,
    with its dashboard (and Jobs API) on 127.0.0.1:dashboard_port when one is given."""
    folder = root / name
    for sub in ("cwd", "tmp", "cache"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ports = [node_port() for _ in range(6)]
    args = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
            f"--temp-dir={folder / 'tmp'}", f"--resources={json.dumps(resources or {})}",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}", "--disable-usage-stats"]
    dashboard = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                 f"--ray-client-server-port={node_port()}"] if dashboard_port else ["--include-dashboard=false"]
    args += ["--head", f"--port={head_port(root)}", *dashboard] if head_address is None \
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
        path.write_text(str(node_port()))
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
            dead = [n for n in nodes if n.process.poll() is not None]
            assert not dead, f"ray start exited for {[n.name for n in dead]}:\n{dead[0].log_tail()}"
            time.sleep(0.5)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, "the cluster did not reach its node count"
