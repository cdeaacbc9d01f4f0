"""Evaluation after every stage: mIoU and contour F-score (Sec. 4.1) per split,
computed across images in a process pool and reduced with `.merge`."""
from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from tqdm import tqdm

from wsss_core.pipeline import pool_tasks
from wsss_core.pipeline.lifetime import init_worker

CHUNK = 4


class ImagePool:
    """A process pool (spawn start: workers import only numpy-side modules) or,
    with workers=0, in-process execution. Use as a context manager: leaving it
    normally waits for the workers; leaving it by an exception (Interrupted
    included) kills them. Workers exit by themselves if this process dies."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Executor | None = None
        self._processes: list[multiprocessing.process.BaseProcess] = []  # kept: the executor forgets dead ones

    def __enter__(self) -> ImagePool:
        if self.workers > 0:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(os.getpid(),),
            )
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if exc_type is not None:
            # ProcessPoolExecutor has no terminate() before Python 3.14.
            for process in list(getattr(executor, "_processes", {}).values()):
                process.kill()
        executor.shutdown(wait=True, cancel_futures=True)

    def imap(self, fn: Callable[..., Any], args: Iterable[tuple], *, desc: str, total: int, progress: bool) -> Iterator[Any]:
        """fn(*a) for each a in args, results in order; at most 2 x workers tasks in
        flight, so arguments are produced lazily (bounded memory)."""
        bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="img")
        try:
            if self._executor is None:
                for a in args:
                    yield fn(*a)
                    bar.update(_size(a))
                return
            pending: deque[tuple[Future, int]] = deque()
            for a in args:
                pending.append((self._executor.submit(fn, *a), _size(a)))
                if len(self._processes) < self.workers:
                    self._processes = list(getattr(self._executor, "_processes", {}).values())
                if len(pending) >= 2 * self.workers:
                    future, size = pending.popleft()
                    yield self._result(future, desc)
                    bar.update(size)
            while pending:
                future, size = pending.popleft()
                yield self._result(future, desc)
                bar.update(size)
        finally:
            bar.close()

    def _result(self, future: Future, desc: str) -> Any:
        """future.result(); a worker that died (no Python error to pass on) becomes a RuntimeError
        that says so, with the workers' exit codes, instead of a bare BrokenProcessPool."""
        try:
            return future.result()
        except BrokenProcessPool as error:
            codes = sorted({p.exitcode for p in _reaped(self._processes) if p.exitcode is not None})
            raise RuntimeError(
                f"{desc}: an image-pool worker (eval.workers={self.workers}) died without passing back a Python error"
                f" (exit codes {codes or 'unknown'}; -9 is a kill, often the out-of-memory killer; 1 is often an error"
                " while the worker started, e.g. a script without an `if __name__ == \"__main__\":` guard, its"
                " traceback on stderr above);"
                " set eval.workers=0 (wsss pipeline run: --set eval.workers=0) to run them in this process and see why"
            ) from error


def _reaped(processes: list[multiprocessing.process.BaseProcess], timeout: float = 2.0) -> list[multiprocessing.process.BaseProcess]:
    """`processes` once each has an exit code, or `timeout` seconds have passed: a dead worker's pipe
    closes before it is reaped, and the executor's own thread may be reaping it at that moment."""
    deadline = time.monotonic() + timeout
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    return processes


def _size(args: tuple) -> int:
    """Images in one task: the length of a chunk argument, else 1."""
    return len(args[0]) if args and isinstance(args[0], list) else 1


def chunked(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_split(
    pool: ImagePool,
    items: Iterable[tuple[dict[str, np.ndarray], np.ndarray]],
    *,
    num_classes: int,
    bound_th: float,
    contour_f_absent: str,
    total: int,
    desc: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """items: (predictions {variant: uint8 [H,W]}, gt [H,W]) per image ->
    {variant: {"miou", "contour_f", "per_class_iou", "per_class_f"}}; contour_f_absent:
    the metrics.ABSENT_CLASS_F rule for classes absent from every map."""
    reduced: pool_tasks.Scores = {}
    tasks = ((chunk, num_classes, bound_th) for chunk in chunked(items))
    for partial in pool.imap(pool_tasks.score_chunk, tasks, desc=desc, total=total, progress=progress):
        for variant, (miou, contour) in partial.items():
            if variant in reduced:
                reduced[variant][0].merge(miou)
                reduced[variant][1].merge(contour)
            else:
                reduced[variant] = (miou, contour)
    return {variant: summarise(miou, contour, contour_f_absent) for variant, (miou, contour) in reduced.items()}


def summarise(miou: Any, contour: Any, contour_f_absent: str) -> dict[str, Any]:
    """Metric objects -> JSON-ready dict (NaN per-class entries become None)."""
    area, edge = miou.compute(), contour.compute(absent=contour_f_absent)
    return {
        "miou": area["mean"],
        "contour_f": edge["mean"],
        "per_class_iou": [finite(v) for v in area["per_class"]],
        "per_class_f": [finite(v) for v in edge["per_class"]],
    }


def finite(value: float) -> float | None:
    """NaN (or None) -> None, else the float: JSON-ready per-class entries."""
    return None if value is None or math.isnan(value) else float(value)
