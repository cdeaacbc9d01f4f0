"""Whether FSL's objective favours the true contours, and how far the CAM network follows it.

    python bench/fsl_oracle.py [CONFIG.yaml] [--start cam|blurred-truth] [--blur 1.5] [--lam 0.5] [--seed 0]
                               [--betas 1 0.3 0.1] [--steps 150] [--set key=value ...]

Everything is measured on the val split at the CAM stage's map size (the
image resized to long side cam.crop_size, then to crop_size / output_stride
cells with cam.fsl_resize, as bench/fsl_pairs.py), with L_fs = paper Eq. 9
("pixels", cam.fsl_sigma_init and cam.fsl_mu_init) over the background and
the image's classes. "L_fs + beta KL minimised" is Adam (lr 0.05, --steps)
on the logits of a map q, minimising L_fs(q) + beta * KL(start || q), for
each --betas, then scored as a label map (argmax after bilinear resizing):
what FSL makes of the contours where nothing but the anchor holds the map.

--start cam (default) trains stage 1 of CONFIG (default: the demo pipeline)
with FSL off and on (run_pipeline(until="cam"), both at once with one thread
each, on a fresh temporary cache and feature memo) and prints:

* L_fs of the ground truth (one-hot, area-resized; void counts as
  background) and of the label-conditioned CAMs of both networks (background
  1 - max foreground, the pseudo-label rule "one_minus_sum");
* contour F and mIoU of both networks' pseudo-labels as the pipeline scores
  them, of the FSL-off CAM after the round trip to the map size and back, and
  of the FSL-off CAM after the minimisation.

--start blurred-truth trains nothing: the ground truth at the map size,
blurred by a Gaussian of --blur cells, is the start (FSL's premise on the
photos of CONFIG, e.g. the paper's geometry on real photos:
search_spaces/pipelines/paper_voc.yaml --set data.root=...).
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur
from tqdm import tqdm

from wsss_core.data import build_dataset
from wsss_core.fsl import feature_similarity_loss
from wsss_core.metrics import ContourFScore, MeanIoU
from wsss_core.models.feature_memo import MEMO_ENV
from wsss_core.pipeline import run_pipeline
from wsss_core.pipeline.config import load_config
from wsss_core.pipeline.stage_cam import cam_label, read_cam

from fsl_pairs import map_inputs  # bench/ is the script's directory

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "search_spaces" / "pipelines" / "demo.yaml"
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


def cam_rows(sample: Any, image: torch.Tensor, cells: tuple[int, int], fsl: Callable[[torch.Tensor], float],
             dirs: dict[str, Path], minimise: Callable[[torch.Tensor, float], torch.Tensor], betas: list[float],
             cam: Any, num_classes: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """--start cam, one image -> ({map: L_fs}, {row: pseudo-label [H,W]})."""
    energy, labels, maps = {}, {}, {}
    for name, stage_dir in dirs.items():
        fg, present = read_cam(stage_dir, "val", sample.name)
        classes = np.concatenate([[0], present])
        maps[name] = class_maps(fg, cells)
        energy[name] = fsl(maps[name])
        labels[name] = cam_label(fg, present, num_classes, cam.bg, cam.bg_threshold)
    energy["ground truth"] = fsl(truth_maps(sample.mask, classes, cells))
    start = maps["CAM, FSL off"]
    labels["FSL off, map-size round trip"] = label_of(start, classes, sample.mask.shape)
    for beta in betas:
        labels[f"FSL off, L_fs + {beta:g} KL minimised"] = label_of(minimise(start, beta), classes, sample.mask.shape)
    return energy, labels


def truth_rows(sample: Any, cells: tuple[int, int], fsl: Callable[[torch.Tensor], float],
               minimise: Callable[[torch.Tensor, float], torch.Tensor], betas: list[float], blur: float
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """--start blurred-truth, one image -> ({map: L_fs}, {row: label [H,W]})."""
    mask = sample.mask
    classes = np.union1d([0], mask[mask != 255])
    truth = truth_maps(mask, classes, cells)
    radius = math.ceil(3 * blur)
    blurred = gaussian_blur(truth, kernel_size=[2 * radius + 1] * 2, sigma=[blur] * 2)
    energy = {"ground truth": fsl(truth), "blurred ground truth": fsl(blurred)}
    labels = {"ground truth, map-size round trip": label_of(truth, classes, mask.shape),
              "blurred ground truth": label_of(blurred, classes, mask.shape)}
    for beta in betas:
        labels[f"blurred, L_fs + {beta:g} KL minimised"] = label_of(minimise(blurred, beta), classes, mask.shape)
    return energy, labels


def train_cams(args: argparse.Namespace, tmp: Path, cache: Path) -> dict[str, Path]:
    """Stage 1 with FSL off and on, at once -> {"CAM, FSL off": folder, "CAM, FSL on": folder}."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = {f"CAM, FSL {'on' if fsl else 'off'}": pool.submit(
            cam_stage_dir, args.config, str(tmp / f"run-{fsl}"), str(cache), [
                *args.overrides, f"cam.lam={args.lam}", f"cam.fsl={str(fsl).lower()}", f"runtime.seed={args.seed}",
                "runtime.threads=1", "eval.workers=0"]) for fsl in (False, True)}
        return {name: Path(future.result()) for name, future in futures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(DEMO), help="pipeline config (default: the demo's)")
    parser.add_argument("--start", choices=("cam", "blurred-truth"), default="cam",
                        help="the maps to minimise from: the FSL-off CAM (trains stage 1 twice; default) "
                             "or the ground truth blurred by --blur (no training)")
    parser.add_argument("--blur", type=float, default=1.5, help="Gaussian std in map cells for blurred-truth (default 1.5)")
    parser.add_argument("--lam", type=float, default=0.5, help="cam.lam of both runs (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.3, 0.1],
                        help="weights of the KL anchor to the start (default 1 0.3 0.1)")
    parser.add_argument("--steps", type=int, default=150, help="Adam steps per image (default 150)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    cam = config.cam
    if args.start == "cam" and cam.bg != "one_minus_sum":
        parser.error(f"cam.bg={cam.bg!r} is not supported here; the maps' background is 1 - max foreground (cam.bg=one_minus_sum)")
    if not args.blur > 0:
        parser.error(f"--blur={args.blur!r} is not allowed; use a number > 0")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    energy: dict[str, list[float]] = {}
    scores: dict[str, tuple[ContourFScore, MeanIoU]] = {}
    with tempfile.TemporaryDirectory(prefix="wsss-fsl-oracle-") as tmp:
        os.environ[MEMO_ENV] = str(Path(tmp) / "feature_memo")
        cache = Path(tmp) / "cache"
        dataset = build_dataset(config.data, "val", cache_dir=cache / "data")
        num_classes = len(dataset.class_names)
        if args.start == "cam":
            build_dataset(config.data, "train", cache_dir=cache / "data")
            dirs = train_cams(args, Path(tmp), cache)
        for index in tqdm(range(len(dataset)), desc="fsl oracle", unit="img", leave=False):
            sample = dataset.load(index)
            image, _ = map_inputs(sample.image, sample.mask, cam.crop_size, cam.output_stride, cam.fsl_resize)
            image, cells = image[None], tuple(image.shape[-2:])

            def fsl(maps: torch.Tensor, image: torch.Tensor = image) -> float:
                return float(feature_similarity_loss(image, maps, cam.fsl_sigma_init, cam.fsl_mu_init, resize="area"))

            def minimise(start: torch.Tensor, beta: float, image: torch.Tensor = image) -> torch.Tensor:
                return minimise_fsl(image, start, beta, args.steps, cam.fsl_sigma_init, cam.fsl_mu_init)

            if args.start == "cam":
                energies, labels = cam_rows(sample, image, cells, fsl, dirs, minimise, args.betas, cam, num_classes)
            else:
                energies, labels = truth_rows(sample, cells, fsl, minimise, args.betas, args.blur)
            for name, value in energies.items():
                energy.setdefault(name, []).append(value)
            for row, label in labels.items():
                for score in scores.setdefault(row, (ContourFScore(num_classes, config.eval.bound_th), MeanIoU(num_classes))):
                    score.update(label, sample.mask)
    start = (f"lambda {args.lam:g}, seed {args.seed}" if args.start == "cam"
             else f"ground truth blurred by {args.blur:g} cells")
    print(f"config: {args.config}" + (f" {' '.join(args.overrides)}" if args.overrides else "")
          + f"; {start}; {len(dataset)} val images, last map {cells[0]} x {cells[1]}, "
          f"sigma {cam.fsl_sigma_init:g}, mu {cam.fsl_mu_init:g}")
    print("val L_fs (Eq. 9, lower is what FSL asks for)")
    for name, values in energy.items():
        print(f"  {name:44s} {np.mean(values):+.4f}")
    print(f"{'val label maps':46s} {'contour F':>9s} {'mIoU':>6s}")
    for row, (contour, miou) in scores.items():
        print(f"  {row:44s} {100 * contour.compute()['mean']:9.1f} {100 * miou.compute()['mean']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
