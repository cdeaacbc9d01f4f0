"""CAM overlay gallery: the pipeline's PNGs of the best trials, embedded as base64 data URIs.

The pipeline writes `<trial_dir>/overlays/<stage>/*.png`; the `overlay_dir`
column points there (absolute, or relative to the study folder).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from analysis.frames import STAGE_LABELS, reference_stage, scored
from study.schema import STAGES


def overlay_paths(frame: pd.DataFrame, study_dir: Path, top: int = 4, per_stage: int = 4) -> dict[str, dict[str, list[Path]]]:
    """{trial_id: {stage: [png, ...]}} for the `top` trials by mIoU at the deepest scored stage."""
    stage = reference_stage(frame)
    if stage is None:
        return {}
    ranking = scored(frame, stage).sort_values("miou", ascending=False)["trial_id"].drop_duplicates()
    found: dict[str, dict[str, list[Path]]] = {}
    for trial_id in ranking:
        rows = frame[(frame["trial_id"] == trial_id) & frame["overlay_dir"].notna()].drop_duplicates("stage")
        images = {}
        for stage_name, overlay_dir in zip(rows["stage"].astype(str), rows["overlay_dir"]):
            folder = Path(overlay_dir) if Path(overlay_dir).is_absolute() else study_dir / overlay_dir
            pngs = sorted(folder.glob("*.png"))[:per_stage] if folder.is_dir() else []
            if pngs:
                images[stage_name] = pngs
        if images:
            found[str(trial_id)] = {s: images[s] for s in STAGES if s in images}
        if len(found) == top:
            break
    return found


def gallery_html(frame: pd.DataFrame, study_dir: Path, top: int = 4, per_stage: int = 4) -> str | None:
    """A self-contained HTML gallery (one block per trial, one row per stage), or None without PNGs."""
    found = overlay_paths(frame, study_dir, top, per_stage)
    if not found:
        return None
    blocks = []
    for trial_id, stages in found.items():
        rows = []
        for stage, pngs in stages.items():
            images = "".join(
                f"<figure><img alt='{html.escape(p.name)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in pngs)
            rows.append(f"<div class='gallery-row'><span class='gallery-stage'>{html.escape(STAGE_LABELS[stage])}</span>{images}</div>")
        blocks.append(f"<div class='gallery-trial'><h4>{html.escape(trial_id)}</h4>{''.join(rows)}</div>")
    return "".join(blocks)
