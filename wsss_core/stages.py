"""The pipeline's stages in order, and what figures and tables call them.

The one definition every layer reads: the pipeline runs them in this order,
the stage index (1-based) is Ray Tune's time attribute, and the results store
keeps the name in its `stage` column. Pure Python, so `study.schema` and
`analysis` import it without torch.
"""
from __future__ import annotations

STAGES: tuple[str, ...] = ("cam", "affinity", "segmentation")
"""cam: CAM network and CRF pseudo-labels; affinity: AffinityNet and random
walk; segmentation: DeepLab-v1 and CRF inference (paper Sec. 4.1)."""

STAGE_LABELS: dict[str, str] = {"cam": "CAM pseudo-labels", "affinity": "AffinityNet pseudo-labels",
                                "segmentation": "Final predictions (DeepLab-v1)"}
"""Figure titles and legends."""

TABLE_STAGE_LABELS: dict[str, str] = {"cam": "CAMs", "affinity": "+ AffinityNet", "segmentation": "+ DeepLab-v1"}
"""Row names of the baseline-comparison table (paper Table 2)."""

SHORT_STAGE_LABELS: dict[str, str] = {"cam": "CAM", "affinity": "AFF", "segmentation": "DLB"}
"""Column names of the compact per-stage tables."""

FINAL_STAGE = STAGES[-1]


def stage_index(stage: str) -> int:
    """The 1-based position of `stage` in STAGES (Tune's time attribute)."""
    return STAGES.index(stage) + 1
