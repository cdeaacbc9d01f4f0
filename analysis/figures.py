"""Plotly figures of a study: the paper's lambda curves and the study views.

Every builder takes the frame of `analysis.store.load_results` and returns a
`plotly.graph_objects.Figure`, or None when the study has no data for it.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.frames import (
    FINAL_STAGE, METRICS, STAGE_LABELS, describe, hold_fixed, mean_lists, scored, seed_stats, varying,
)
from study.schema import STAGES

FSL_COLOURS: dict[bool, str] = {True: "#d62728", False: "#1f77b4"}
"""Trace colours of the lambda curves: with FSL red, without blue."""
FSL_NAMES: dict[bool, str] = {True: "with FSL", False: "without FSL"}
POOLING_ORDER = ("gmp", "gap")  # paper: Fig. 2 (GMP) before Fig. 3 (GAP)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=80, b=50))


def lambda_curve_stats(frame: pd.DataFrame, stage: str, split: str = "val") -> tuple[pd.DataFrame, dict[str, object]] | None:
    """Seed statistics per (pooling, fsl, lambda) at one stage, the other config held fixed.

    Returns (stats indexed by pooling, fsl, lambda; held values) or None when
    fewer than two lambda values were run.
    """
    rows = scored(frame, stage, split)
    rows = rows[~rows["naive"].fillna(False).astype(bool)]
    if rows.empty:
        return None
    rows, held = hold_fixed(rows, free=("pooling", "fsl", "lambda"))
    if rows["lambda"].nunique() < 2:
        return None
    return seed_stats(rows, by=("pooling", "fsl", "lambda")), held


def lambda_curves(frame: pd.DataFrame, stage: str = FINAL_STAGE, split: str = "val") -> go.Figure | None:
    """Area mIoU and contour F-score vs lambda (Eq. 8), with and without FSL (paper Figs. 2, 3, 5-8).

    One row of panels per pooling (GMP, GAP), one column per metric; one line
    per FSL setting; error bars are the std over seeds where seeds repeat.
    """
    found = lambda_curve_stats(frame, stage, split)
    if found is None:
        return None
    stats, held = found
    return _curve_figure({"": stats}, title=_curve_title(stage, split, held))


def compare_lambda_curves(frames: Mapping[str, pd.DataFrame], stage: str = FINAL_STAGE, split: str = "val") -> go.Figure | None:
    """The lambda curves of two or more studies in the same panels (trace names start with the study)."""
    stats = {name: found[0] for name, frame in frames.items() if (found := lambda_curve_stats(frame, stage, split))}
    if len(stats) < 2:
        return None
    return _curve_figure(stats, title=f"{STAGE_LABELS[stage]} vs λ: {' vs '.join(stats)} ({split})")


def _curve_title(stage: str, split: str, held: Mapping[str, object]) -> str:
    return f"{STAGE_LABELS[stage]} vs λ ({split}){_held_note(held)}"


def _held_note(held: Mapping[str, object]) -> str:
    return f"<br><sup>held fixed: {describe(pd.Series(held, dtype=object), list(held))}</sup>" if held else ""


def _curve_figure(studies: Mapping[str, pd.DataFrame], title: str) -> go.Figure:
    poolings = _poolings(list(studies.values()))
    fig = make_subplots(rows=len(poolings), cols=len(METRICS), shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[f"{str(p).upper()}: {label}" for p in poolings for label in METRICS.values()])
    dashes = ("solid", "dash", "dot", "dashdot")
    in_legend: set[str] = set()
    for study_index, (study, stats) in enumerate(studies.items()):
        for row, pooling in enumerate(poolings, start=1):
            for fsl in (False, True):
                if (pooling, fsl) not in stats.index.droplevel("lambda"):
                    continue
                part = stats.loc[(pooling, fsl)]
                name = f"{study} · {FSL_NAMES[fsl]}" if study else FSL_NAMES[fsl]
                for col, metric in enumerate(METRICS, start=1):
                    fig.add_trace(_fsl_trace(part, metric, fsl, name, name not in in_legend,
                                             dashes[study_index % len(dashes)]), row=row, col=col)
                    in_legend.add(name)
    for col, label in enumerate(METRICS.values(), start=1):
        for row in range(1, len(poolings) + 1):
            fig.update_yaxes(title_text=label, row=row, col=col)
            fig.update_xaxes(title_text="λ", row=row, col=col)
    fig.update_layout(title=title, height=320 * len(poolings) + 120, **LAYOUT)
    return fig


def stage_lambda_curves(frame: pd.DataFrame, split: str = "val") -> go.Figure | None:
    """The lambda curves of every stage side by side, so the effects read across the pipeline.

    One column per stage (CAM, AffinityNet, DeepLab), one row per pooling and
    metric with a y axis shared along the row; one line per FSL setting, error
    bars the std over seeds. None when no stage has two lambda values.
    """
    found = {stage: f for stage in STAGES if (f := lambda_curve_stats(frame, stage, split)) is not None}
    if not found:
        return None
    poolings = _poolings([stats for stats, _ in found.values()])
    rows = [(pooling, metric) for pooling in poolings for metric in METRICS]
    fig = make_subplots(rows=len(rows), cols=len(found), shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.06, column_titles=[STAGE_LABELS[s] for s in found])
    in_legend: set[bool] = set()
    for col, (stats, _) in enumerate(found.values(), start=1):
        for row, (pooling, metric) in enumerate(rows, start=1):
            for fsl in (False, True):
                if (pooling, fsl) in stats.index.droplevel("lambda"):
                    fig.add_trace(_fsl_trace(stats.loc[(pooling, fsl)], metric, fsl, FSL_NAMES[fsl],
                                             fsl not in in_legend), row=row, col=col)
                    in_legend.add(fsl)
            fig.update_xaxes(title_text="λ" if row == len(rows) else None, row=row, col=col)
            if col == 1:
                fig.update_yaxes(title_text=f"{str(pooling).upper()} {METRICS[metric]}", row=row, col=col)
    held = next(iter(found.values()))[1]
    fig.update_layout(title=f"Metrics vs λ at every stage ({split}){_held_note(held)}", height=240 * len(rows) + 160,
                      **LAYOUT)
    fig.update_layout(margin=dict(t=120))  # room for the held-fixed note above the column titles
    return fig


def _poolings(stats: list[pd.DataFrame]) -> list[str]:
    """Poolings in the stats, the paper's order first (GMP, then GAP)."""
    present = {p for s in stats for p in s.index.get_level_values("pooling")}
    return [p for p in POOLING_ORDER if p in present] + sorted(present - set(POOLING_ORDER))


def _fsl_trace(part: pd.DataFrame, metric: str, fsl: bool, name: str, show: bool, dash: str = "solid") -> go.Scatter:
    """One lambda curve: seed means of `metric` (%) vs lambda, std error bars where seeds repeat."""
    std = part[f"{metric}_std"]
    return go.Scatter(
        x=part.index.to_numpy(dtype=float), y=part[f"{metric}_mean"].to_numpy(), name=name,
        legendgroup=name, showlegend=show, mode="lines+markers",
        line=dict(color=FSL_COLOURS[fsl], dash=dash, width=2.5),
        error_y=dict(type="data", array=std.fillna(0).to_numpy(), visible=bool(std.notna().any())),
        customdata=part["n"].to_numpy(), hovertemplate="λ=%{x}<br>%{y:.1f}% (n=%{customdata})",
    )


def learned_fsl_parameters(frame: pd.DataFrame) -> go.Figure | None:
    """Learned FSL sigma and mu (Eqs. 10-11) at the end of stage 1 vs lambda, one line per pooling."""
    rows = frame[frame["fsl"].fillna(False).astype(bool) & frame["fsl_sigma"].notna() & (frame["stage"] == "cam")]
    rows = rows.drop_duplicates("trial_id")
    if rows.empty or rows["lambda"].nunique() < 2:
        return None
    rows, held = hold_fixed(rows, free=("pooling", "lambda"))
    if rows["lambda"].nunique() < 2:
        return None
    grouped = rows.groupby(["pooling", "lambda"], observed=True)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["learned σ", "learned μ"])
    for index, pooling in enumerate(sorted(rows["pooling"].dropna().unique())):
        for col, name in enumerate(("fsl_sigma", "fsl_mu"), start=1):
            mean = grouped[name].mean().loc[pooling]
            std = grouped[name].std(ddof=1).loc[pooling]
            fig.add_trace(go.Scatter(
                x=mean.index.to_numpy(dtype=float), y=mean.to_numpy(), name=str(pooling).upper(), legendgroup=pooling,
                showlegend=col == 1, mode="lines+markers", line=dict(color=PALETTE[index % len(PALETTE)]),
                error_y=dict(type="data", array=std.fillna(0).to_numpy(), visible=bool(std.notna().any())),
            ), row=1, col=col)
            fig.update_xaxes(title_text="λ", row=1, col=col)
            fig.update_yaxes(title_text="σ" if col == 1 else "μ", row=1, col=col)
    fig.update_layout(title="Learned FSL σ and μ after stage 1 vs λ" + _held_note(held), height=420, **LAYOUT)
    return fig


def per_class_heatmap(frame: pd.DataFrame, stage: str = FINAL_STAGE, split: str = "val", top: int = 12) -> go.Figure | None:
    """Per-class IoU and contour F (%) of the `top` config groups by mIoU (mean over seeds)."""
    rows = scored(frame, stage, split)
    groups = _per_class_groups(rows[rows["per_class_iou"].notna()], ("per_class_iou", "per_class_f"), top)
    if not groups:
        return None
    labels, classes = [g[1] for g in groups], groups[0][3]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=["per-class IoU (%)", "per-class contour F (%)"])
    for col in (1, 2):
        fig.add_trace(go.Heatmap(z=np.stack([g[2][col - 1] for g in groups]) * 100.0, x=classes, y=labels,
                                 coloraxis="coloraxis", hovertemplate="%{y}<br>%{x}: %{z:.1f}%"), row=1, col=col)
    fig.update_layout(title=f"Per-class scores, {STAGE_LABELS[stage]} ({split}), top {len(groups)} configs",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=100), height=220 + 28 * len(groups), **LAYOUT)
    fig.update_layout(margin=dict(l=260))
    return fig


def pointing_heatmap(frame: pd.DataFrame, split: str = "val", top: int = 12) -> go.Figure | None:
    """The CAM stage's pointing game (%) per foreground class: the share of `split` images with the
    class whose CAM peaks on that class's object, for the `top` config groups by CAM mIoU (mean
    over seeds). A class near 0% is one the CAM network never localised (e.g. GMP's maximum stuck
    on the image border)."""
    rows = scored(frame, STAGES[0], split)
    groups = _per_class_groups(rows[rows["per_class_pointing"].notna()], ("per_class_pointing",), top)
    if not groups:
        return None
    classes = groups[0][3]
    foreground = [k for k in range(len(classes)) if any(np.isfinite(g[2][0][k]) for g in groups)]
    fig = go.Figure(go.Heatmap(
        z=np.stack([g[2][0][foreground] for g in groups]) * 100.0, x=[classes[k] for k in foreground],
        y=[g[1] for g in groups], zmin=0, zmax=100, colorscale="Viridis", colorbar=dict(title="%"),
        hovertemplate="%{y}<br>%{x}: CAM peak on the object in %{z:.0f}% of images"))
    fig.update_layout(title=f"CAM pointing game ({split}): images whose CAM peaks on the object, top {len(groups)} configs",
                      height=220 + 28 * len(groups), **LAYOUT)
    fig.update_layout(margin=dict(l=260))
    return fig


def _per_class_groups(rows: pd.DataFrame, columns: tuple[str, ...], top: int
                      ) -> list[tuple[float, str, list[np.ndarray], list[str]]]:
    """(mean mIoU, label, [per-class means of each column], class names) of the `top` config
    groups by mIoU, best last (at the top of a heatmap)."""
    if rows.empty:
        return []
    keys = varying(rows)
    groups = []
    for _, part in (rows.groupby(keys, dropna=False, observed=True) if keys else [((), rows)]):
        groups.append((part["miou"].mean(), describe(part.iloc[0], keys), [mean_lists(part[c]) for c in columns],
                       list(part.iloc[0]["class_names"])))
    return sorted(groups, key=lambda g: -g[0])[:top][::-1]


def trial_timeline(frame: pd.DataFrame) -> go.Figure | None:
    """Which trial ran which stage when: one bar per trial x stage that ran, coloured by node."""
    rows = frame[frame["started_at"].notna() & frame["finished_at"].notna()]
    rows = rows.drop_duplicates(["trial_id", "stage"]).sort_values("started_at")
    if rows.empty:
        return None
    fig = go.Figure()
    for index, (node, part) in enumerate(rows.groupby(rows["node"].fillna("unknown"), sort=True)):
        duration_ms = (part["finished_at"] - part["started_at"]).dt.total_seconds().to_numpy() * 1000.0
        fig.add_trace(go.Bar(
            y=part["trial_id"], x=duration_ms, base=part["started_at"].dt.tz_convert(None).astype(str).tolist(), orientation="h",
            name=str(node), marker=dict(color=PALETTE[index % len(PALETTE)], line=dict(color="white", width=1)),
            text=part["stage"].astype(str), textposition="inside", insidetextanchor="middle",
            customdata=np.stack([part["stage"].astype(str), part["status"]], axis=1),
            hovertemplate="%{y}<br>%{customdata[0]} (%{customdata[1]})<br>%{base} + %{x:.0f} ms",
        ))
    fig.update_xaxes(type="date", title_text="time (UTC)")
    fig.update_yaxes(title_text="trial", categoryorder="category descending", type="category")
    fig.update_layout(title="Trial timeline by node", barmode="overlay", height=min(200 + 14 * rows["trial_id"].nunique(), 1600), **LAYOUT)
    return fig


def parallel_coordinates(frame: pd.DataFrame, params: pd.DataFrame, stage: str, split: str = "val") -> go.Figure | None:
    """Config vs metrics, one line per trial at `stage`, coloured by mIoU.

    `params`: one row per trial_id, one column per searched parameter (see
    `analysis.importance.trial_parameters`).
    """
    rows = scored(frame, stage, split).drop_duplicates("trial_id").set_index("trial_id")
    if len(rows) < 2 or params.empty:
        return None
    table = params.join(rows[list(METRICS)], how="inner")
    dimensions = []
    for name in params.columns:
        values = table[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            dimensions.append(dict(label=name, values=values.to_numpy(dtype=float)))
        else:
            labels = sorted(values.astype(str).unique())
            codes = values.astype(str).map({label: code for code, label in enumerate(labels)})
            dimensions.append(dict(label=name, values=codes.to_numpy(), tickvals=list(range(len(labels))), ticktext=labels))
    for metric, label in METRICS.items():
        dimensions.append(dict(label=label, values=table[metric].to_numpy() * 100.0))
    fig = go.Figure(go.Parcoords(line=dict(color=table["miou"].to_numpy() * 100.0, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="mIoU %")), dimensions=dimensions))
    fig.update_layout(title=f"Config vs metrics, {STAGE_LABELS[stage]} ({split}), {len(table)} trials", height=480, **LAYOUT)
    return fig


def importance_bars(importances: Mapping[str, float], stage: str, metric: str = "miou",
                    method: str = "fANOVA") -> go.Figure | None:
    """Horizontal bars of parameter importances (by `method`), most important on top."""
    if not importances:
        return None
    names = list(importances)[::-1]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h", marker_color=PALETTE[2]))
    fig.update_layout(title=f"Parameter importance ({method}) for {METRICS[metric]}, {STAGE_LABELS[stage]}",
                      xaxis_title="importance", height=180 + 40 * len(names), **LAYOUT)
    return fig
