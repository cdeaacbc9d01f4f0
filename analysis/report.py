"""`wsss report`: one self-contained HTML file (plotly.js inlined once, images as data URIs).

Sections without data are left out. `watch_report` regenerates the file while a
study runs, atomically (temporary file + rename), whenever a results folder changes.
"""
from __future__ import annotations

import html
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis import figures, tables
from analysis.curves import history_stamp, load_history, training_curves
from analysis.findings import Finding, check_findings
from analysis.gallery import gallery_html
from analysis.importance import study_importances, trial_parameters
from analysis.frames import reference_stage
from analysis.store import ResultsError, load_results, results_stamp
from study.schema import STAGES

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1300px;padding:16px 24px;color:#222}
h1{font-size:1.6em} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px} h3{margin-top:28px}
nav a{margin-right:12px} .meta{color:#666;font-size:.9em}
table.wsss-table{border-collapse:collapse;margin:8px 0;font-size:.92em}
table.wsss-table caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
table.wsss-table th,table.wsss-table td{border:1px solid #ccc;padding:3px 8px;text-align:center}
table.wsss-table td{white-space:nowrap}
table.wsss-table tbody th{text-align:left;font-weight:normal}
details{margin:4px 0 16px} pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:.85em}
.gallery{display:flex;flex-wrap:wrap;column-gap:40px} .gallery-row{display:flex;align-items:center;gap:8px;margin:4px 0}
.gallery-trial{max-width:100%;overflow-x:auto} .gallery-row figure{flex:none}
.gallery-stage{flex:none;width:220px;font-size:.9em;color:#444}
figure{margin:0;text-align:center} figure img{height:128px;image-rendering:pixelated;border:1px solid #ccc}
figcaption{font-size:.75em;color:#666}
table.findings td.note{white-space:normal;text-align:left;font-size:.9em;color:#444}
.verdict-supported{background:#e3f4e3} .verdict-not-supported{background:#fbe0e0;font-weight:600} .verdict-not-testable-here{color:#777}
p.warning{background:#fbe0e0;border-left:4px solid #d62728;padding:6px 10px;font-weight:600}
"""


@dataclass(frozen=True)
class Section:
    """One titled block of the report: rendered HTML of figures and/or tables."""

    title: str
    body: str


@dataclass(frozen=True)
class StudyData:
    name: str
    path: str  # a local folder or a URI (s3://)
    frame: pd.DataFrame


def load_studies(study_dirs: Sequence[str | os.PathLike]) -> list[StudyData]:
    """Load every study folder; names are the study column (the folder name where two clash)."""
    studies = []
    for study_dir in study_dirs:
        frame = load_results(study_dir)
        studies.append(StudyData(str(frame["study"].iloc[0]), str(study_dir).rstrip("/"), frame))
    if len({s.name for s in studies}) < len(studies):
        studies = [StudyData(f"{s.name} ({s.path.rsplit('/', 1)[-1]})", s.path, s.frame) for s in studies]
    return studies


def figure_html(fig: go.Figure) -> str:
    """A figure's div without plotly.js (the report inlines it once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def table_html(table: tables.Table) -> str:
    """The table, plus its Markdown and LaTeX renderings to copy."""
    return (table.to_html() + "<details><summary>Markdown / LaTeX</summary>"
            f"<pre>{html.escape(table.to_markdown())}</pre><pre>{html.escape(table.to_latex())}</pre></details>")


def study_sections(study: StudyData) -> list[Section]:
    """Every section that applies to one study, in reading order."""
    frame = study.frame
    sections = [Section("The paper's findings, checked on this study", findings_html(check_findings(frame)))]
    curves = figures.stage_lambda_curves(frame)
    if curves is not None:
        sections.append(Section("Ablation curves: metrics vs λ at every stage (paper Figs. 2, 3, 5–8)", figure_html(curves)))
    gallery = gallery_html(frame, study.path)
    if gallery is not None:
        sections.append(Section("CAM overlays of the best trials (train images, where the pseudo-labels are made; the best of each λ first)", f"<div class='gallery'>{gallery}</div>"))
    if (pointing := figures.pointing_heatmap(frame)) is not None:
        sections.append(Section("CAM localisation: the pointing game per class", figure_html(pointing)))
    overview = [tables.status_table(frame), tables.failures_table(frame)]
    sections.append(Section("Trials", "".join(table_html(t) for t in overview if t is not None)))
    if (training := training_curves(load_history(study.path))) is not None:
        sections.append(Section("Training curves per stage", figure_html(training)))
    learned = figures.learned_fsl_parameters(frame)
    if learned is not None:
        sections.append(Section("Learned FSL parameters", figure_html(learned)))
    paper_tables = [tables.coco_lambda_table(frame), tables.baseline_table(frame), tables.naive_table(frame),
                    tables.sampled_pixels_table(frame)]
    if any(paper_tables):
        sections.append(Section("Tables (paper Tables 1, 2, 5, 6)", "".join(table_html(t) for t in paper_tables if t is not None)))
    best = tables.best_trials_table(frame)
    if best is not None:
        sections.append(Section("Best trials", table_html(best)))
    stage = reference_stage(frame)
    params = trial_parameters(frame)
    if stage is not None and (parallel := figures.parallel_coordinates(frame, params, stage)) is not None:
        sections.append(Section("Config vs metrics", figure_html(parallel)))
    importances = study_importances(frame, study.path)
    if importances is not None:
        bars = figures.importance_bars(importances.values, importances.stage, importances.metric, importances.method)
        if bars is not None:
            sections.append(Section("Parameter importance", figure_html(bars)))
    if stage is not None and (heatmap := figures.per_class_heatmap(frame, stage)) is not None:
        sections.append(Section("Per-class scores", figure_html(heatmap)))
    timeline = figures.trial_timeline(frame)
    if timeline is not None:
        sections.append(Section("Trial timeline", figure_html(timeline)))
    return sections


def findings_html(findings: Sequence[Finding]) -> str:
    """A warning line per collapse, then the table: finding, measured difference, spread, verdict, note."""
    esc = html.escape
    warnings = "".join(f"<p class='warning'>Warning: {esc(f.warning)}</p>" for f in findings if f.warning)
    rows = "".join(f"<tr><th>{esc(f.claim)}</th><td>{esc(f.difference)}</td><td>{esc(f.spread)}</td>"
                   f"<td class='verdict-{f.verdict.replace(' ', '-')}'>{esc(f.verdict)}</td><td class='note'>{esc(f.note)}</td></tr>"
                   for f in findings)
    return (f"{warnings}<table class='wsss-table findings'><caption>Val split, percentage points. Supported: positive and, "
            "where seeds repeat, above the std over seeds.</caption><thead><tr><th>finding</th><th>measured difference</th>"
            f"<th>spread over seeds</th><th>verdict</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>")


def comparison_sections(studies: Sequence[StudyData]) -> list[Section]:
    """Side-by-side sections for two or more studies (empty for one)."""
    if len(studies) < 2:
        return []
    frames = {s.name: s.frame for s in studies}
    parts = [figure_html(f) for stage in STAGES if (f := figures.compare_lambda_curves(frames, stage)) is not None]
    best = tables.best_by_study_table(frames)
    if best is not None:
        parts.insert(0, table_html(best))
    return [Section("Comparison of studies", "".join(parts))] if parts else []


def build_report(study_dirs: Sequence[str | os.PathLike]) -> str:
    """The whole report as one HTML string."""
    studies = load_studies(study_dirs)
    blocks: list[tuple[str, list[Section]]] = []
    if comparison := comparison_sections(studies):
        blocks.append(("Comparison", comparison))
    blocks += [(s.name, study_sections(s)) for s in studies]
    nav = "".join(f"<a href='#block-{i}'>{html.escape(name)}</a>" for i, (name, _) in enumerate(blocks))
    body = []
    for index, (name, sections) in enumerate(blocks):
        body.append(f"<h2 id='block-{index}'>{html.escape(name)}</h2>")
        body += [f"<section><h3>{html.escape(s.title)}</h3>{s.body}</section>" for s in sections]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = sum(len(s.frame) for s in studies)
    title = "WSSS study report: " + ", ".join(s.name for s in studies)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p class='meta'>Generated {stamp} from {rows} result rows in "
            f"{', '.join(html.escape(str(s.path)) for s in studies)}.</p><nav>{nav}</nav>{''.join(body)}</body></html>")


def write_report(study_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Build the report and write it atomically: a reader never sees a partial file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = build_report(study_dirs)
    handle, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out


def watch_report(study_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, interval: float = 5.0,
                 iterations: int | None = None, log: Callable[[str], None] = print) -> int:
    """Regenerate the report whenever a results folder changes; returns the number of writes.

    Polls every `interval` seconds, `iterations` times (None: until Ctrl-C,
    which the caller handles). A study without results yet is waited for. A
    new training epoch in a history folder also counts as a change.
    """
    last: tuple | None = None
    writes, done = 0, 0
    while iterations is None or done < iterations:
        stamp = tuple(results_stamp(d) for d in study_dirs)
        seen = (stamp, *map(history_stamp, study_dirs))
        if seen != last:
            try:
                write_report(study_dirs, out)
                writes += 1
                last = seen
                log(f"wrote {out} ({sum(count for count, _ in stamp)} result files)")
            except ResultsError as error:
                log(f"waiting: {error}")
        done += 1
        if iterations is None or done < iterations:
            time.sleep(interval)
    return writes
