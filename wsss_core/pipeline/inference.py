"""Multi-scale + flip inference shared by the CAM network and DeepLab-v1."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from wsss_core.data import EvalTransform, Sample
from wsss_core.pipeline.training import Runtime

ProbsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def multiscale_probs(
    probs_fn: ProbsFn,
    sample: Sample,
    *,
    scales: Sequence[float],
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    runtime: Runtime,
) -> torch.Tensor:
    """Mean over `scales` (and horizontal flips) of probs_fn's class maps,
    each resized bilinearly to the image size.

    probs_fn: x [B,3,h,w] normalised -> probabilities [B,K,h',w'].
    Returns float32 [K,H,W] on the CPU (H x W = sample.image size).
    """
    height, width = sample.image.shape[:2]
    total: torch.Tensor | None = None
    for scale in scales:
        x = EvalTransform(scale, mean, std)(sample).image[None]
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with runtime.autocast():
            maps = probs_fn(runtime.images(x)).float()
        maps = F.interpolate(maps, (height, width), mode="bilinear", align_corners=False)
        if flip:
            maps = torch.stack([maps[0], maps[1].flip(-1)])
        mean_map = maps.mean(dim=0)
        total = mean_map if total is None else total + mean_map
    assert total is not None
    return (total / len(scales)).cpu()


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """x [B,C,H,W] -> zero-padded on the bottom/right to multiples of `multiple` (psa)."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple))
