"""The three-stage WSSS pipeline (paper Sec. 4.1): CAM network -> AffinityNet
+ random walk -> DeepLab-v1, evaluated after every stage, with
content-addressed stage outputs, epoch checkpoints and resume.

Names are imported lazily (PEP 562) so that process-pool workers, which import
`wsss_core.pipeline.pool_tasks`, never import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_pipeline": "runner",
    "compute_stage": "runner",
    "PipelineResult": "runner",
    "StageResult": "runner",
    "STAGES": "runner",
    "PipelineConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "flatten_config": "config",
    "config_to_dict": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
