"""The paper's tables (1, 2, 5, 6) and study summaries, rendered as HTML, Markdown and LaTeX.

Metric cells are percentages, 'mean ± std' over seeds when seeds repeat
(sample std, ddof 1), else the single value, one decimal as in the paper.
Every builder returns a `Table`, or None when the study has no data for it.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import pandas as pd

from analysis.frames import (
    FINAL_STAGE, GROUP_COLUMNS, METRICS, TABLE_STAGE_LABELS, describe, hold_fixed, method_label, python_scalar,
    reference_stage, scored, seed_stats, trial_status, varying,
)
from study.schema import STAGES
from wsss_core.stages import SHORT_STAGE_LABELS

METRIC_HEADERS: dict[str, str] = {"miou": "Area mIoU", "contour_f": "Contour F-score"}


@dataclass(frozen=True)
class Table:
    """A titled table: `means` holds numbers (or text), `stds` the std over seeds (same shape, NaN if none).

    Columns are flat or a two-level MultiIndex (header group, sub-header), as in the paper.
    """

    title: str
    means: pd.DataFrame
    stds: pd.DataFrame | None = None
    caption: str = ""

    def cells(self) -> pd.DataFrame:
        """The table as display strings."""
        out = self.means.astype(object).copy()
        for column in self.means.columns:
            for row in self.means.index:
                std = None if self.stds is None else self.stds.at[row, column]
                out.at[row, column] = _format(self.means.at[row, column], std)
        return out

    def to_html(self) -> str:
        cells, esc = self.cells(), html.escape
        head = ""
        if isinstance(cells.columns, pd.MultiIndex):
            groups = _runs(cells.columns.get_level_values(0))
            head += f"<tr><th rowspan=2>{esc(str(cells.index.name or ''))}</th>" + "".join(
                f"<th colspan={span}>{esc(str(name))}</th>" for name, span in groups) + "</tr>"
            head += "<tr>" + "".join(f"<th>{esc(str(sub))}</th>" for sub in cells.columns.get_level_values(1)) + "</tr>"
        else:
            head += f"<tr><th>{esc(str(cells.index.name or ''))}</th>" + "".join(
                f"<th>{esc(str(c))}</th>" for c in cells.columns) + "</tr>"
        body = "".join(f"<tr><th>{esc(str(index))}</th>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
                       for index, row in zip(cells.index, cells.to_numpy()))
        caption = f"<caption>{esc(self.title)}{(' ' + esc(self.caption)) if self.caption else ''}</caption>"
        return f"<table class='wsss-table'>{caption}<thead>{head}</thead><tbody>{body}</tbody></table>"

    def to_markdown(self) -> str:
        cells = self.cells()
        headers = [str(cells.index.name or "")] + [_flat(c) for c in cells.columns]
        lines = [f"**{self.title}**" + (f" {self.caption}" if self.caption else ""), "",
                 "| " + " | ".join(_md(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
        lines += ["| " + " | ".join(_md(str(v)) for v in (index, *row)) + " |" for index, row in zip(cells.index, cells.to_numpy())]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        cells = self.cells()
        spec = "l" + "c" * len(cells.columns)
        lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex(self.title)}{(' ' + _tex(self.caption)) if self.caption else ''}}}",
                 f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        if isinstance(cells.columns, pd.MultiIndex):
            groups = _runs(cells.columns.get_level_values(0))
            lines.append(" & ".join([_tex(str(cells.index.name or ""))] + [
                f"\\multicolumn{{{span}}}{{c}}{{{_tex(str(name))}}}" for name, span in groups]) + " \\\\")
            start, rules = 2, []
            for _name, span in groups:
                rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
                start += span
            lines.append(" ".join(rules))
            lines.append(" & ".join([""] + [_tex(str(s)) for s in cells.columns.get_level_values(1)]) + " \\\\")
        else:
            lines.append(" & ".join([_tex(str(cells.index.name or ""))] + [_tex(str(c)) for c in cells.columns]) + " \\\\")
        lines.append("\\midrule")
        lines += [" & ".join(_tex(str(v)) for v in (index, *row)) + " \\\\" for index, row in zip(cells.index, cells.to_numpy())]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def sampled_pixels_table(frame: pd.DataFrame, split: str = "val") -> Table | None:
    """Table 6: metrics vs the number of sampled pixels per class (CAM and DeepLab-v1 stages)."""
    stages = [s for s in ("cam", FINAL_STAGE) if not scored(frame, s, split).empty]
    rows = scored(frame, split=split)
    rows = rows[rows["stage"].isin(stages)]
    if rows.empty:
        return None
    rows, held = hold_fixed(rows, free=("num_samples",))
    if rows["num_samples"].nunique() < 2:
        return None
    stats = seed_stats(rows, by=("num_samples", "stage"))
    return _metric_by_stage_table(stats, "num_samples", "#pixels", stages,
                                  "Table 6. Metrics vs the number of sampled pixels", held, split)


def coco_lambda_table(frame: pd.DataFrame, split: str = "val") -> Table | None:
    """Table 1: final-stage metrics vs lambda on COCO, one column per dataset (e.g. 2014 and 2017)."""
    rows = scored(frame, FINAL_STAGE, split)
    rows = rows[rows["dataset"].fillna("").str.contains("coco", case=False)]
    if rows.empty:
        return None
    rows, held = hold_fixed(rows, free=("lambda", "dataset"))
    stats = seed_stats(rows, by=("lambda", "dataset"))
    datasets = sorted(rows["dataset"].unique())
    columns = pd.MultiIndex.from_tuples([(METRIC_HEADERS[m], _dataset_label(d)) for m in METRICS for d in datasets])
    lambdas = sorted(rows["lambda"].unique())
    means = pd.DataFrame(index=pd.Index([f"{lam:g}" for lam in lambdas], name="λ"), columns=columns, dtype=float)
    stds = means.copy()
    for lam in lambdas:
        for metric in METRICS:
            for dataset in datasets:
                if (lam, dataset) in stats.index:
                    means.at[f"{lam:g}", (METRIC_HEADERS[metric], _dataset_label(dataset))] = stats.at[(lam, dataset), f"{metric}_mean"]
                    stds.at[f"{lam:g}", (METRIC_HEADERS[metric], _dataset_label(dataset))] = stats.at[(lam, dataset), f"{metric}_std"]
    return Table(f"Table 1. Final predictions on COCO vs λ ({split})", means, stds, _held_caption(held))


def baseline_table(frame: pd.DataFrame, split: str = "val") -> Table | None:
    """Table 2: baseline (lambda 0, no FSL) vs ours (the best config with lambda > 0) at every stage.

    'Ours' is the config group with the highest mean final-stage mIoU among
    non-naive groups with lambda > 0; the baseline shares its pooling, CAM mode,
    backbone and dataset.
    """
    final = scored(frame, FINAL_STAGE, split)
    candidates = final[(final["lambda"] > 0) & ~final["naive"].astype(bool)]
    if candidates.empty:
        return None
    group_means = candidates.groupby(list(GROUP_COLUMNS), dropna=False, observed=True)["miou"].mean()
    ours_key = dict(zip(GROUP_COLUMNS, group_means.idxmax()))
    same = {k: ours_key[k] for k in ("pooling", "cam_mode", "backbone", "dataset")}
    baseline = _rows_matching(scored(frame, split=split), {**same, "lambda": 0.0, "fsl": False, "naive": False})
    if baseline.empty:
        return None
    baseline = baseline[baseline["num_samples"] == baseline["num_samples"].mode().iloc[0]]
    ours = _rows_matching(scored(frame, split=split), ours_key)
    methods = {method_label(baseline.iloc[0]): baseline, method_label(ours.iloc[0]): ours}
    stages = [s for s in STAGES if all((rows["stage"] == s).any() for rows in methods.values())]
    columns = pd.MultiIndex.from_tuples([(METRIC_HEADERS[m], name) for m in METRICS for name in methods])
    means = pd.DataFrame(index=pd.Index([TABLE_STAGE_LABELS[s] for s in stages], name="Stage"), columns=columns, dtype=float)
    stds = means.copy()
    for name, rows in methods.items():
        stats = seed_stats(rows, by=("stage",))
        for stage in stages:
            for metric in METRICS:
                means.at[TABLE_STAGE_LABELS[stage], (METRIC_HEADERS[metric], name)] = stats.at[stage, f"{metric}_mean"]
                stds.at[TABLE_STAGE_LABELS[stage], (METRIC_HEADERS[metric], name)] = stats.at[stage, f"{metric}_std"]
    return Table(f"Table 2. Baseline vs ours by stage ({split})", means, stds,
                 _held_caption({k: v for k, v in same.items() if frame[k].nunique() > 1}))


def naive_table(frame: pd.DataFrame, split: str = "val") -> Table | None:
    """Table 5: the naive (un-normalised CAM) variants vs the baseline and ours, final stage."""
    rows = scored(frame, FINAL_STAGE, split)
    if not rows["naive"].astype(bool).any():
        return None
    rows, held = hold_fixed(rows, free=("naive", "lambda", "fsl"))
    naive = rows[rows["naive"].astype(bool)]
    proper = rows[~rows["naive"].astype(bool)]
    parts = [proper[(proper["lambda"] == 0) & ~proper["fsl"].astype(bool)]]
    parts += [part for _, part in naive.groupby(["fsl", "lambda"], sort=True)]
    ours = proper[(proper["lambda"] > 0) & proper["fsl"].astype(bool)]
    if not ours.empty:
        best_lambda = ours.groupby("lambda")["miou"].mean().idxmax()
        parts.append(ours[ours["lambda"] == best_lambda])
    parts = [part for part in parts if not part.empty]
    labels = [method_label(part.iloc[0]) for part in parts]
    stats = [seed_stats(part, by=("stage",)).iloc[0] for part in parts]
    means = pd.DataFrame([[s[f"{m}_mean"] for m in METRICS] for s in stats],
                         index=pd.Index(labels, name="Method"), columns=list(METRIC_HEADERS.values()))
    stds = pd.DataFrame([[s[f"{m}_std"] for m in METRICS] for s in stats], index=means.index, columns=means.columns)
    return Table(f"Table 5. Naive normalisation ablation, final predictions ({split})", means, stds, _held_caption(held))


def best_trials_table(frame: pd.DataFrame, split: str = "val", top: int = 10) -> Table | None:
    """The `top` trials by mIoU at the deepest scored stage, with their varying config and every stage's metrics."""
    stage = reference_stage(frame, split)
    if stage is None:
        return None
    rows = scored(frame, split=split)
    keys = varying(rows.drop_duplicates("trial_id"), (*GROUP_COLUMNS, "seed"))
    ranking = rows[rows["stage"] == stage].sort_values("miou", ascending=False).head(top)
    stages = [s for s in STAGES if (rows["stage"] == s).any()]
    records = []
    for _, best in ranking.iterrows():
        record: dict[tuple[str, str], object] = {("config", k): _config_text(best[k]) for k in keys}
        trial_rows = rows[rows["trial_id"] == best["trial_id"]].set_index("stage")
        for metric in METRICS:
            for s in stages:
                record[(METRIC_HEADERS[metric], SHORT_STAGE_LABELS[s])] = trial_rows.at[s, metric] * 100.0 if s in trial_rows.index else np.nan
        records.append(record)
    means = pd.DataFrame(records, index=pd.Index(ranking["trial_id"].tolist(), name="trial"))
    means.columns = pd.MultiIndex.from_tuples(means.columns)
    return Table(f"Best {len(means)} trials by {METRIC_HEADERS['miou']} at stage {stage} ({split})", means)


def status_table(frame: pd.DataFrame) -> Table:
    """Number of trials per status, and per stage how many trials reached it."""
    status = trial_status(frame).value_counts()
    reached = frame.groupby("stage", observed=True)["trial_id"].nunique()
    means = pd.DataFrame({"trials": [int(status.sum())] + [int(status.get(s, 0)) for s in ("completed", "stopped", "failed")]
                          + [int(reached.get(s, 0)) for s in STAGES]},
                         index=pd.Index(["all", "completed", "stopped", "failed"] + [f"reached {s}" for s in STAGES], name=""))
    return Table("Trials", means)


def failures_table(frame: pd.DataFrame) -> Table | None:
    """The failed trials with their stage and error message."""
    failed = frame[frame["status"] == "failed"].drop_duplicates("trial_id")
    if failed.empty:
        return None
    means = pd.DataFrame({"stage": failed["stage"].astype(str).tolist(), "node": failed["node"].fillna("").tolist(),
                          "error": failed["error"].fillna("").tolist()}, index=pd.Index(failed["trial_id"].tolist(), name="trial"))
    return Table("Failed trials", means)


def best_by_study_table(frames: Mapping[str, pd.DataFrame], split: str = "val") -> Table | None:
    """Side by side: the best config group of each study (by final mIoU) with its metrics at every stage."""
    if len(frames) < 2:
        return None
    stages = list(STAGES)
    records, stds, labels = [], [], []
    for name, frame in frames.items():
        final = scored(frame, FINAL_STAGE, split)
        if final.empty:
            continue
        key = final.groupby(list(GROUP_COLUMNS), dropna=False, observed=True)["miou"].mean().idxmax()
        rows = _rows_matching(scored(frame, split=split), dict(zip(GROUP_COLUMNS, key)))
        stats = seed_stats(rows, by=("stage",))
        labels.append(f"{name}: {describe(rows.iloc[0], varying(pd.concat([f for f in frames.values()])))}")
        records.append({(METRIC_HEADERS[m], SHORT_STAGE_LABELS[s]): stats.at[s, f"{m}_mean"] if s in stats.index else np.nan for m in METRICS for s in stages})
        stds.append({(METRIC_HEADERS[m], SHORT_STAGE_LABELS[s]): stats.at[s, f"{m}_std"] if s in stats.index else np.nan for m in METRICS for s in stages})
    if len(records) < 2:
        return None
    index = pd.Index(labels, name="Study: best config")
    means, std = pd.DataFrame(records, index=index), pd.DataFrame(stds, index=index)
    means.columns = std.columns = pd.MultiIndex.from_tuples(means.columns)
    return Table(f"Best config of each study ({split})", means, std)


def _metric_by_stage_table(stats: pd.DataFrame, key: str, key_label: str, stages: list[str], title: str,
                           held: Mapping[str, object], split: str) -> Table:
    values = sorted(stats.index.get_level_values(key).unique())
    columns = pd.MultiIndex.from_tuples([(METRIC_HEADERS[m], SHORT_STAGE_LABELS[s]) for m in METRICS for s in stages])
    means = pd.DataFrame(index=pd.Index([python_scalar(v) for v in values], name=key_label), columns=columns, dtype=float)
    stds = means.copy()
    for value in values:
        for metric in METRICS:
            for stage in stages:
                if (value, stage) in stats.index:
                    means.at[python_scalar(value), (METRIC_HEADERS[metric], SHORT_STAGE_LABELS[stage])] = stats.at[(value, stage), f"{metric}_mean"]
                    stds.at[python_scalar(value), (METRIC_HEADERS[metric], SHORT_STAGE_LABELS[stage])] = stats.at[(value, stage), f"{metric}_std"]
    return Table(f"{title} ({split})", means, stds, _held_caption(held))


def _rows_matching(frame: pd.DataFrame, values: Mapping[str, object]) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    for name, value in values.items():
        keep &= frame[name].isna() if pd.isna(value) else frame[name] == value
    return frame[keep]


def _held_caption(held: Mapping[str, object]) -> str:
    return f"Held fixed: {describe(pd.Series(held, dtype=object), list(held))}." if held else ""


def _dataset_label(name: str) -> str:
    year = re.search(r"(19|20)\d\d", name)
    return year.group(0) if year else name


def _format(value: object, std: object) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        if std is not None and isinstance(std, (float, np.floating)) and not np.isnan(std):
            return f"{value:.1f} ± {std:.1f}"
        return f"{value:.1f}"
    return str(value)


def _config_text(value: object) -> str:
    value = python_scalar(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _runs(values: pd.Index) -> list[tuple[object, int]]:
    """Consecutive runs of equal header values as (value, length)."""
    return [(value, len(list(run))) for value, run in groupby(values)]


def _flat(column: object) -> str:
    return " ".join(str(c) for c in column) if isinstance(column, tuple) else str(column)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\^{}", "λ": r"$\lambda$", "±": r"$\pm$", "σ": r"$\sigma$", "μ": r"$\mu$",
        "·": r"$\cdot$", "–": "--"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)
