"""The one folder everything cached lives under: $WSSS_CACHE, else ~/.cache/wsss.

Below it: stages/ (finished stage outputs, wsss_core.pipeline.cache), data/
(generated synthetic data sets), mirror/ (local copies of a bucket's stage
cache) and optuna/ (Optuna journals). Lab-mates who point WSSS_CACHE at one
shared folder reuse each other's stages.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "WSSS_CACHE"
DATA_FOLDER = "data"
"""The sub-folder of a cache that holds generated data sets."""


def default_cache_dir() -> Path:
    """$WSSS_CACHE, else ~/.cache/wsss."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "wsss")
