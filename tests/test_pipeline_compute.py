"""run_pipeline's `compute` hook: a missing stage computed elsewhere by
`compute_stage` (here: another process) gives the same results as a local run,
with truthful cache hits, and a key mismatch is refused before any work."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from wsss_core.pipeline import run_pipeline
from wsss_core.pipeline.cache import LocalStageStore
from wsss_core.pipeline.runner import compute_stage

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml"
CUDA_ONLY = ["runtime.device=cuda"]


def _compute_in_child(stage: str, key: str, cache: str) -> None:
    compute_stage(str(TINY), stage, cache_dir=cache, key=key)


def test_stages_computed_elsewhere_match_a_local_run(tmp_path: Path) -> None:
    store = LocalStageStore(tmp_path / "cache")
    asked: list[str] = []

    def elsewhere(stage: str, key: str) -> Path:
        asked.append(stage)
        child = multiprocessing.get_context("spawn").Process(
            target=_compute_in_child, args=(stage, key, str(tmp_path / "cache")))
        child.start()
        child.join()
        assert child.exitcode == 0
        return store.fetch(stage, key)

    remote = run_pipeline(TINY, tmp_path / "remote", cache_dir=tmp_path / "cache", progress=False, compute=elsewhere)
    assert asked == ["cam", "affinity", "segmentation"]
    assert [r.cache_hit for r in remote.stages] == [False, False, False], "the run that caused the work computed it"
    assert "computing" in (tmp_path / "remote" / "pipeline.log").read_text()
    local = run_pipeline(TINY, tmp_path / "local", cache_dir=tmp_path / "local-cache", progress=False)
    for mine, theirs in zip(remote.stages, local.stages):
        assert mine.key == theirs.key and mine.metrics == theirs.metrics
    again = run_pipeline(TINY, tmp_path / "again", cache_dir=tmp_path / "cache", progress=False, compute=elsewhere)
    assert [r.cache_hit for r in again.stages] == [True, True, True] and len(asked) == 3, "a cache hit computes nothing"


def test_a_coordinator_needs_no_cuda_and_a_foreign_key_is_refused(tmp_path: Path) -> None:
    def refuse(stage: str, key: str) -> Path:
        compute_stage(TINY, stage, cache_dir=tmp_path / "cache", key="not-" + key)
        raise AssertionError("compute_stage must refuse another key")

    with pytest.raises(RuntimeError, match="derives key"):
        # device=cuda on a machine without CUDA: the coordinator resolves no CUDA runtime
        run_pipeline(TINY, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, compute=refuse,
                     overrides=CUDA_ONLY if not _has_cuda() else None)
    assert not [p for p in (tmp_path / "cache" / "stages").glob("*/*") if p.is_dir()], "no work folder, no output"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
