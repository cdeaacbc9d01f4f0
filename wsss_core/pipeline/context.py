"""What every stage receives: the config, the resolved runtime, the image
pool and the two datasets."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_core.pipeline.config import PipelineConfig
from wsss_core.pipeline.datasets import eval_indices
from wsss_core.pipeline.evaluate import ImagePool
from wsss_core.pipeline.training import Runtime

METRICS_NAME = "metrics.json"


@dataclass
class StageContext:
    """config, runtime, pool; datasets {"train": .., "val": ..} (untransformed
    Samples); num_classes K = C + 1."""

    config: PipelineConfig
    runtime: Runtime
    pool: ImagePool
    datasets: dict[str, Any]
    num_classes: int

    def eval_indices(self, split: str) -> list[int]:
        return eval_indices(len(self.datasets[split]), self.config.eval.max_images)

    def overlay_indices(self) -> list[int]:
        return list(range(min(self.config.eval.overlays, len(self.datasets["train"]))))


def write_stage_metrics(work_dir: Path, splits: dict[str, dict], learned: dict, extra: dict) -> None:
    (work_dir / METRICS_NAME).write_text(
        json.dumps({"splits": splits, "learned": learned, "extra": extra}, indent=1, sort_keys=True)
    )


def read_stage_metrics(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / METRICS_NAME).read_text())
