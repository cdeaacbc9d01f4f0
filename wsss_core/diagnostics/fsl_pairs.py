"""Whether a data set meets FSL's premise: how Eq. 12's sign splits its pixel pairs.

FSL (paper Eqs. 9-12) pulls together the predictions of nearby pixels whose
colours are close (f < 0) and pushes apart those whose colours differ (f > 0),
with f = tanh(mu + logit(mean |RGB difference|)). It helps where pixels of one
class are close in colour and pixels of different classes are not. Over the
ground-truth masks of one split this measures, for pixel pairs within one
object class, within the background and across classes: the Gaussian-weighted
(Eq. 10) mean of f, the share of that weight with f > 0 (pushed apart), and
the pair type's share of all weight.

The geometry is the config's CAM stage: each image is resized to long side
cam.crop_size, then to the map size (crop_size / output_stride on the long
side) with cam.fsl_resize; masks by nearest neighbour; sigma and mu are
cam.fsl_sigma_init and cam.fsl_mu_init.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss_core.data import DataError, build_dataset
from wsss_core.fsl import RESIZERS, dissimilarity_sign, gaussian_weight, window_radius
from wsss_core.pipeline.config import PipelineConfig

PAIR_TYPES = ("object", "background", "different")
IGNORE = 255


def map_inputs(image: np.ndarray, mask: np.ndarray, long_side: int, stride: int, resize: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [H,W,3] image and [H,W] mask -> image [3,h,w] in [0,1] and mask [h,w] at the CAM map size."""
    height, width = mask.shape
    scale = long_side / max(height, width)
    size = (round(height * scale), round(width * scale))
    cells = (max(1, size[0] // stride), max(1, size[1] // stride))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = RESIZERS[resize](x, cells)[0]
    m = F.interpolate(torch.from_numpy(mask.astype(np.int64))[None, None].float(), size=cells, mode="nearest")
    return x, m[0, 0].long()


def pair_sums(x: torch.Tensor, mask: torch.Tensor, sigma: float, mu: float) -> dict[str, np.ndarray]:
    """{pair type: [sum of w f, sum of w where f > 0, sum of w]} over the ordered pairs of one image
    (x [3,h,w] in [0,1], mask [h,w]; pairs touching an ignored pixel are left out)."""
    sums = {kind: np.zeros(3) for kind in PAIR_TYPES}
    sigma_t, mu_t = torch.tensor(sigma), torch.tensor(mu)
    reach = int(math.floor(window_radius(sigma)))
    height, width = mask.shape
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) == (0, 0) or abs(dy) >= height or abs(dx) >= width:
                continue
            a_rows, b_rows = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
            a_cols, b_cols = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
            delta = (x[:, a_rows, a_cols] - x[:, b_rows, b_cols]).abs().mean(0)
            f = dissimilarity_sign(delta, mu_t)
            w = gaussian_weight(torch.tensor(float(dy * dy + dx * dx)), sigma_t)
            la, lb = mask[a_rows, a_cols], mask[b_rows, b_cols]
            valid = (la != IGNORE) & (lb != IGNORE)
            kinds = {"object": valid & (la == lb) & (la != 0), "background": valid & (la == 0) & (lb == 0),
                     "different": valid & (la != lb)}
            for kind, pairs in kinds.items():
                sums[kind] += float(w) * np.array([float(f[pairs].sum()), float((f[pairs] > 0).sum()),
                                                   float(pairs.sum())])
    return sums


@dataclass(frozen=True)
class PairStatistics:
    """Eq. 12's sign over the ground-truth pixel pairs of one split; totals:
    {pair type: [sum of w f, sum of w where f > 0, sum of w]}."""

    split: str
    images: int
    map_long_side: int
    sigma: float
    mu: float
    resize: str
    totals: dict[str, np.ndarray]

    def lines(self) -> list[str]:
        weight = sum(t[2] for t in self.totals.values())
        rows = [f"{self.images} {self.split} images, map long side {self.map_long_side}, sigma {self.sigma:g}, "
                f"mu {self.mu:g}, resize {self.resize} (f changes sign at mean |RGB difference| "
                f"{1 / (1 + math.exp(self.mu)):.3f})",
                f"{'pairs':12s} {'mean f':>8s} {'pushed apart':>13s} {'weight share':>13s}"]
        for kind, (wf, pushed, w) in self.totals.items():
            if w:
                rows.append(f"{kind:12s} {wf / w:+8.3f} {pushed / w:13.0%} {w / weight:13.0%}")
            else:
                rows.append(f"{kind:12s} {'-':>8s} {'-':>13s} {0:13.0%}")
        return rows


def pair_statistics(config: PipelineConfig, split: str, cache_dir: Path, progress: bool = True) -> PairStatistics:
    """Sum pair_sums over the images of `split` ("train" or "val") that have a
    ground-truth mask; DataError when none has."""
    cam = config.cam
    dataset = build_dataset(config.data, split, cache_dir=cache_dir)
    totals = {kind: np.zeros(3) for kind in PAIR_TYPES}
    images = 0
    for index in tqdm(range(len(dataset)), desc="fsl pairs", unit="img", leave=False, disable=not progress):
        sample = dataset.load(index)
        if sample.mask is None:
            continue
        images += 1
        x, mask = map_inputs(sample.image, sample.mask, cam.crop_size, cam.output_stride, cam.fsl_resize)
        for kind, sums in pair_sums(x, mask, cam.fsl_sigma_init, cam.fsl_mu_init).items():
            totals[kind] += sums
    if not images:
        raise DataError(f"the {split} split has no ground-truth masks to count pixel pairs in")
    return PairStatistics(split, images, cam.crop_size // cam.output_stride, cam.fsl_sigma_init,
                          cam.fsl_mu_init, cam.fsl_resize, totals)
