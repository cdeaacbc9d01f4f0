"""Training curves of a study, from its `history` table (study.history).

`<study_dir>/history/` holds one row per trial x stage x training epoch,
schema `study.schema.HISTORY_SCHEMA`, written while the stages train; a study
folder (local path or URI) without it has no curves yet.
"""
from __future__ import annotations

import html
import os

import pandas as pd
import plotly.graph_objects as go
import pyarrow.fs as pafs
from plotly.subplots import make_subplots

from analysis.figures import LAYOUT, PALETTE
from analysis.frames import STAGE_LABELS
from analysis.store import ResultsError, study_filesystem
from study.history import HISTORY_FOLDER, read_history
from study.schema import HISTORY_READABLE_VERSIONS, STAGES

PANELS: dict[str, str] = {"loss": "mean loss", "images_per_second": "images / s"}
"""The history column drawn in each row of panels, and its axis title."""


def load_history(study_dir: str | os.PathLike) -> pd.DataFrame:
    """Every history row of one study, sorted by trial, stage order and epoch
    (an empty frame when no epoch has been recorded). Raises `ResultsError`
    for rows of a schema version this code cannot read."""
    filesystem, root = study_filesystem(study_dir)
    frame = read_history(filesystem, f"{root}/{HISTORY_FOLDER}").to_pandas()
    unreadable = sorted(set(frame["schema_version"].astype(int)) - set(HISTORY_READABLE_VERSIONS))
    if unreadable:
        raise ResultsError(f"history in {study_dir} uses schema versions {unreadable}; this analysis reads "
                           f"versions {', '.join(map(str, HISTORY_READABLE_VERSIONS))}")
    frame["stage"] = pd.Categorical(frame["stage"], categories=list(STAGES), ordered=True)
    return frame.sort_values(["trial_id", "stage", "epoch"], kind="stable").reset_index(drop=True)


def history_stamp(study_dir: str | os.PathLike) -> tuple[int, int]:
    """(number of files, newest mtime in ns) under the history folder; changes when an epoch lands."""
    filesystem, root = study_filesystem(study_dir)
    selector = pafs.FileSelector(f"{root}/{HISTORY_FOLDER}", allow_not_found=True)
    infos = [i for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File]
    return len(infos), max((i.mtime_ns or 0 for i in infos), default=0)


def training_curves(history: pd.DataFrame) -> go.Figure | None:
    """One column of panels per stage that trained: the epoch's mean loss (the
    minimised sum; hover: every loss part and the learning rate) and the
    training images per second, vs epoch; one line per trial. None without rows."""
    if history.empty:
        return None
    stages = [stage for stage in STAGES if (history["stage"] == stage).any()]
    fig = make_subplots(rows=len(PANELS), cols=len(stages), shared_xaxes="columns", vertical_spacing=0.08,
                        horizontal_spacing=0.06, column_titles=[STAGE_LABELS.get(s, s) for s in stages])
    trials = sorted(history["trial_id"].unique())
    for index, trial in enumerate(trials):
        colour = PALETTE[index % len(PALETTE)]
        for column, stage in enumerate(stages, start=1):
            part = history[(history["trial_id"] == trial) & (history["stage"] == stage)]
            if part.empty:
                continue
            hover = [_hover(row) for row in part.itertuples()]
            for row, name in enumerate(PANELS, start=1):
                fig.add_trace(go.Scatter(
                    x=part["epoch"], y=part[name], mode="lines+markers", name=str(trial), legendgroup=str(trial),
                    showlegend=column == 1 and row == 1, line={"color": colour}, marker={"size": 5},
                    text=hover, hovertemplate="%{text}<extra></extra>",
                ), row=row, col=column)
    for row, title in enumerate(PANELS.values(), start=1):
        fig.update_yaxes(title_text=title, row=row, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=len(PANELS))
    fig.update_layout(title="Mean loss and throughput per training epoch (one line per trial that trained the stage)",
                      height=520, legend_title_text="trial", **LAYOUT)
    return fig


def _hover(row: object) -> str:
    parts = ", ".join(f"{name} {value:.4g}" for name, value in (row.loss_parts or []))  # type: ignore[attr-defined]
    return (f"{html.escape(str(row.trial_id))} {row.stage} epoch {row.epoch}/{row.epochs}<br>{parts}"  # type: ignore[attr-defined]
            f"<br>lr {row.lr:.3g}, {row.images_per_second or 0:.1f} images/s")  # type: ignore[attr-defined]
