"""A one-node Slurm on localhost for tests: munged, slurmctld and slurmd as
this test's own foreground processes (own key, socket, ports, state and
logs under one folder; `SLURM_CONF` points the client commands at it),
stopped by PID. Debian's slurmctld, slurmd, slurm-client and munge packages
provide the programs; `available()` says whether they are installed."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ray_nodes import node_port

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel")


def available() -> bool:
    return all(shutil.which(name) or Path(f"/usr/sbin/{name}").exists() for name in PROGRAMS)


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


CONFIG = """ClusterName=wsss-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={controller_port}
SlurmdPort={node_port}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def one_node_slurm(folder: Path, cpus: int) -> Iterator[dict[str, str]]:
    """Start the three daemons in `folder`; yields the environment for Slurm's client commands."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    (folder / "slurm.conf").write_text(CONFIG.format(host=host, controller_port=node_port(), node_port=node_port(),
                                                     folder=folder, cpus=cpus))
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    log = open(folder / "daemons.log", "w")  # noqa: SIM115 - closed after the daemons stop
    daemons = []
    try:
        daemons.append(subprocess.Popen(
            [_program("munged"), "--foreground", "--force", f"--socket={folder}/munge.socket", f"--key-file={key}",
             f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"],
            stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: (folder / "munge.socket").exists(), "munged", folder)
        daemons.append(subprocess.Popen([_program("slurmctld"), "-D", "-i"], env=env, stdout=log, stderr=subprocess.STDOUT))
        daemons.append(subprocess.Popen([_program("slurmd"), "-D", "-N", host], env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: "idle" in subprocess.run([_program("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True,
                                               text=True, check=False).stdout, "an idle Slurm node", folder)
        yield env
    finally:
        subprocess.run([_program("scancel"), "--full", "--partition=test"], env=env, capture_output=True, check=False)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=30)
        log.close()


def _wait(ready, what: str, folder: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(folder.glob("*.log")))
            raise AssertionError(f"no {what} after {timeout:.0f} s\n{logs}")
        time.sleep(0.5)
