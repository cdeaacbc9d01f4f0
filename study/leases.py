"""Who computes a stage, decided by a detached named Ray actor, not by file locks.

`LeaseTable` (one per cluster, named LEASE_TABLE in namespace NAMESPACE,
pinned to the driver's node) hands out one lease per stage key. A holder
renews its lease every third of `ttl` seconds while it computes; a holder that
dies (worker killed, node lost) stops renewing, and its lease expires after
`ttl`, so a waiting trial takes over and resumes from the saved progress; a
holder is named after its trial, so a retried trial takes its own lease back
at once.
Waiting is a poll of the table; the stage's outputs are checked again once the
lease is held, so a waiter whose key was finished meanwhile computes nothing.
A waiting trial holds no GPU: with `resources.gpus > 0` the GPU is held only by
the stage task a lease holder starts (study.stage_tasks), and the holder keeps
renewing its lease while that task runs.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

LEASE_TABLE = "wsss-stage-leases"
NAMESPACE = "wsss"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class LeaseTable:
    """{key: (holder, expiry)}; a restarted table starts empty and holders re-acquire on renewal."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, float]] = {}
        self._grants: dict[str, int] = {}

    def acquire(self, key: str, holder: str, ttl: float) -> bool:
        """Grant (or renew) `key` to `holder` when free, expired or already its own."""
        now = time.monotonic()
        current = self._leases.get(key)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        if current is None or current[0] != holder:
            self._grants[key] = self._grants.get(key, 0) + 1
        self._leases[key] = (holder, now + ttl)
        return True

    def release(self, key: str, holder: str) -> None:
        if self._leases.get(key, ("",))[0] == holder:
            del self._leases[key]

    def grants(self) -> dict[str, int]:
        """How often each key was handed to a new holder (a retaken expired lease counts)."""
        return dict(self._grants)


def start_lease_table() -> Any:
    """The cluster's LeaseTable, created detached on this (the driver's) node if absent."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return LeaseTable.options(
        name=LEASE_TABLE, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, scheduling_strategy=here,
    ).remote()


class ActorLeases:
    """`wsss_core.pipeline.cache.StageLeases` through the cluster's LeaseTable.

    holder: who asks (a trial's name; None: a fresh id per lease); ttl:
    seconds a lease outlives its holder's last renewal; poll: seconds between
    tries while another holder has the key.
    """

    def __init__(self, holder: str | None = None, ttl: float = 60.0, poll: float = 1.0) -> None:
        self.holder = holder
        self.ttl = ttl
        self.poll = poll

    @contextmanager
    def hold(self, stage: str, key: str) -> Iterator[None]:
        table = ray.get_actor(LEASE_TABLE, namespace=NAMESPACE)
        name, holder = f"{stage}/{key}", self.holder or uuid.uuid4().hex
        while not ray.get(table.acquire.remote(name, holder, self.ttl)):
            time.sleep(self.poll)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(table, name, holder, stop), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            ray.get(table.release.remote(name, holder))

    def _renew(self, table: Any, name: str, holder: str, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            ray.get(table.acquire.remote(name, holder, self.ttl))
