"""The paper's findings, checked on one study: measured difference, spread over seeds, verdict.

Every check reads the val rows of `analysis.store.load_results` and returns
`Finding`s. Differences are in percentage points. An effect is *supported*
when its mean is positive and, where seeds repeat, larger than its standard
deviation over seeds (ddof 1); a study without the data for a check gets *not
testable here* with the reason. A stage whose predictions collapse to one
class is a finding of its own, so a collapse can never pass unnoticed, as is
a foreground class that a trial never predicts, and the best trial must
segment every foreground class.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.frames import GROUP_COLUMNS, describe, hold_fixed, scored
from study.schema import STAGES
from wsss_core.metrics import PREDICTED_IOU

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
NOT_TESTABLE = "not testable here"

REPRODUCE_RATIO = 0.8
"""DeepLab reproduces its teacher when its val mIoU is at least this fraction of the AffinityNet labels'."""
CLASS_IOU = 0.1
"""The best trial segments every foreground class when each reaches this val IoU."""
TREND_T = 2.0
"""|t| of the fitted num_samples trend at or above which the trend counts as significant (~95%)."""
FSL_SETTINGS = ("fsl_weight", "fsl_sigma_init", "fsl_mu_init")
STAGE_NAMES: dict[str, str] = {"cam": "CAM", "affinity": "AffinityNet", "segmentation": "DeepLab"}
POOLING_ORDER = ("gmp", "gap")


@dataclass(frozen=True)
class Finding:
    """One checked claim. `warning` (a collapse) is shown as a warning line above the report's table."""

    claim: str
    difference: str
    spread: str
    verdict: str
    note: str = ""
    warning: str = ""

    def line(self) -> str:
        """'claim: difference (spread) -> verdict', with the note after a semicolon."""
        return f"{self.claim}: {self.difference} ({self.spread}) -> {self.verdict}" + (f"; {self.note}" if self.note else "")


def check_findings(frame: pd.DataFrame) -> list[Finding]:
    """Every check, in reading order: importance sampling, FSL, stage gains, number of samples, collapse,
    missing classes, best trial."""
    return [*importance_sampling(frame), *fsl_contours(frame), *stage_gains(frame), num_samples_effect(frame),
            *collapse_checks(frame), missing_classes(frame), best_trial(frame)]


def findings_lines(frame: pd.DataFrame) -> list[str]:
    """One printable line per finding."""
    return [finding.line() for finding in check_findings(frame)]


def importance_sampling(frame: pd.DataFrame) -> list[Finding]:
    """CAM val mIoU at λ=1 minus λ=0, one finding per pooling (paper Figs. 2, 3)."""
    rows = _paper_method_rows(scored(frame, "cam"))
    if rows.empty:
        return [_untestable("importance sampling raises CAM mIoU (λ=1 − λ=0)", "no scored CAM rows")]
    poolings = [p for p in POOLING_ORDER if p in set(rows["pooling"])]
    poolings += sorted(set(rows["pooling"].dropna()) - set(poolings))
    found = []
    for pooling in poolings:
        part = rows[rows["pooling"] == pooling]
        claim = f"importance sampling beats {str(pooling).upper()} at the CAM stage (mIoU, λ=1 − λ=0)"
        lambdas = sorted(part["lambda"].dropna().unique())
        missing = [f"λ={value:g}" for value in (0.0, 1.0) if value not in lambdas]
        if missing:
            values = ", ".join(f"{value:g}" for value in lambdas[:6]) + (", ..." if len(lambdas) > 6 else "")
            reason = f"λ has one value ({values})" if len(lambdas) == 1 else f"no {' or '.join(missing)} trials (λ in {values})"
            found.append(_untestable(claim, reason))
            continue
        found.append(_effect(claim, paired_difference(part, "lambda", 1.0, 0.0, "miou"),
                             "no λ=0 and λ=1 trials share their other settings and seed",
                             note=_best_mixed_lambda(part)))
    return found


def _best_mixed_lambda(rows: pd.DataFrame) -> str:
    """'best mixed λ=0.5: +6.9 points over λ=0' for the 0 < λ < 1 (GMP/GAP and sampling
    mixed, Eq. 8) with the largest mean paired gain over λ=0; '' when no such λ was run."""
    gains = {value: paired_difference(rows, "lambda", value, 0.0, "miou").mean()
             for value in sorted(rows["lambda"].dropna().unique()) if 0 < value < 1}
    gains = {value: gain for value, gain in gains.items() if pd.notna(gain)}
    if not gains:
        return ""
    best = max(gains, key=gains.__getitem__)
    return f"best mixed λ={best:g}: {100 * gains[best]:+.1f} points over λ=0"


FSL_FIGURES = {"cam": "Figs. 5, 7", "segmentation": "Figs. 2, 3, 6, 8"}
"""Where the paper shows FSL's contour gain per stage: CAM pseudo-labels in the appendix, the final
DeepLab-v1 predictions in the main text ("we compute these metrics ... for the predictions of our
trained DeepLab-v1 model")."""


def fsl_contours(frame: pd.DataFrame) -> list[Finding]:
    """Val contour F with FSL minus without, matched on every other setting, at the CAM stage and at
    DeepLab (FSL_FIGURES); one finding per stage."""
    found = []
    for stage, figures in FSL_FIGURES.items():
        claim = f"FSL raises {STAGE_NAMES[stage]} contour F (FSL on − off, paper {figures})"
        rows = _paper_method_rows(scored(frame, stage))
        settings = set(rows["fsl"].fillna(False).astype(bool))
        if settings != {False, True}:
            reason = f"no scored {STAGE_NAMES[stage]} rows" if rows.empty else f"FSL is always {'on' if True in settings else 'off'}"
            found.append(_untestable(claim, reason))
            continue
        rows = rows.assign(fsl=rows["fsl"].fillna(False).astype(bool))
        found.append(_effect(claim, paired_difference(rows, "fsl", True, False, "contour_f", ignore=FSL_SETTINGS),
                             "no trials with and without FSL share their other settings and seed",
                             note=_per_lambda_fsl(rows)))
    return found


def _per_lambda_fsl(rows: pd.DataFrame) -> str:
    """'per λ: 0 -6.5, 0.5 +0.7, 1 +0.8': the paired FSL contour-F difference (points, mean over seeds)
    at each λ; '' when λ has one value."""
    lambdas = sorted(rows["lambda"].dropna().unique())
    if len(lambdas) < 2:
        return ""
    cells = []
    for value in lambdas:
        gain = paired_difference(rows[rows["lambda"] == value], "fsl", True, False, "contour_f", ignore=FSL_SETTINGS)
        if not gain.dropna().empty:
            cells.append(f"{value:g} {100 * gain.mean():+.1f}")
    return f"per λ: {', '.join(cells)}" if cells else ""


def stage_gains(frame: pd.DataFrame) -> list[Finding]:
    """Per trial: AffinityNet val mIoU minus CAM's, and DeepLab's minus AffinityNet's (paper Table 2).

    DeepLab is supported when every trial reaches at least `REPRODUCE_RATIO` x its AffinityNet labels.
    """
    rows = scored(frame)
    wide = rows.pivot_table(index="trial_id", columns="stage", values="miou", observed=True, aggfunc="mean")
    seeds = rows.drop_duplicates("trial_id").set_index("trial_id")["seed"]
    found = []
    affinity_claim = "AffinityNet improves on the CAM labels (mIoU, AffinityNet − CAM)"
    pairs = _stage_pair(wide, "cam", "affinity")
    if pairs is None:
        found.append(_untestable(affinity_claim, "no trial has scored CAM and AffinityNet stages"))
    else:
        gain = pairs["affinity"] - pairs["cam"]
        found.append(_effect(affinity_claim, _per_seed(gain, seeds), note=f"{(gain > 0).sum()} of {len(gain)} trials improve"))
    deeplab_claim = f"DeepLab improves on (or reproduces, ≥ {REPRODUCE_RATIO:g}x) the AffinityNet labels (mIoU, DeepLab − AffinityNet)"
    pairs = _stage_pair(wide, "affinity", "segmentation")
    if pairs is None:
        found.append(_untestable(deeplab_claim, "no trial has scored AffinityNet and DeepLab stages"))
        return found
    gain = pairs["segmentation"] - pairs["affinity"]
    short = pairs[pairs["segmentation"] < REPRODUCE_RATIO * pairs["affinity"]]
    note = f"{(gain > 0).sum()} of {len(gain)} trials improve"
    if not short.empty:
        worst = (short["segmentation"] / short["affinity"]).idxmin()
        note += (f"; {len(short)} of {len(gain)} below {REPRODUCE_RATIO:g}x (worst {worst}: "
                 f"{100 * short.at[worst, 'segmentation']:.1f} vs {100 * short.at[worst, 'affinity']:.1f})")
    effect = _effect(deeplab_claim, _per_seed(gain, seeds))
    found.append(Finding(deeplab_claim, effect.difference, effect.spread, NOT_SUPPORTED if len(short) else SUPPORTED, note))
    return found


def num_samples_effect(frame: pd.DataFrame) -> Finding:
    """No significant trend of val mIoU with the number of sampled pixels (paper Table 6).

    At the deepest stage where num_samples varies, other settings held fixed:
    least-squares fit of mIoU on log10(num_samples); the difference is the
    fitted change across the range, significant when |t| >= `TREND_T`.
    """
    rows = _paper_method_rows(scored(frame))
    varied = [s for s in STAGES if rows.loc[rows["stage"] == s, "num_samples"].nunique() > 1]
    if not varied:
        values = ", ".join(str(v) for v in sorted(rows["num_samples"].dropna().unique()))
        return _untestable("the number of sampled pixels has no significant effect (mIoU)",
                           f"num_samples has one value ({values})" if values else "no scored rows")
    stage = varied[-1]
    claim = f"the number of sampled pixels has no significant effect ({STAGE_NAMES[stage]} mIoU)"
    part, held = hold_fixed(rows[rows["stage"] == stage], free=("num_samples",))
    if part["num_samples"].nunique() < 2 or len(part) < 3:
        return _untestable(claim, "fewer than three trials over two num_samples values once other settings are held fixed")
    x = np.log10(part["num_samples"].to_numpy(dtype=float))
    y = part["miou"].to_numpy(dtype=float) * 100.0
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    se = np.sqrt((residual @ residual) / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    t = slope / se if se > 0 else (0.0 if slope == 0 else np.inf)
    low, high = int(part["num_samples"].min()), int(part["num_samples"].max())
    stds = part.groupby("num_samples")["miou"].std(ddof=1).dropna() * 100.0
    spread = f"± {np.sqrt((stds ** 2).mean()):.1f} over seeds" if len(stds) else "one seed, no spread"
    note = f"fitted trend over log10(num_samples), t = {t:.2f}"
    if held:
        note += f"; held fixed: {describe(pd.Series(held, dtype=object), list(held))}"
    verdict = SUPPORTED if abs(t) < TREND_T else NOT_SUPPORTED
    return Finding(claim, f"{slope * (np.log10(high) - np.log10(low)):+.1f} points from {low} to {high} pixels", spread, verdict, note)


def collapse_checks(frame: pd.DataFrame) -> list[Finding]:
    """One finding per scored stage: its val predictions span more than one class in every trial.

    A trial has collapsed when at most one class reaches `PREDICTED_IOU` (e.g.
    only background, or one foreground class painted everywhere).
    """
    rows = scored(frame)
    rows = rows[rows["per_class_iou"].notna()]
    found = []
    for stage in STAGES:
        part = rows[rows["stage"] == stage].drop_duplicates("trial_id")
        if part.empty:
            continue
        collapsed = []
        for trial_id, ious, names in zip(part["trial_id"], part["per_class_iou"], part["class_names"]):
            predicted = np.flatnonzero(predicted_classes(ious))
            if len(predicted) <= 1:
                only = "no class" if len(predicted) == 0 else f"only {_class_name(names, int(predicted[0]))}"
                collapsed.append(f"{trial_id} ({only})")
        listed = ", ".join(collapsed[:4]) + (f" and {len(collapsed) - 4} more" if len(collapsed) > 4 else "")
        count = f"{len(collapsed)} of {len(part)} trials"
        found.append(Finding(f"{STAGE_NAMES[stage]} predictions span more than one class (no collapse)",
                             f"{count} collapsed", "per trial", NOT_SUPPORTED if collapsed else SUPPORTED,
                             f"collapsed to one class: {listed}" if collapsed else "",
                             f"{STAGE_NAMES[stage]} predictions collapsed to one class in {count}: {listed}" if collapsed else ""))
    return found


def missing_classes(frame: pd.DataFrame) -> Finding:
    """Every foreground class of the val split is predicted (val IoU >= `PREDICTED_IOU`) by every
    trial at every stage; collapsed trials are left to `collapse_checks`.

    A class can go missing alone: with GMP at λ=0 only each class's most
    activated pixel is trained, and a class whose maximum settles on a cell
    that looks the same in every image (e.g. at the image border) is never
    learned; the maps then cover no object of it.
    """
    claim = f"every foreground class is predicted (val IoU ≥ {100 * PREDICTED_IOU:g}%) in every trial"
    rows = scored(frame)
    rows = rows[rows["per_class_iou"].notna()]
    if rows.empty:
        return _untestable(claim, "no per-class IoU in the results")
    counts, missing = [], []
    for stage in STAGES:
        part = rows[rows["stage"] == stage].drop_duplicates("trial_id")
        if part.empty:
            continue
        trials = 0
        for trial_id, ious, names in zip(part["trial_id"], part["per_class_iou"], part["class_names"]):
            predicted = predicted_classes(ious)
            if predicted.sum() <= 1:
                continue
            in_split = np.isfinite(np.asarray(ious, dtype=float))
            absent = [k for k in range(1, len(predicted)) if in_split[k] and not predicted[k]]
            if absent:
                trials += 1
                missing.append(f"{STAGE_NAMES[stage]} {trial_id} ({', '.join(_class_name(names, k) for k in absent)})")
        counts.append(f"{STAGE_NAMES[stage]} {trials} of {len(part)}")
    listed = "; ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return Finding(claim, "trials missing a class: " + ", ".join(counts), "per trial",
                   NOT_SUPPORTED if missing else SUPPORTED, f"never predicted: {listed}" if missing else "",
                   f"a foreground class is never predicted: {listed}" if missing else "")


def best_trial(frame: pd.DataFrame) -> Finding:
    """The best trial at the deepest scored stage segments every foreground class (val IoU >= `CLASS_IOU`)."""
    rows = scored(frame)
    stage = next((s for s in reversed(STAGES) if (rows["stage"] == s).any()), None)
    if stage is None:
        return _untestable("the best trial segments every foreground class", "no scored rows")
    claim = f"the best trial's {STAGE_NAMES[stage]} segments every foreground class (IoU ≥ {100 * CLASS_IOU:g}%)"
    part = rows[(rows["stage"] == stage) & rows["per_class_iou"].notna()]
    if part.empty:
        return _untestable(claim, "no per-class IoU in the results")
    best = part.loc[part["miou"].idxmax()]
    foreground = np.asarray(best["per_class_iou"], dtype=float)[1:]
    if not np.isfinite(foreground).any():
        return _untestable(claim, f"{best['trial_id']} scores no foreground class")
    worst = int(np.nanargmin(foreground)) + 1
    measured = (f"{100 * best['miou']:.1f}% mIoU, lowest foreground IoU {100 * foreground[worst - 1]:.1f}% "
                f"({_class_name(best['class_names'], worst)})")
    return Finding(claim, measured, f"best of {part['trial_id'].nunique()} trials",
                   SUPPORTED if np.nanmin(foreground) >= CLASS_IOU else NOT_SUPPORTED, f"trial {best['trial_id']}")


def predicted_classes(per_class_iou: Sequence[float]) -> np.ndarray:
    """bool [K]: which classes a trial predicts (val IoU >= `PREDICTED_IOU`; NaN, a class absent
    from the split and never predicted, counts as not predicted)."""
    return np.nan_to_num(np.asarray(per_class_iou, dtype=float)) >= PREDICTED_IOU


def paired_difference(rows: pd.DataFrame, factor: str, high: object, low: object, metric: str,
                      ignore: Sequence[str] = ()) -> pd.Series:
    """metric(factor=high) − metric(factor=low), averaged over matched settings, one value per seed.

    Rows match when they share the seed and every config group column except
    `factor` and `ignore` (rows differing only in an ignored column are averaged).
    """
    keys = [name for name in GROUP_COLUMNS if name != factor and name not in ignore] + ["seed"]
    table = rows.groupby([*keys, factor], dropna=False, observed=True)[metric].mean().unstack(factor)
    if high not in table.columns or low not in table.columns:
        return pd.Series(dtype=float)
    return (table[high] - table[low]).dropna().groupby(level="seed", dropna=False).mean()


def _paper_method_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the paper's method: naive-normalisation runs (Table 5) are a different method."""
    return rows[~rows["naive"].fillna(False).astype(bool)]


def _stage_pair(wide: pd.DataFrame, first: str, second: str) -> pd.DataFrame | None:
    if first not in wide.columns or second not in wide.columns:
        return None
    pairs = wide[[first, second]].dropna()
    return None if pairs.empty else pairs


def _per_seed(per_trial: pd.Series, seeds: pd.Series) -> pd.Series:
    return per_trial.groupby(seeds.reindex(per_trial.index), dropna=False).mean()


def _effect(claim: str, per_seed: pd.Series, empty_reason: str = "", note: str = "") -> Finding:
    """Verdict on per-seed differences (fractions): positive, and above the seed std where seeds repeat."""
    values = per_seed.dropna().to_numpy(dtype=float) * 100.0
    if len(values) == 0:
        return _untestable(claim, empty_reason)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    spread = f"± {std:.1f} over {len(values)} seeds" if len(values) > 1 else "one seed, no spread"
    if 0 < mean <= std:
        note = "; ".join(filter(None, [note, "within the seed spread"]))
    return Finding(claim, f"{mean:+.1f} points", spread, SUPPORTED if mean > std else NOT_SUPPORTED, note)


def _untestable(claim: str, reason: str) -> Finding:
    return Finding(claim, "n/a", "n/a", NOT_TESTABLE, reason)


def _class_name(names: Sequence[str] | None, index: int) -> str:
    return str(names[index]) if names is not None and index < len(names) else f"class {index}"
