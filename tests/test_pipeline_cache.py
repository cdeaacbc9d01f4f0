"""Content-addressed stage cache: keys, atomic publication, racing claims."""
from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

from wsss_core.pipeline.cache import StageSlot, code_version, stage_key


def test_stage_key_depends_on_every_input() -> None:
    base = dict(stage="cam", stage_config={"lam": 0.5}, upstream=None, dataset="d1", code="c1")
    key = stage_key(**base)
    assert key == stage_key(**base)
    for change in ({"stage_config": {"lam": 0.6}}, {"upstream": "u"}, {"dataset": "d2"}, {"code": "c2"},
                   {"stage": "affinity"}):
        assert stage_key(**{**base, **change}) != key


def test_code_version_is_a_stable_hash() -> None:
    first = code_version()
    assert first == code_version() and len(first) == 16
    int(first, 16)


def test_commit_publishes_atomically_and_drops_checkpoints(tmp_path: Path) -> None:
    slot = StageSlot(tmp_path, "cam", "abc")
    with slot.claim() as done:
        assert not done
        work = slot.work_dir()
        (work / "model.pt").write_text("weights")
        (work / "checkpoint.pt").write_text("resume state")
        assert not slot.is_done()
        slot.commit(drop=("checkpoint.pt",))
    assert slot.is_done() and not slot.partial.exists()
    assert sorted(p.name for p in slot.final.iterdir()) == ["model.pt"]
    with slot.claim() as done:
        assert done


def _racer(root: str, results: "multiprocessing.Queue") -> None:
    slot = StageSlot(root, "cam", "race")
    with slot.claim() as done:
        if not done:
            work = slot.work_dir()
            for i in range(5):
                (work / f"part{i}").write_text(str(i))
                time.sleep(0.05)
            slot.commit()
        results.put("hit" if done else "computed")


def test_racing_runs_compute_once_and_never_see_a_partial_result(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    results = context.Queue()
    procs = [context.Process(target=_racer, args=(str(tmp_path), results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["computed", "hit", "hit"]
    final = StageSlot(tmp_path, "cam", "race").final
    assert sorted(p.name for p in final.iterdir()) == [f"part{i}" for i in range(5)]
