"""CAM stages (stage 1 alone) of one config under several overrides, several at a time.

The diagnostics that compare CAM networks (seeds, fsl-oracle) train each one
with run_pipeline(until="cam") in its own process, one torch thread each, on
a shared stage cache: a stage already there is read, not retrained.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ONE_THREAD = ("runtime.threads=1", "eval.workers=0")
"""Each run on one torch thread and without an image pool: `jobs` runs use `jobs` cores."""


def cam_overrides(lam: float, fsl: bool, seed: int) -> list[str]:
    """The overrides of one compared CAM run: lambda (Eq. 8), FSL on/off and the seed."""
    return [f"cam.lam={lam}", f"cam.fsl={str(fsl).lower()}", f"runtime.seed={seed}", *ONE_THREAD]


def cam_stage(config: str, overrides: list[str], cache: str) -> tuple[dict[str, Any], str]:
    """Stage 1 of `config` with `overrides` -> (its val metrics, its finished folder in `cache`)."""
    from wsss_core.pipeline.cache import LocalStageStore
    from wsss_core.pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="wsss-diagnose-run-") as out:
        result = run_pipeline(config, out, cache_dir=cache, progress=False, overrides=overrides, until="cam")
    stage = result.stages[0]
    return stage.metrics["val"], str(LocalStageStore(cache).fetch("cam", stage.key))


def cam_stages(config: str, runs: Sequence[list[str]], cache: str | Path, jobs: int
               ) -> Iterator[tuple[dict[str, Any], Path]]:
    """cam_stage of each override list in `runs`, `jobs` at a time in spawned
    processes (1: one after the other in this process); yields in the order of
    `runs`, each as soon as it and those before it are done."""
    if jobs == 1:
        for overrides in runs:
            metrics, folder = cam_stage(config, overrides, str(cache))
            yield metrics, Path(folder)
        return
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(cam_stage, config, overrides, str(cache)) for overrides in runs]
        for future in futures:
            metrics, folder = future.result()
            yield metrics, Path(folder)
