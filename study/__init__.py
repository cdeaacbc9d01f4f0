"""Ray Tune studies over the WSSS pipeline, with every result in Parquet.

Importing this package imports neither Ray nor torch; submodules that need
them import them themselves.
"""
