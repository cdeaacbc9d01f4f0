"""Multi-scale + flip inference shared by the CAM network and DeepLab-v1."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from wsss_core.data import EvalTransform, Sample
from wsss_core.pipeline.training import Runtime

ProbsFn = Callable[[torch.Tensor], torch.Tensor]


def scale_inputs(
    sample: Sample, *, scales: Sequence[float], flip: bool, mean: Sequence[float], std: Sequence[float], runtime: Runtime
) -> Iterator[torch.Tensor]:
    """The inputs of multiscale_probs, one per scale: x [1,3,h,w] normalised
    (with its horizontal flip stacked: [2,3,h,w]), on the runtime's device."""
    for scale in scales:
        x = EvalTransform(scale, mean, std)(sample).image[None]
        yield runtime.images(torch.cat([x, x.flip(-1)]) if flip else x)


def warm_inference_memo(
    net: nn.Module, samples: Iterable[Sample], *, scales: Sequence[float], flip: bool, runtime: Runtime, desc: str
) -> None:
    """Before inference: store the fixed backbone maps of every input of
    multiscale_probs over `samples` in the feature memo (Backbone.warm_features),
    so processes that infer the same images at once (a sweep's first trials)
    compute each input once between them instead of each computing all.
    `net` has .backbone and .backbone_maps and is in eval mode. No-op without a memo."""
    backbone = net.backbone
    if backbone.memo is None:
        return
    for sample in tqdm(samples, desc=desc, disable=not runtime.progress, leave=False, unit="img"):
        for x in scale_inputs(sample, scales=scales, flip=flip, mean=backbone.mean, std=backbone.std, runtime=runtime):
            with runtime.autocast():
                backbone.warm_features(x, net.backbone_maps)


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
    for x in scale_inputs(sample, scales=scales, flip=flip, mean=mean, std=std, runtime=runtime):
        with runtime.autocast():
            maps = probs_fn(x).float()
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
