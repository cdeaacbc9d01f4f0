"""Exit statuses a script can trust. `wsss study run` checks every data
configuration on the driver before Ray starts (a missing folder or a
truncated image: exit 2, one line, nothing written); a trial that fails
exits the study with 1 and one stderr line naming the cause, also when
every trial failed; a configuration error in a trial is not retried; the
trials' evaluation pools leave no process behind."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from study.cli import main  # noqa: E402
from study.runner import study_status  # noqa: E402
from wsss_core.data import read_mask, write_synthetic_voc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "search_spaces" / "pipelines" / "tiny.yaml")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good 16 + 8 image VOC folder and copies with a truncated val image /
    a train mask holding class 99 (found only when the mask is decoded)."""
    base = tmp_path_factory.mktemp("data")
    good = write_synthetic_voc(base / "good", num_train=16, num_val=8, size=64)
    truncated = Path(shutil.copytree(good, base / "truncated" / "VOC2012"))
    image = sorted((truncated / "JPEGImages").glob("val_*.jpg"))[0]
    image.write_bytes(image.read_bytes()[:-30])
    bad_mask = Path(shutil.copytree(good, base / "bad_mask" / "VOC2012"))
    mask = sorted((bad_mask / "SegmentationClass").glob("train_*.png"))[0]
    Image.fromarray(np.full_like(read_mask(mask), 99, dtype=np.uint8), "L").save(mask)
    return {"good": good, "truncated": truncated, "truncated_image": image, "bad_mask": bad_mask, "mask": mask}


def write_spec(folder: Path, name: str, roots: list[Path], **entries) -> str:
    """A spec over `roots` (data.root grid) on the tiny config, VOC data (the base names the first root)."""
    base = yaml.safe_load(Path(TINY).read_text())
    base["data"] = {"kind": "voc", "root": str(roots[0])}
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    raw = {
        "name": name, "base": "base.yaml", "fixed": {"eval.workers": 1},
        "space": {"data.root": {"grid": [str(r) for r in roots]}},
        "resources": {"cpus": 2}, "search": {"max_concurrent": 1}, "failure": {"max_retries": 2}, **entries,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], spec: str, storage: Path) -> tuple[int, list[str]]:
    code = main(["study", "run", spec, "--storage", str(storage), "--quiet"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_bad_data_is_one_line_before_ray_starts(roots, tmp_path: Path, capsys) -> None:
    storage = tmp_path / "runs"
    cases = [
        ([tmp_path / "nowhere"], f"wsss study run: trial p0000 (data.root='{tmp_path}/nowhere'): "
                                 f"VOC root not found: {tmp_path}/nowhere"),
        ([roots["good"], roots["truncated"]],
         f"wsss study run: trial p0001 (data.root='{roots['truncated']}'): {roots['truncated_image']}: "
         "truncated image (JPEG data ends before its end marker)"),
    ]
    for data, line in cases:
        code, err = run(capsys, write_spec(tmp_path, "bad", data), storage)
        assert (code, err) == (2, [line])
    spec = write_spec(tmp_path, "crop", [roots["good"]], fixed={"segmentation.crop_size": 96})
    code, err = run(capsys, spec, storage)
    assert code == 2 and err == ["wsss study run: trial p0000 (data.root='%s'): segmentation.crop_size=96 is larger "
                                 "than every train image after segmentation.resize_long (longest side 80 px); "
                                 "allowed: an integer <= 80" % roots["good"]]
    assert not storage.exists(), "nothing is written for a bad input"
    assert not ray.is_initialized(), "Ray is not started for a bad input"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def pool_processes() -> list:
    """Multiprocessing workers and resource trackers below this test process."""
    found = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "multiprocessing" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_failed_trials_give_exit_1_and_one_line_each_without_retrying_config_errors(
    local_ray, roots, tmp_path: Path, capsys
) -> None:
    storage = tmp_path / "runs"
    before = {p.pid for p in pool_processes()}  # e.g. this process's own resource tracker
    code, err = run(capsys, write_spec(tmp_path, "mixed", [roots["good"], roots["bad_mask"]]), storage)
    assert code == 1
    cause = f"{roots['mask']}: mask value 99 is not a class index; allowed 0..5 and 255"
    assert len(err) == 1 and err[0].startswith("trial p0001 failed: ") and cause in err[0], err
    table = {row["trial"]: row for row in study_status("mixed", storage=storage)}
    assert table["p0000"]["state"] == "TERMINATED" and table["p0000"]["stage"] == "segmentation"
    assert table["p0001"]["state"] == "ERROR"
    assert table["p0001"]["failures"] == 1, "a data error is not retried (failure.max_retries is 2)"

    code, err = run(capsys, write_spec(tmp_path, "all_failed", [roots["bad_mask"]]), storage)
    assert code == 1 and len(err) == 1 and err[0].startswith("trial p0000 failed: ") and cause in err[0]
    assert [p for p in pool_processes() if p.pid not in before] == [], "a trial's evaluation pool outlived it"
