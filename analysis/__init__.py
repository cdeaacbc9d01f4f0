"""Figures, tables and reports from the Parquet results store.

Imports neither torch nor Ray: only pyarrow, pandas and Plotly.
"""
