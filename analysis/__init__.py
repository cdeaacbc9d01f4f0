"""Figures, tables and reports from the Parquet results store.

Imports neither torch nor Ray: only pyarrow, pandas, Plotly and Optuna.

- `analysis.store`: `load_results(study_dir)` -> one row per trial x stage x split.
- `analysis.figures`: the paper's lambda curves (Figs. 2, 3, 5-8) and study views.
- `analysis.tables`: Tables 1, 2, 5, 6 and summaries as HTML, Markdown and LaTeX.
- `analysis.importance`: fANOVA parameter importance through `optuna.importance`.
- `analysis.findings`: the paper's findings checked on a study (difference, spread, verdict; collapse check).
- `analysis.report`: `write_report` / `watch_report`, the self-contained HTML report.
- `analysis.cli`: `register(subparsers)` adds `wsss report`.
"""
