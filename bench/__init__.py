"""Timing scripts: each times one part of wsss-study against a baseline and
prints the ratio with the target it must reach (its docstring names both).

Run one from the repository root as a module (`python -m bench.fsl`) or as a
file from any folder (`python path/to/bench/fsl.py`); `make bench` runs all.
Each script puts the repository first on sys.path, so `bench.*` imports work
either way and bench/study.py never shadows the study package.
"""
