"""Whether a dataset meets FSL's premise: how Eq. 12's sign splits its pixel pairs.

    python bench/fsl_pairs.py [CONFIG.yaml] [--set key=value ...] [--split val]

FSL (paper Eqs. 9-12) pulls together the predictions of nearby pixels whose
colours are close (f < 0) and pushes apart those whose colours differ (f > 0),
with f = tanh(mu + logit(mean |RGB difference|)). It helps where pixels of one
class are close in colour and pixels of different classes are not. For the
ground-truth masks of one split this prints, over pixel pairs within one
object class, within the background and across classes: the Gaussian-weighted
(Eq. 10) mean of f, the share of that weight with f > 0 (pushed apart), and
the pair type's share of all weight.

The geometry is the config's CAM stage: each image is resized to long side
cam.crop_size, then to the map size (crop_size / output_stride on the long
side) with cam.fsl_resize; masks by nearest neighbour; sigma and mu are
cam.fsl_sigma_init and cam.fsl_mu_init. Without CONFIG: the demo
(search_spaces/pipelines/demo.yaml), then, where ../shared/data/voc2012-mini is
present, the authors' geometry on real photos (pipelines/paper_voc.yaml: 448
px, stride 8, sigma 5, mu 2.5).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.data.config import build_dataset
from wsss_core.fsl import RESIZERS, dissimilarity_sign, gaussian_weight, window_radius
from wsss_core.pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipelines" / "demo.yaml"
PAPER = REPO / "search_spaces" / "pipelines" / "paper_voc.yaml"
VOC_MINI = REPO.parent / "shared" / "data" / "voc2012-mini"
PAIR_TYPES = ("object", "background", "different")


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
    """{pair type: [sum of w f, sum of w where f > 0, sum of w]} over the ordered pairs of one image."""
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
            valid = (la != 255) & (lb != 255)
            kinds = {"object": valid & (la == lb) & (la != 0), "background": valid & (la == 0) & (lb == 0),
                     "different": valid & (la != lb)}
            for kind, pairs in kinds.items():
                sums[kind] += float(w) * np.array([float(f[pairs].sum()), float((f[pairs] > 0).sum()),
                                                   float(pairs.sum())])
    return sums


def report(config_path: Path | str, overrides: list[str], split: str) -> None:
    config = load_config(config_path, overrides)
    cam = config.cam
    dataset = build_dataset(config.data, split)
    totals = {kind: np.zeros(3) for kind in PAIR_TYPES}
    for index in range(len(dataset)):
        sample = dataset.load(index)
        x, mask = map_inputs(sample.image, sample.mask, cam.crop_size, cam.output_stride, cam.fsl_resize)
        for kind, sums in pair_sums(x, mask, cam.fsl_sigma_init, cam.fsl_mu_init).items():
            totals[kind] += sums
    weight = sum(t[2] for t in totals.values())
    print(f"config: {config_path}" + (f" {' '.join(overrides)}" if overrides else ""))
    print(f"{len(dataset)} {split} images, map long side {cam.crop_size // cam.output_stride}, "
          f"sigma {cam.fsl_sigma_init:g}, mu {cam.fsl_mu_init:g}, resize {cam.fsl_resize} "
          f"(f changes sign at mean |RGB difference| {1 / (1 + math.exp(cam.fsl_mu_init)):.3f})")
    print(f"{'pairs':12s} {'mean f':>8s} {'pushed apart':>13s} {'weight share':>13s}")
    for kind, (wf, pushed, w) in totals.items():
        print(f"{kind:12s} {wf / w:+8.3f} {pushed / w:13.0%} {w / weight:13.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=None,
                        help="pipeline config (default: the demo, then the paper's geometry on the mini set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    args = parser.parse_args()
    if args.config is not None:
        report(args.config, args.overrides, args.split)
        return
    report(DEMO, args.overrides, args.split)
    if VOC_MINI.is_dir():
        report(PAPER, [f"data.root={VOC_MINI}", *args.overrides], args.split)
    else:
        print(f"real photos skipped: {VOC_MINI} not found")


if __name__ == "__main__":
    main()
