"""Whether FSL's objective favours the true contours, and how far the CAM network follows it.

Everything is measured on the val split at the CAM stage's map size (the
image resized to long side cam.crop_size, then to crop_size / output_stride
cells with cam.fsl_resize, as fsl_pairs.map_inputs), with L_fs = paper Eq. 9
("pixels" normalisation, cam.fsl_sigma_init and cam.fsl_mu_init) over the
background and the image's classes. "L_fs + beta KL minimised" is Adam (lr
OPTIMIZER_LR, `steps` steps) on the logits of a map q, minimising
L_fs(q) + beta * KL(start || q), then scored as a label map (argmax after
bilinear resizing): what FSL makes of the contours where nothing but the
anchor holds the map.

Start "cam" trains stage 1 with FSL off and on (cam_runs) and measures L_fs of
the ground truth (one-hot, area-resized; void counts as background) and of both
networks' label-conditioned CAMs (background 1 - max foreground, the
pseudo-label rule "one_minus_sum"); and contour F and mIoU of both networks'
pseudo-labels as the pipeline scores them, of the FSL-off CAM after the round
trip to the map size and back, and of the FSL-off CAM after the minimisation.

Start "blurred-truth" trains nothing: the ground truth at the map size,
blurred by a Gaussian of `blur` cells, is the start (FSL's premise on the
photos of a config, e.g. the paper's geometry on real photos).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur
from tqdm import tqdm

from wsss_core.cache_dir import DATA_FOLDER
from wsss_core.data import build_dataset
from wsss_core.diagnostics.cam_runs import cam_overrides, cam_stages
from wsss_core.diagnostics.fsl_pairs import map_inputs
from wsss_core.fsl import feature_similarity_loss
from wsss_core.metrics import ContourFScore, MeanIoU
from wsss_core.pipeline.config import CamConfig, ConfigError, PipelineConfig, load_config
from wsss_core.pipeline.stage_cam import cam_label, read_cam

STARTS = ("cam", "blurred-truth")
OPTIMIZER_LR = 0.05
LOG_FLOOR = 1e-4
FSL_OFF, FSL_ON = "CAM, FSL off", "CAM, FSL on"


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


def cam_rows(sample: Any, cells: tuple[int, int], fsl: Callable[[torch.Tensor], float],
             dirs: dict[str, Path], minimise: Callable[[torch.Tensor, float], torch.Tensor], betas: list[float],
             cam: CamConfig, num_classes: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Start "cam", one image -> ({map: L_fs}, {row: pseudo-label [H,W]})."""
    energy, labels, maps = {}, {}, {}
    for name, stage_dir in dirs.items():
        fg, present = read_cam(stage_dir, "val", sample.name)
        classes = np.concatenate([[0], present])
        maps[name] = class_maps(fg, cells)
        energy[name] = fsl(maps[name])
        labels[name] = cam_label(fg, present, num_classes, cam.bg, cam.bg_threshold)
    energy["ground truth"] = fsl(truth_maps(sample.mask, classes, cells))
    start = maps[FSL_OFF]
    labels["FSL off, map-size round trip"] = label_of(start, classes, sample.mask.shape)
    for beta in betas:
        labels[f"FSL off, L_fs + {beta:g} KL minimised"] = label_of(minimise(start, beta), classes, sample.mask.shape)
    return energy, labels


def truth_rows(sample: Any, cells: tuple[int, int], fsl: Callable[[torch.Tensor], float],
               minimise: Callable[[torch.Tensor, float], torch.Tensor], betas: list[float], blur: float
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Start "blurred-truth", one image -> ({map: L_fs}, {row: label [H,W]})."""
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


@dataclass(frozen=True)
class OracleSettings:
    """start: one of STARTS; blur: Gaussian std in map cells (blurred-truth);
    lam, seed: cam.lam and runtime.seed of both CAM runs (cam); betas: KL
    anchor weights; steps: Adam steps per image; jobs: CAM runs at a time."""

    start: str = "cam"
    blur: float = 1.5
    lam: float = 0.5
    seed: int = 0
    betas: tuple[float, ...] = (1.0, 0.3, 0.1)
    steps: int = 150
    jobs: int = 2


@dataclass(frozen=True)
class OracleReport:
    """Mean val L_fs per map and (contour F, mIoU) per label map, both in [0, 1]."""

    description: str
    energy: dict[str, float]
    scores: dict[str, tuple[float, float]]

    def lines(self) -> list[str]:
        rows = [self.description, "val L_fs (Eq. 9, lower is what FSL asks for)"]
        rows += [f"  {name:44s} {value:+.4f}" for name, value in self.energy.items()]
        rows.append(f"{'val label maps':46s} {'contour F':>9s} {'mIoU':>6s}")
        rows += [f"  {row:44s} {100 * contour:9.1f} {100 * miou:6.1f}" for row, (contour, miou) in self.scores.items()]
        return rows


def fsl_oracle(config_path: str, overrides: list[str], settings: OracleSettings, cache_dir: Path,
               progress: bool = True, announce: Callable[[str], None] = print) -> OracleReport:
    """Measure as the module doc says. ConfigError for a config the start cannot use."""
    config = load_config(config_path, overrides)
    cam = config.cam
    if settings.start == "cam" and cam.bg != "one_minus_sum":
        raise ConfigError(f"cam.bg={cam.bg!r} is invalid for the CAM start; allowed: one_minus_sum "
                          "(the maps' background is 1 - max foreground)")
    runs = {name: [*overrides, *cam_overrides(settings.lam, fsl, settings.seed)]
            for name, fsl in ((FSL_OFF, False), (FSL_ON, True))}
    for run in runs.values():
        load_config(config_path, run)
    dataset = build_dataset(config.data, "val", cache_dir=cache_dir / DATA_FOLDER)
    num_classes = len(dataset.class_names)
    dirs: dict[str, Path] = {}
    if settings.start == "cam":
        build_dataset(config.data, "train", cache_dir=cache_dir / DATA_FOLDER)
        announce(f"training stage 1 with FSL off and on, {min(settings.jobs, 2)} at a time")
        folders = cam_stages(config_path, list(runs.values()), cache_dir, settings.jobs)
        dirs = {name: folder for name, (_, folder) in zip(runs, folders)}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        energy, scores, cells = _measure(dataset, config, settings, dirs, num_classes, progress)
    finally:
        torch.set_num_threads(threads)
    start = (f"lambda {settings.lam:g}, seed {settings.seed}" if settings.start == "cam"
             else f"ground truth blurred by {settings.blur:g} cells")
    description = (f"{start}; {len(dataset)} val images, last map {cells[0]} x {cells[1]}, "
                   f"sigma {cam.fsl_sigma_init:g}, mu {cam.fsl_mu_init:g}")
    return OracleReport(
        description,
        {name: float(np.mean(values)) for name, values in energy.items()},
        {row: (contour.compute()["mean"], miou.compute()["mean"]) for row, (contour, miou) in scores.items()},
    )


Scores = dict[str, tuple[ContourFScore, MeanIoU]]


def _measure(dataset: Any, config: PipelineConfig, settings: OracleSettings, dirs: dict[str, Path], num_classes: int,
             progress: bool) -> tuple[dict[str, list[float]], Scores, tuple[int, int]]:
    """The per-image rows of every val image with a mask, accumulated -> (L_fs lists, scores, last map size)."""
    cam = config.cam
    energy: dict[str, list[float]] = {}
    scores: Scores = {}
    cells = (0, 0)
    for index in tqdm(range(len(dataset)), desc="fsl oracle", unit="img", leave=False, disable=not progress):
        sample = dataset.load(index)
        if sample.mask is None:
            continue
        image, _ = map_inputs(sample.image, sample.mask, cam.crop_size, cam.output_stride, cam.fsl_resize)
        image, cells = image[None], tuple(image.shape[-2:])

        def fsl(maps: torch.Tensor, image: torch.Tensor = image) -> float:
            return float(feature_similarity_loss(image, maps, cam.fsl_sigma_init, cam.fsl_mu_init, resize="area"))

        def minimise(start: torch.Tensor, beta: float, image: torch.Tensor = image) -> torch.Tensor:
            return minimise_fsl(image, start, beta, settings.steps, cam.fsl_sigma_init, cam.fsl_mu_init)

        if settings.start == "cam":
            energies, labels = cam_rows(sample, cells, fsl, dirs, minimise, list(settings.betas), cam, num_classes)
        else:
            energies, labels = truth_rows(sample, cells, fsl, minimise, list(settings.betas), settings.blur)
        for name, value in energies.items():
            energy.setdefault(name, []).append(value)
        for row, label in labels.items():
            row_scores = (ContourFScore(num_classes, config.eval.bound_th), MeanIoU(num_classes))
            for score in scores.setdefault(row, row_scores):
                score.update(label, sample.mask)
    return energy, scores, cells
