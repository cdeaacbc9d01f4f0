"""The science of wsss-study: CAMs, aggregation, losses, models, data, metrics,
CRF and the three-stage pipeline. Knows nothing of Ray, Parquet or Plotly."""
