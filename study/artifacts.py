"""Trial artifacts (overlays, pipeline log, metrics) copied from a trial's
node-local scratch folder to the study storage, so every node and the report
see them: `<study_uri>/trials/<trial_id>/`. The files go up after every stage,
and the pipeline log also after every training epoch, so a running stage's
log can be read from the storage."""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from study.store import resolve

TRIALS_FOLDER = "trials"
LOG_FILE = "pipeline.log"
TRIAL_FILES = ("config.yaml", "metrics.json", LOG_FILE)


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
    _upload_files(out_dir, filesystem, target, TRIAL_FILES)


def upload_log(out_dir: Path, study_uri: str, trial_id: str) -> None:
    """Copy the trial's pipeline log, as written so far, to the study storage."""
    filesystem, root = resolve(study_uri)
    _upload_files(out_dir, filesystem, f"{root}/{trial_folder(trial_id)}", (LOG_FILE,))


def _upload_files(out_dir: Path, filesystem: pafs.FileSystem, target: str, names: tuple[str, ...]) -> None:
    filesystem.create_dir(target, recursive=True)
    for name in names:
        if (out_dir / name).is_file():
            with filesystem.open_output_stream(f"{target}/{name}") as stream:
                stream.write((out_dir / name).read_bytes())
