"""Trial artifacts (overlays, pipeline log, metrics) copied from a trial's
node-local scratch folder to the study storage, so every node and the report
see them: `<study_uri>/trials/<trial_id>/`."""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from study.store import resolve

TRIALS_FOLDER = "trials"
TRIAL_FILES = ("config.yaml", "metrics.json", "pipeline.log")


def trial_folder(trial_id: str) -> str:
    """A trial's artifact folder, relative to the study (the Parquet `trial_dir`)."""
    return f"{TRIALS_FOLDER}/{trial_id}"


def overlay_folder(trial_id: str, stage: str) -> str:
    """A stage's overlay PNGs, relative to the study (the Parquet `overlay_dir`)."""
    return f"{trial_folder(trial_id)}/overlays/{stage}"


def upload_stage(out_dir: Path, study_uri: str, trial_id: str, stage: str) -> None:
    """Copy the stage's overlays and the trial's small files to the study storage."""
    filesystem, root = resolve(study_uri)
    target = f"{root}/{trial_folder(trial_id)}"
    overlays = out_dir / "overlays" / stage
    if overlays.is_dir():
        destination = f"{root}/{overlay_folder(trial_id, stage)}"
        filesystem.create_dir(destination, recursive=True)
        pafs.copy_files(str(overlays), destination, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=filesystem)
    filesystem.create_dir(target, recursive=True)
    for name in TRIAL_FILES:
        if (out_dir / name).is_file():
            with filesystem.open_output_stream(f"{target}/{name}") as stream:
                stream.write((out_dir / name).read_bytes())
