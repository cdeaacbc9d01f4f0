"""Training epochs of a stage computed by a Ray task (study.stage_tasks),
delivered to the trial that waits for the task while the stage runs.

The task calls an `EpochSender` with each EpochRecord; the sender puts the
record and the task's log lines written since the previous epoch on a Ray
queue (an actor holding no CPU). The trial's `EpochRelay.wait` polls that
queue until the task ends: it appends the lines to the trial's pipeline.log
and calls `on_epoch` with the record, in the trial's own thread (where
`tune.report` belongs).
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import ray

POLL_SECONDS = 0.5
"""How long the trial waits on the queue before it checks whether the task ended."""


@dataclass
class EpochSender:
    """The task side (pickled into the task): `log` is the task's log buffer,
    set where the task runs; calling the sender forwards one epoch."""

    queue: Any
    log: io.StringIO | None = None
    sent: int = 0

    def __call__(self, record: Any) -> None:
        text = self.log.getvalue() if self.log is not None else ""
        self.queue.put((record, text[self.sent:]))
        self.sent = len(text)


class EpochRelay:
    """The trial side: one queue for one stage task; close() removes it."""

    def __init__(self, on_epoch: Callable[[Any], None], log_file: Path) -> None:
        from ray.util.queue import Queue

        self.on_epoch = on_epoch
        self.log_file = log_file
        # "DEFAULT": outside the trial's placement group, like the stage task
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": "DEFAULT"})
        self.sender = EpochSender(self.queue)

    def wait(self, task: ray.ObjectRef) -> str:
        """Deliver the task's epochs until it ends; its result (its whole log)
        less the lines already appended. A task's error is raised by ray.get."""
        appended = 0
        while True:
            finished = bool(ray.wait([task], timeout=0)[0])
            for record, lines in self._received(block=not finished):
                with open(self.log_file, "a") as handle:
                    handle.write(lines)
                appended += len(lines)
                self.on_epoch(record)
            if finished:
                return ray.get(task)[appended:]

    def close(self) -> None:
        self.queue.shutdown()

    def _received(self, block: bool) -> list[tuple[Any, str]]:
        """What the queue holds (after waiting up to POLL_SECONDS for a first item when `block`)."""
        items = []
        try:
            items.append(self.queue.get(block=block, timeout=POLL_SECONDS if block else None))
        except Empty:
            return items
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items
