"""The stage cache and results store on a real S3-compatible server (moto's):
progress saved on one node resumes on another, a published stage is fetched
once per node, the reach marker, and the results store read back from s3://."""
from __future__ import annotations

import pytest

from study.stage_store import DONE, ObjectStageStore, check_reachable, remove_reach_marker, write_reach_marker
from study.store import ResultsStore
from tests.s3_server import moto_server, s3_env
from tests.test_study_store import outcome

BUCKET = "wsss-stage-store"


@pytest.fixture(scope="module")
def s3():
    with moto_server(BUCKET) as port:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in s3_env(port).items():
                patch.setenv(name, value)
            yield f"s3://{BUCKET}"


def test_progress_moves_between_nodes_and_published_outputs_are_mirrored(s3, tmp_path):
    uri = f"{s3}/cache"
    first, second = ObjectStageStore(uri, tmp_path / "node1"), ObjectStageStore(uri, tmp_path / "node2")
    assert first.fetch("cam", "k1") is None
    work = first.work_dir("cam", "k1")
    (work / "checkpoint.pt").write_bytes(b"epoch 1")
    first.save_progress("cam", "k1")

    resumed = second.work_dir("cam", "k1")  # the trial retried on another node
    assert (resumed / "checkpoint.pt").read_bytes() == b"epoch 1"
    (resumed / "checkpoint.pt").write_bytes(b"epoch 2")
    (resumed / "cams").mkdir()
    (resumed / "cams" / "a.npy").write_bytes(b"cam")
    (resumed / "model.pt").write_bytes(b"weights")
    final = second.publish("cam", "k1", drop=("checkpoint.pt",))
    assert sorted(p.name for p in final.rglob("*") if p.is_file()) == [DONE, "a.npy", "model.pt"]

    fetched = first.fetch("cam", "k1")
    assert fetched == tmp_path / "node1" / "stages" / "cam" / "k1"
    assert (fetched / "cams" / "a.npy").read_bytes() == b"cam" and not (fetched / "checkpoint.pt").exists()
    assert list(ObjectStageStore(uri, tmp_path / "node3").work_dir("cam", "k1").iterdir()) == [], \
        "publishing deletes the saved progress"


def test_reach_marker_written_on_the_driver_is_read_in_a_trial(s3, tmp_path):
    remote = write_reach_marker(f"{s3}/cache")
    check_reachable(remote, "node-a")
    remove_reach_marker(remote)  # the study ended
    with pytest.raises(RuntimeError, match="is not reachable"):
        check_reachable(remote, "node-a")
    local = write_reach_marker(str(tmp_path / "shared"))
    check_reachable(local, "node-a")
    (tmp_path / "shared" / "_reach" / local.rsplit("/", 1)[1]).unlink()  # a node that does not mount the folder
    with pytest.raises(RuntimeError, match=f"stage cache {tmp_path / 'shared'} is not reachable from node node-a"):
        check_reachable(local, "node-a")


def test_results_store_on_s3(s3):
    store = ResultsStore(f"{s3}/studies/one")
    store.write_outcome(outcome())
    store.write_outcome(outcome(trial_id="t2"))
    assert store.compact().endswith("results/compacted.parquet")
    assert ResultsStore(f"{s3}/studies/one").read().num_rows == 4


def test_a_results_file_deleted_between_listing_and_reading_on_s3_is_listed_again(s3, monkeypatch):
    """Compaction on S3 while a reader runs: the object it listed is gone when it reads
    (S3 answers RESOURCE_NOT_FOUND, an OSError); the reader lists again instead of failing."""
    import study.store

    store = ResultsStore(f"{s3}/studies/compacting")
    store.write_outcome(outcome())
    (vanishing,) = store.write_outcome(outcome(trial_id="t2"))
    listed = study.store.ds.dataset

    def list_then_compaction_deletes(*args, **kwargs):
        dataset = listed(*args, **kwargs)
        if store.filesystem.get_file_info(vanishing).type == study.store.pafs.FileType.File:
            store.filesystem.delete_file(vanishing)
        return dataset

    monkeypatch.setattr(study.store.ds, "dataset", list_then_compaction_deletes)
    assert sorted(store.read()["trial_id"].to_pylist()) == ["t1", "t1"]
