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
# # Comparing studies
# Two or more study folders side by side (e.g. a GMP study vs a GAP study, or a
# new method vs the baseline): the best config of each, and their λ curves in
# the same panels. Set `STUDY_DIRS` (or the env var `WSSS_STUDY_DIRS`, folders
# separated by the path separator, ':' on Linux).

# %%
import os

from IPython.display import HTML, display

from analysis.figures import compare_lambda_curves
from analysis.report import load_studies
from analysis.tables import best_by_study_table
from study.schema import STAGES

STUDY_DIRS = os.environ.get("WSSS_STUDY_DIRS", os.pathsep.join(["runs/demo", "runs/baseline"])).split(os.pathsep)
frames = {study.name: study.frame for study in load_studies(STUDY_DIRS)}
print({name: frame["trial_id"].nunique() for name, frame in frames.items()}, "trials")

# %%
best = best_by_study_table(frames)
if best is not None:
    display(HTML(best.to_html()))

# %%
for stage in STAGES:
    figure = compare_lambda_curves(frames, stage)
    if figure is not None:
        figure.show()
