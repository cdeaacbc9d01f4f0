"""Stage leases from the detached LeaseTable actor: one holder per key, a dead
holder's lease expires, a retried trial (same holder name) takes its lease
back at once, and a waiter blocks until the holder is done."""
from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")

from study.leases import ActorLeases, start_lease_table  # noqa: E402


@pytest.fixture(scope="module")
def table():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield start_lease_table()
    ray.shutdown()


def test_one_holder_per_key_and_expiry_of_a_dead_holder(table):
    assert ray.get(table.acquire.remote("cam/k", "trial-a", 1.0))
    assert not ray.get(table.acquire.remote("cam/k", "trial-b", 1.0))
    assert ray.get(table.acquire.remote("cam/k", "trial-a", 1.0)), "a retried trial takes its own lease back"
    assert ray.get(table.acquire.remote("cam/other", "trial-b", 1.0)), "keys are independent"
    time.sleep(1.2)  # trial-a died: no renewal
    assert ray.get(table.acquire.remote("cam/k", "trial-b", 1.0))
    assert ray.get(table.grants.remote())["cam/k"] == 2


def test_a_waiter_holds_the_lease_only_after_the_holder_is_done(table):
    leases = ActorLeases(ttl=2.0, poll=0.05)
    events = []
    first_in = threading.Event()

    def holder():
        with leases.hold("affinity", "k"):
            first_in.set()
            events.append("holder in")
            time.sleep(3.0)  # longer than ttl: kept alive by renewals
            events.append("holder out")

    thread = threading.Thread(target=holder)
    thread.start()
    first_in.wait(10)
    with leases.hold("affinity", "k"):
        events.append("waiter in")
    thread.join()
    assert events == ["holder in", "holder out", "waiter in"]
