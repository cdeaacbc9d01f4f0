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
# # Ablation curves: metrics vs λ
# Area mIoU and contour F-score vs the loss parameter λ (Eq. 8), with and without
# the feature similarity loss, GMP and GAP panels, for every pipeline stage
# (paper Figs. 2, 3, 5-8). Set `STUDY_DIR` (or the env var `WSSS_STUDY_DIR`).

# %%
import os

from IPython.display import display

from analysis.figures import lambda_curve_stats, lambda_curves, learned_fsl_parameters
from analysis.store import load_results
from study.schema import STAGES

STUDY_DIR = os.environ.get("WSSS_STUDY_DIR", "runs/demo")
results = load_results(STUDY_DIR)
print(f"{results['trial_id'].nunique()} trials, {len(results)} rows from {STUDY_DIR}")

# %% [markdown]
# Mean ± std over seeds per (pooling, FSL, λ), in percent.

# %%
for stage in STAGES:
    found = lambda_curve_stats(results, stage)
    if found is not None:
        print(stage, "held fixed:", found[1])
        display(found[0].round(2))

# %%
for stage in STAGES:
    figure = lambda_curves(results, stage)
    if figure is not None:
        figure.show()

# %%
learned = learned_fsl_parameters(results)
if learned is not None:
    learned.show()
