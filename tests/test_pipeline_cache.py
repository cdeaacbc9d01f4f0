"""Content-addressed stage cache: keys (code without docstrings, library
versions, weight and label file contents), atomic publication, racing runs."""
from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

from wsss_core.data import build_dataset
from wsss_core.pipeline import runner
from wsss_core.pipeline.cache import (
    FileLeases, LocalStageStore, _code_fingerprint, code_version, file_digest, library_versions, stage_key,
)
from wsss_core.pipeline.config import load_config

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml"


def test_stage_key_depends_on_every_input() -> None:
    base = dict(stage="cam", stage_config={"lam": 0.5}, upstream=None, dataset="d1", code="c1")
    key = stage_key(**base)
    assert key == stage_key(**base)
    for change in ({"stage_config": {"lam": 0.6}}, {"upstream": "u"}, {"dataset": "d2"}, {"code": "c2"},
                   {"stage": "affinity"}):
        assert stage_key(**{**base, **change}) != key


def test_code_version_ignores_docstrings_and_comments_but_not_code() -> None:
    first = code_version()
    assert first == code_version() and len(first) == 16
    source = b'"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n'
    edited = b'"""Module doc, reworded."""\n\n\ndef f(x):\n    """Other doc."""\n    # a comment\n    return x + 1\n'
    assert _code_fingerprint(source) == _code_fingerprint(edited)
    assert _code_fingerprint(source) != _code_fingerprint(source.replace(b"x + 1", b"x + 2"))
    assert library_versions()["torch"] and "numpy" in library_versions()
    attribute = b'class C:\n    A = (1,)\n    """What A is."""\n\n    def f(self):\n        "Doc."\n        return self.A\n'
    assert _code_fingerprint(attribute) == _code_fingerprint(attribute.replace(b"What A is.", b"What A holds."))
    assert _code_fingerprint(attribute) != _code_fingerprint(attribute.replace(b"(1,)", b"(2,)"))
    assert _code_fingerprint(b'if x:\n    "only a string"\n') == _code_fingerprint(b"if x:\n    pass\n")


def test_weights_and_labels_file_contents_enter_the_keys(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"first")
    labels = tmp_path / "labels.json"
    cfg = load_config(TINY, [f"affinity.weights={weights}"])
    datasets = {s: build_dataset(cfg.data, s, cache_dir=tmp_path) for s in ("train", "val")}
    labels.write_text('{"a": [1]}')
    before = runner._stage_keys(cfg, datasets, "c")
    weights.write_bytes(b"second")
    after = runner._stage_keys(cfg, datasets, "c")
    assert after["cam"] == before["cam"] and after["affinity"] != before["affinity"]
    assert file_digest(weights) != file_digest(labels)
    labelled = load_config(TINY, [f"data.label_source={labels}"])
    first = runner._dataset_identity(labelled, datasets)
    labels.write_text('{"a": [2]}')
    assert runner._dataset_identity(labelled, datasets) != first


def test_publish_is_atomic_and_drops_checkpoints(tmp_path: Path) -> None:
    store = LocalStageStore(tmp_path)
    assert store.fetch("cam", "abc") is None
    work = store.work_dir("cam", "abc")
    (work / "model.pt").write_text("weights")
    (work / "checkpoint.pt").write_text("resume state")
    assert store.fetch("cam", "abc") is None
    final = store.publish("cam", "abc", drop=("checkpoint.pt",))
    assert store.fetch("cam", "abc") == final and not work.exists()
    assert sorted(p.name for p in final.iterdir()) == ["model.pt"]


def _racer(root: str, results: "multiprocessing.Queue") -> None:
    store, leases = LocalStageStore(root), FileLeases(root)
    computed = False
    if store.fetch("cam", "race") is None:
        with leases.hold("cam", "race"):
            if store.fetch("cam", "race") is None:
                work = store.work_dir("cam", "race")
                for i in range(5):
                    (work / f"part{i}").write_text(str(i))
                    time.sleep(0.05)
                store.publish("cam", "race")
                computed = True
    results.put("computed" if computed else "hit")


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
    final = LocalStageStore(tmp_path).fetch("cam", "race")
    assert sorted(p.name for p in final.iterdir()) == [f"part{i}" for i in range(5)]
