"""CAM overlay gallery: the pipeline's PNGs of the best trials, embedded as base64 data URIs.

The study writes `<study>/trials/<trial_id>/overlays/<stage>/*.png`; the
`overlay_dir` column points there, relative to the study folder (schema
version 1: absolute). The study folder may be a local path or a URI (s3://).
"""
from __future__ import annotations

import base64
import html
import os

import pandas as pd
import pyarrow.fs as pafs

from analysis.frames import STAGE_LABELS, describe, reference_stage, scored, varying
from analysis.store import study_filesystem
from study.schema import STAGES


def overlay_paths(frame: pd.DataFrame, study_dir: str | os.PathLike, top: int = 4,
                  per_stage: int = 4) -> dict[str, dict[str, list[str]]]:
    """{trial_id: {stage: [png path, ...]}} (paths on the study's file system) for `top` trials by
    mIoU at the deepest scored stage; when at most `top` lambda values were run, the best trial of
    each lambda comes first, in lambda order, so the overlays show the lambda effect."""
    filesystem, root = study_filesystem(study_dir)
    stage = reference_stage(frame)
    if stage is None:
        return {}
    ranked = scored(frame, stage).sort_values("miou", ascending=False, kind="stable").drop_duplicates("trial_id")
    ranking = ranked["trial_id"]
    if 1 < ranked["lambda"].nunique() <= top:
        ranking = pd.concat([ranked.drop_duplicates("lambda").sort_values("lambda")["trial_id"], ranking]).drop_duplicates()
    found: dict[str, dict[str, list[str]]] = {}
    for trial_id in ranking:
        rows = frame[(frame["trial_id"] == trial_id) & frame["overlay_dir"].notna()].drop_duplicates("stage")
        images = {}
        for stage_name, overlay_dir in zip(rows["stage"].astype(str), rows["overlay_dir"]):
            folder = overlay_dir if os.path.isabs(overlay_dir) else f"{root}/{overlay_dir}"
            pngs = _pngs(filesystem, folder)[:per_stage]
            if pngs:
                images[stage_name] = pngs
        if images:
            found[str(trial_id)] = {s: images[s] for s in STAGES if s in images}
        if len(found) == top:
            break
    return found


def _pngs(filesystem: pafs.FileSystem, folder: str) -> list[str]:
    infos = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".png"))


def gallery_html(frame: pd.DataFrame, study_dir: str | os.PathLike, top: int = 4, per_stage: int = 4) -> str | None:
    """A self-contained HTML gallery, or None without PNGs: one block per trial headed by its config
    (the settings that vary in the study), one row per stage with its val and train mIoU (the
    panels are train images: pseudo-labels exist only there)."""
    filesystem, _ = study_filesystem(study_dir)
    found = overlay_paths(frame, study_dir, top, per_stage)
    if not found:
        return None
    blocks = []
    keys = varying(frame)
    miou = {split: scored(frame, split=split).set_index(["trial_id", "stage"])["miou"] for split in ("val", "train")}
    for trial_id, stages in found.items():
        rows = []
        for stage, pngs in stages.items():
            images = "".join(_figure(filesystem, path) for path in pngs)
            score = "".join(f"<br>{split} mIoU {100 * scores[(trial_id, stage)]:.1f}%"
                            for split, scores in miou.items() if (trial_id, stage) in scores.index)
            rows.append(f"<div class='gallery-row'><span class='gallery-stage'>{html.escape(STAGE_LABELS[stage])}{score}</span>"
                        f"{images}</div>")
        config = describe(frame[frame["trial_id"] == trial_id].iloc[0], keys) if keys else ""
        heading = html.escape(trial_id + (f" · {config}" if config else ""))
        blocks.append(f"<div class='gallery-trial'><h4>{heading}</h4>{''.join(rows)}</div>")
    return "".join(blocks)


def _figure(filesystem: pafs.FileSystem, path: str) -> str:
    with filesystem.open_input_stream(path) as stream:
        data = base64.b64encode(stream.read()).decode()
    name = path.rsplit("/", 1)[-1]
    return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(name.removesuffix('.png'))}</figcaption></figure>")
