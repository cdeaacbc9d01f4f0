"""CAM-stage formulations: the loss and the CAM inference of stage 1, chosen by name.

A formulation is a few functions (``Formulation``) plus the numbers of
``CamSettings`` (config keys). Shapes: B batch, K = C + 1 classes (0 =
background), h x w the stride-8 map; ``labels`` [B,K] with y_0 = 1.

* "icam": the authors' code (arvijj/icam train_cam.py, infer_cam.py,
  network/resnet38_cam.py). Per branch, Eq. 8 on the softmax CAMs (Eq. 1) with
  smoothed probabilities and the background only in the GMP term, plus a GMP
  term on the softmax of the PCM-revised logits; branches summed. Siamese:
  ER = four L1 means over all K (CAM vs CAM, PCM vs PCM, CAM vs PCM per branch),
  ECR = two (CAM of one branch vs PCM of the other), nothing detached.
  Inference: mean of CAM and PCM softmax, renormalised over the image's
  classes; after the scale mean each pixel keeps only its largest class and
  each map is divided by its max (+1e-5).
* "seam": SEAM (YudeWang/SEAM train_SEAM.py, infer_SEAM.py,
  network/resnet38_SEAM.py). GAP of the logits, foreground BCE, averaged over
  the branches; PCM on detached max-normalised ReLU CAMs; adaptive min-pooling
  loss on the PCM output; ER = foreground L1 of the max-normed CAMs; ECR
  against the detached max-onehot CAM with top-20% mining. Inference: the PCM
  output (ReLU logits without PCM), min-max normalised. The paper's
  contributions on SEAM (Table 5, ``naive``) use per-class sigmoid maps.

``naive`` swaps the softmax maps for per-class sigmoids (cams.naive_cams) in
sampling, FSL, ER/ECR and inference maps of "icam"; "seam" has no softmax, so
there it is required whenever sampling (lam > 0) or FSL is on.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss_core.aggregation import classification_loss
from wsss_core.cams import naive_cams
from wsss_core.losses import equivariant_cross_regularization, equivariant_regularization
from wsss_core.models.cam_net import CAMOutput

SEAM_ECR_TOP_FRACTION = 0.2  # YudeWang/SEAM train_SEAM.py
SEAM_MIN_POOL_FRACTION = 0.25  # adaptive_min_pooling_loss: the lowest h*w//4 pixels
NORM_EPS = 1e-5


@dataclass(frozen=True)
class CamSettings:
    """The loss numbers a formulation reads (cam.* config keys of the same names)."""

    lam: float = 0.8
    pooling: str = "gap"
    num_samples: int = 100
    naive: bool = False
    bce_eps: float = 1e-3
    bce_background: tuple[str, ...] = ("gmp",)
    pcm_weight: float = 1.0
    er_weight: float = 1.0
    ecr_weight: float = 1.0


def training_maps(logits: Tensor, naive: bool) -> Tensor:
    """Pixel maps the contributions act on: softmax (Eq. 1) or, naive, per-class sigmoid. [B,K,h,w]."""
    return naive_cams(logits) if naive else torch.softmax(logits, dim=1)


def _resize(t: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(t, size, mode="bilinear", align_corners=True)


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


# --- icam (arvijj/icam train_cam.py) -------------------------------------------------


def _icam_cls(logits: Tensor, labels: Tensor, s: CamSettings, generator: torch.Generator | None) -> Tensor:
    """Eq. 8 of one branch with the authors' smoothing and background choice. -> scalar."""
    return classification_loss(
        logits, training_maps(logits, s.naive), labels, lam=s.lam, pooling=s.pooling, num_samples=s.num_samples,
        generator=generator, eps=s.bce_eps, pooling_background=s.pooling in s.bce_background,
        sampling_background="sample" in s.bce_background,
    )


def _icam_pcm_cls(refined: Tensor, labels: Tensor, s: CamSettings) -> Tensor:
    """GMP BCE on the softmax of the PCM-revised logits (train_cam.py rv_pooling 'max'). -> scalar."""
    return classification_loss(
        refined, training_maps(refined, s.naive), labels, lam=0.0, pooling="gmp", eps=s.bce_eps,
        pooling_background="gmp" in s.bce_background,
    )


def icam_loss(
    out1: CAMOutput, out2: CAMOutput | None, labels: Tensor, s: CamSettings, generator: torch.Generator | None
) -> dict[str, Tensor]:
    """Loss parts of arvijj/icam train_cam.py (FSL is added by the caller).

    out2: the branch at seam_scale (siamese, with PCM) or None (plain CAM).
    Returns {"cls", and with PCM "pcm", with out2 also "er", "ecr"}.
    """
    branches = [out1] if out2 is None else [out1, out2]
    parts = {"cls": sum(_icam_cls(o.logits.float(), labels, s, generator) for o in branches)}
    if out1.refined is not None:
        parts["pcm"] = s.pcm_weight * sum(_icam_pcm_cls(o.refined.float(), labels, s) for o in branches)
    if out2 is not None:
        size = out2.logits.shape[-2:]
        cam1 = _resize(training_maps(out1.logits.float(), s.naive), size)
        rv1 = _resize(training_maps(out1.refined.float(), s.naive), size)
        cam2 = training_maps(out2.logits.float(), s.naive)
        rv2 = training_maps(out2.refined.float(), s.naive)
        parts["er"] = s.er_weight * (_l1(cam1, cam2) + _l1(rv1, rv2) + _l1(cam1, rv1) + _l1(cam2, rv2))
        parts["ecr"] = s.ecr_weight * (_l1(cam1, rv2) + _l1(cam2, rv1))
    return parts


def icam_pixel_maps(out: CAMOutput, keep: Tensor, naive: bool) -> Tensor:
    """infer_cam.py per forward pass: 0.5 CAM + 0.5 PCM (softmax maps), restricted to
    ``keep`` (background + present classes) and renormalised over them. -> [B,len(keep),h,w]."""
    maps = training_maps(out.logits.float(), naive)
    if out.refined is not None:
        maps = 0.5 * maps + 0.5 * training_maps(out.refined.float(), naive)
    maps = maps[:, keep]
    return maps / maps.sum(dim=1, keepdim=True).clamp_min(1e-8)


def icam_finalize(fg: Tensor) -> Tensor:
    """infer_cam.py after the scale mean: per pixel keep only the largest class,
    then divide each map by its max + 1e-5. fg [C',H,W] -> [C',H,W]."""
    fg = torch.where(fg == fg.amax(dim=0, keepdim=True), fg, torch.zeros_like(fg))
    return fg / (fg.flatten(1).amax(dim=1)[:, None, None] + NORM_EPS)


# --- SEAM (YudeWang/SEAM train_SEAM.py) ---------------------------------------------


def seam_max_norm(cams: Tensor) -> Tensor:
    """SEAM's max_norm: ReLU, then (x - min - eps)^+ / (max - min + eps) per map. [B,K,h,w]."""
    cams = F.relu(cams)
    flat = cams.flatten(2)
    low = flat.amin(dim=2)[..., None, None]
    high = flat.amax(dim=2)[..., None, None]
    return F.relu(cams - low - NORM_EPS) / (high - low + NORM_EPS)


def _with_background(cams: Tensor) -> Tensor:
    """Channel 0 replaced by 1 - max foreground. [B,K,h,w]."""
    return torch.cat([1.0 - cams[:, 1:].amax(dim=1, keepdim=True), cams[:, 1:]], dim=1)


def seam_min_pool_loss(refined_fg: Tensor) -> Tensor:
    """SEAM's adaptive_min_pooling_loss: mean ReLU of the h*w//4 lowest per-pixel class maxima. [B,C,h,w] -> scalar."""
    lowest = refined_fg.amax(dim=1).flatten(1)
    k = max(1, int(lowest.shape[1] * SEAM_MIN_POOL_FRACTION))
    return F.relu(lowest.topk(k, dim=1, largest=False).values).mean()


def _seam_cls(logits: Tensor, labels: Tensor, s: CamSettings, generator: torch.Generator | None) -> Tensor:
    """GAP foreground BCE (lam = 0: SEAM); lam > 0 mixes in naive sampling (Table 5). -> scalar."""
    return classification_loss(
        logits, naive_cams(logits), labels, lam=s.lam, pooling="gap", num_samples=s.num_samples,
        generator=generator, eps=s.bce_eps, pooling_background=False, sampling_background=False,
    )


def seam_loss(
    out1: CAMOutput, out2: CAMOutput | None, labels: Tensor, s: CamSettings, generator: torch.Generator | None
) -> dict[str, Tensor]:
    """Loss parts of YudeWang/SEAM train_SEAM.py at stride 8 (FSL is added by the caller).

    Returns {"cls"} (mean over branches), with out2 also "pcm" (min-pooling),
    "er" and "ecr".
    """
    branches = [out1] if out2 is None else [out1, out2]
    parts = {"cls": sum(_seam_cls(o.logits.float(), labels, s, generator) for o in branches) / len(branches)}
    if out2 is None:
        return parts
    label = labels.to(out1.logits.dtype)[:, :, None, None]
    parts["pcm"] = s.pcm_weight * sum(seam_min_pool_loss((o.refined.float() * label)[:, 1:]) for o in branches) / 2
    size = out2.logits.shape[-2:]
    cam1 = _resize(seam_max_norm(out1.logits.float()), size) * label
    rv1 = _resize(seam_max_norm(out1.refined.float()), size) * label
    cam2 = seam_max_norm(out2.logits.float()) * label
    rv2 = seam_max_norm(out2.refined.float()) * label
    parts["er"] = s.er_weight * equivariant_regularization(cam1, cam2, foreground_only=True)
    parts["ecr"] = s.ecr_weight * equivariant_cross_regularization(
        _with_background(cam1), rv1, _with_background(cam2), rv2, top_fraction=SEAM_ECR_TOP_FRACTION
    )
    return parts


def seam_pixel_maps(out: CAMOutput, keep: Tensor, naive: bool) -> Tensor:
    """infer_SEAM.py per forward pass: the PCM output (ReLU logits without PCM), the
    image's classes kept. -> [B,len(keep),h,w]."""
    maps = out.refined if out.refined is not None else F.relu(out.logits)
    return maps.float()[:, keep]


def seam_finalize(fg: Tensor) -> Tensor:
    """infer_SEAM.py after the scale mean: ReLU, then (x - min - 1e-5) / (max - min + 1e-5)
    per map, clamped at 0 (SEAM leaves -min/(max - min) at its minimum). [C',H,W]."""
    return seam_max_norm(fg[None])[0]


# --- registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Formulation:
    """loss(out1, out2, labels, settings, generator) -> parts; pixel_maps(out, keep, naive)
    -> per-pass maps; finalize(fg [C',H,W]) -> stored CAMs; pcm_source: CAMNet's PCM input."""

    loss: Callable[..., dict[str, Tensor]]
    pixel_maps: Callable[[CAMOutput, Tensor, bool], Tensor]
    finalize: Callable[[Tensor], Tensor]
    pcm_source: str


FORMULATIONS: dict[str, Formulation] = {
    "icam": Formulation(icam_loss, icam_pixel_maps, icam_finalize, pcm_source="logits"),
    "seam": Formulation(seam_loss, seam_pixel_maps, seam_finalize, pcm_source="seam"),
}
