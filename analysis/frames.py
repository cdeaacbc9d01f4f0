"""Selecting and summarising result rows: the slices every figure and table is built from.

A *config group* is the set of trials that share every config value but the
seed; figures and tables show the mean over its seeds and, when seeds repeat,
the sample standard deviation (ddof = 1).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.schema import CONFIG_COLUMNS, STAGES
from wsss_core.stages import FINAL_STAGE, STAGE_LABELS, TABLE_STAGE_LABELS  # noqa: F401  (re-exported)

GROUP_COLUMNS: tuple[str, ...] = tuple(name for name in CONFIG_COLUMNS if name != "seed")
"""Config columns that define a config group (everything but the seed)."""

METRICS: dict[str, str] = {"miou": "Area mIoU (%)", "contour_f": "Contour F-score (%)"}
"""Scalar metrics and their axis titles; stored as fractions, shown in percent."""



def scored(frame: pd.DataFrame, stage: str | None = None, split: str | None = "val") -> pd.DataFrame:
    """Rows that carry metrics (not failed), optionally of one stage and split."""
    keep = frame["miou"].notna() & (frame["status"] != "failed")
    if stage is not None:
        keep &= frame["stage"] == stage
    if split is not None:
        keep &= frame["split"] == split
    return frame[keep]


def varying(frame: pd.DataFrame, columns: Sequence[str] = GROUP_COLUMNS) -> list[str]:
    """Columns of `columns` that take more than one value in `frame`."""
    return [name for name in columns if frame[name].nunique(dropna=False) > 1]


def hold_fixed(frame: pd.DataFrame, free: Sequence[str]) -> tuple[pd.DataFrame, dict[str, object]]:
    """Restrict `frame` to one value of every group column not in `free`.

    For each such column (in schema order) the value kept is the one under which
    the free columns take the most distinct combinations (ties: more rows, then
    the smaller value), i.e. the slice where the figure's axes are most complete.
    Returns the slice and the values held fixed (only those that varied).
    """
    held: dict[str, object] = {}
    for name in GROUP_COLUMNS:
        if name in free or frame[name].nunique(dropna=False) < 2:
            continue
        scores = []
        for value, part in frame.groupby(name, dropna=False, observed=True):
            combos = len(part[list(free)].drop_duplicates())
            scores.append((-combos, -len(part), _sort_key(value), value))
        best = min(scores, key=lambda s: s[:3])[3]
        frame = frame[frame[name].isna()] if _missing(best) else frame[frame[name] == best]
        held[name] = best
    return frame, held


def seed_stats(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for one seed) and count per group, metrics in percent.

    Returns a frame indexed by `by` with columns `<metric>_mean`, `<metric>_std`, `n`.
    """
    grouped = frame.groupby(list(by), dropna=False, observed=True, sort=True)
    out = {}
    for metric in metrics:
        values = grouped[metric]
        out[f"{metric}_mean"] = values.mean() * 100.0
        out[f"{metric}_std"] = values.std(ddof=1) * 100.0
    out["n"] = grouped.size()
    return pd.DataFrame(out)


def mean_lists(lists: pd.Series) -> np.ndarray:
    """Element-wise mean of equal-length list cells (per-class metrics over seeds), ignoring NaN
    (a class absent from the split); NaN where every cell is NaN."""
    stacked = np.stack([np.asarray(cell, dtype=float) for cell in lists])
    counts = np.isfinite(stacked).sum(axis=0)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def describe(row: pd.Series, columns: Sequence[str]) -> str:
    """A short readable label of a config, e.g. 'λ=0.8 · GAP · FSL'."""
    parts = []
    for name in columns:
        value = row[name]
        if name == "lambda":
            parts.append(f"λ={value:.3g}")
        elif name == "pooling":
            parts.append(str(value).upper())
        elif name in ("fsl", "naive"):
            parts.append(("" if value else "no ") + ("FSL" if name == "fsl" else "naive"))
        elif isinstance(value, float):
            parts.append(f"{name}={value:.3g}")
        else:
            parts.append(f"{name}={value}")
    return " · ".join(parts) or "all trials"


def method_label(row: pd.Series) -> str:
    """The paper's method names (Tables 2 and 5) for a config group."""
    base = "SEAM" if row["cam_mode"] == "seam" else str(row["pooling"]).upper()
    lam = float(row["lambda"])
    if lam > 0 and row["fsl"] and not row["naive"]:
        return f"Ours (λ={lam:g})"
    parts = [base]
    if lam > 0:
        parts.append(f"importance sampling (λ={lam:g})")
    if row["fsl"]:
        parts.append("feature similarity loss")
    return " + ".join(parts) + (" (naive)" if row["naive"] else "")


def reference_stage(frame: pd.DataFrame, split: str = "val") -> str | None:
    """The deepest stage with scored rows, or None when nothing is scored."""
    present = set(scored(frame, split=split)["stage"].astype(str))
    deepest = [stage for stage in STAGES if stage in present]
    return deepest[-1] if deepest else None


def trial_status(frame: pd.DataFrame) -> pd.Series:
    """Status of each trial: 'failed' if any row failed, else the status of its last stage."""
    ordered = frame.sort_values(["trial_id", "stage_index"])
    last = ordered.groupby("trial_id")["status"].last()
    failed = frame.groupby("trial_id")["status"].apply(lambda s: (s == "failed").any())
    return last.where(~failed, "failed")


def python_scalar(value: object) -> object:
    """A numpy scalar as the Python scalar it holds (as Optuna and string formatting expect); other values as they are."""
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _sort_key(value: object) -> tuple[int, object]:
    return (1, "") if _missing(value) else (0, value if isinstance(value, (int, float, bool, np.number)) else str(value))
