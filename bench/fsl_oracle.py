"""Whether FSL's objective favours the true contours, and how far the CAM network follows it.

    python bench/fsl_oracle.py [CONFIG.yaml] [--lam 0.5] [--seed 0] [--betas 1 0.3 0.1] [--steps 150] [--set key=value ...]

Trains stage 1 of CONFIG (default: the demo pipeline) with FSL off and on
(run_pipeline(until="cam"), both at once with one thread each, on a fresh
temporary cache and feature memo). Then, on the val split, at the CAM stage's
map size (the image resized to long side cam.crop_size, then to
crop_size / output_stride cells with cam.fsl_resize, as bench/fsl_pairs.py):

* L_fs (paper Eq. 9, "pixels", cam.fsl_sigma_init and cam.fsl_mu_init) of
  three maps over the background and the image's classes: the ground truth
  (one-hot, area-resized; void counts as background) and the label-conditioned
  CAMs of the FSL-off and FSL-on networks (background 1 - max foreground, the
  pseudo-label rule "one_minus_sum"). FSL asks for a lower value;
* the contour F and mIoU of the FSL-off CAM's pseudo-labels: as the pipeline
  scores them, after the round trip to the map size and back (bilinear), and
  after minimising L_fs + beta * KL(CAM || map) directly over the map's
  logits (Adam, lr 0.05, --steps) for each --betas: what FSL would make of
  the contours if the network could move its maps freely.

The FSL-on network's own scores are the stage's, printed with its L_fs.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fsl_pairs import map_inputs  # bench/ is the script's directory

from wsss_core.data import build_dataset
from wsss_core.fsl import feature_similarity_loss
from wsss_core.metrics import ContourFScore, MeanIoU
from wsss_core.models.feature_memo import MEMO_ENV
from wsss_core.pipeline import run_pipeline
from wsss_core.pipeline.config import load_config
from wsss_core.pipeline.stage_cam import cam_label, read_cam

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipeline_demo.yaml"
OPTIMIZER_LR = 0.05
LOG_FLOOR = 1e-4


def cam_stage_dir(config: str, out: str, cache: str, overrides: list[str]) -> str:
    """Stage 1 of `config` with `overrides` -> its finished folder in `cache` (in a pool worker)."""
    result = run_pipeline(config, out, cache_dir=cache, progress=False, overrides=overrides, until="cam")
    return str(Path(cache) / "stages" / "cam" / result.stages[0].key)


def class_maps(fg: np.ndarray, cells: tuple[int, int]) -> torch.Tensor:
    """Present classes' CAMs fg [C',H,W] -> [1,C'+1,h,w]: background 1 - max fg first, area-resized, summing to 1."""
    maps = torch.from_numpy(fg)
    maps = torch.cat([1.0 - maps.amax(0, keepdim=True), maps])[None]
    maps = F.interpolate(maps, size=cells, mode="area")
    return maps / maps.sum(1, keepdim=True).clamp_min(1e-8)


def truth_maps(mask: np.ndarray, classes: np.ndarray, cells: tuple[int, int]) -> torch.Tensor:
    """Ground truth [H,W] -> one-hot over `classes` (void as background) area-resized to [1,len(classes),h,w]."""
    mask = torch.from_numpy(np.where(mask == 255, 0, mask).astype(np.int64))
    onehot = torch.stack([(mask == c).float() for c in classes])[None]
    onehot = F.interpolate(onehot, size=cells, mode="area")
    return onehot / onehot.sum(1, keepdim=True).clamp_min(1e-8)


def minimise_fsl(image: torch.Tensor, start: torch.Tensor, beta: float, steps: int, sigma: float, mu: float
                 ) -> torch.Tensor:
    """argmin over maps q of L_fs(q) + beta * mean_pixels KL(start || q), from q = start. [1,C,h,w] -> [1,C,h,w]."""
    logits = torch.log(start + LOG_FLOOR).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=OPTIMIZER_LR)
    log_start = torch.log(start + 1e-8)
    for _ in range(steps):
        q = logits.softmax(1)
        kl = (start * (log_start - torch.log(q + 1e-8))).sum(1).mean()
        loss = feature_similarity_loss(image, q, sigma, mu, resize="area") + beta * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return logits.detach().softmax(1)


def label_of(maps: torch.Tensor, classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[1,C,h,w] maps -> uint8 [H,W]: class ids of the argmax after bilinear resizing to `size`."""
    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return classes[up[0].argmax(0).numpy()].astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(DEMO), help="pipeline config (default: the demo's)")
    parser.add_argument("--lam", type=float, default=0.5, help="cam.lam of both runs (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.3, 0.1],
                        help="weights of the KL anchor to the CAM (default 1 0.3 0.1)")
    parser.add_argument("--steps", type=int, default=150, help="Adam steps per image (default 150)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    cam = config.cam
    if cam.bg != "one_minus_sum":
        parser.error(f"cam.bg={cam.bg!r} is not supported here; the maps' background is 1 - max foreground (cam.bg=one_minus_sum)")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="wsss-fsl-oracle-") as tmp:
        os.environ[MEMO_ENV] = str(Path(tmp) / "feature_memo")
        cache = Path(tmp) / "cache"
        dataset = build_dataset(config.data, "val", cache_dir=cache / "data")
        build_dataset(config.data, "train", cache_dir=cache / "data")
        num_classes = len(dataset.class_names)
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(cam_stage_dir, args.config, str(Path(tmp) / f"run-{fsl}"), str(cache), [
                *args.overrides, f"cam.lam={args.lam}", f"cam.fsl={str(fsl).lower()}", f"runtime.seed={args.seed}",
                "runtime.threads=1", "eval.workers=0"]) for fsl in (False, True)]
            off_dir, on_dir = (Path(f.result()) for f in futures)
        energy = {"ground truth": [], "CAM, FSL off": [], "CAM, FSL on": []}
        rows = ["CAM, FSL off", "CAM, FSL on", "FSL off, map-size round trip",
                *(f"FSL off, L_fs + {beta:g} KL minimised" for beta in args.betas)]
        scores = {row: (ContourFScore(num_classes, config.eval.bound_th), MeanIoU(num_classes)) for row in rows}
        for index in range(len(dataset)):
            sample = dataset.load(index)
            image, _ = map_inputs(sample.image, sample.mask, cam.crop_size, cam.output_stride, cam.fsl_resize)
            image, cells, size = image[None], tuple(image.shape[-2:]), sample.mask.shape

            def fsl(maps: torch.Tensor) -> float:
                return float(feature_similarity_loss(image, maps, cam.fsl_sigma_init, cam.fsl_mu_init, resize="area"))

            maps, labels = {}, {}
            for name, stage_dir in (("CAM, FSL off", off_dir), ("CAM, FSL on", on_dir)):
                fg, present = read_cam(stage_dir, "val", sample.name)
                classes = np.concatenate([[0], present])
                maps[name] = class_maps(fg, cells)
                energy[name].append(fsl(maps[name]))
                labels[name] = cam_label(fg, present, num_classes, cam.bg, cam.bg_threshold)
            energy["ground truth"].append(fsl(truth_maps(sample.mask, classes, cells)))
            labels["FSL off, map-size round trip"] = label_of(maps["CAM, FSL off"], classes, size)
            for beta in args.betas:
                refined = minimise_fsl(image, maps["CAM, FSL off"], beta, args.steps, cam.fsl_sigma_init, cam.fsl_mu_init)
                labels[f"FSL off, L_fs + {beta:g} KL minimised"] = label_of(refined, classes, size)
            for row, label in labels.items():
                for score in scores[row]:
                    score.update(label, sample.mask)
    print(f"config: {args.config}" + (f" {' '.join(args.overrides)}" if args.overrides else "")
          + f"; lambda {args.lam:g}, seed {args.seed}, {len(dataset)} val images, map {cells[0]} x {cells[1]}, "
          f"sigma {cam.fsl_sigma_init:g}, mu {cam.fsl_mu_init:g}")
    print(f"{'val L_fs (Eq. 9, lower is what FSL asks for)':46s}")
    for name, values in energy.items():
        print(f"  {name:44s} {np.mean(values):+.4f}")
    print(f"{'val pseudo-labels':46s} {'contour F':>9s} {'mIoU':>6s}")
    for row, (contour, miou) in scores.items():
        print(f"  {row:44s} {100 * contour.compute()['mean']:9.1f} {100 * miou.compute()['mean']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
