# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The paper's tables
# Table 1 (λ on COCO), Table 2 (baseline vs ours by stage), Table 5 (naive
# normalisation) and Table 6 (number of sampled pixels), wherever the study has
# the data, plus the best trials. Each prints as Markdown; `.to_latex()` gives
# the LaTeX. Set `STUDY_DIR` (or the env var `WSSS_STUDY_DIR`).

# %%
import os

from IPython.display import HTML, display

from analysis import tables
from analysis.store import load_results

STUDY_DIR = os.environ.get("WSSS_STUDY_DIR", "runs/demo")
results = load_results(STUDY_DIR)

# %%
builders = [tables.coco_lambda_table, tables.baseline_table, tables.naive_table, tables.sampled_pixels_table,
            tables.best_trials_table, tables.failures_table]
found = [table for build in builders if (table := build(results)) is not None]
for table in found:
    display(HTML(table.to_html()))
    print(table.to_markdown())

# %%
for table in found[:1]:
    print(table.to_latex())
