"""The typed configuration of one pipeline run, read from YAML or a dict.

Sections: `data` (wsss_core.data.DataConfig), `cam` (stage 1), `affinity`
(stage 2), `segmentation` (stage 3), `crf` (wsss_core.crf.CRFConfig), `eval`
and `runtime`. Every key is
checked at the edge: an unknown key or an out-of-range value raises
`ConfigError` with one line naming the key, the value and what is allowed.
`flatten_config` gives the dotted-key view the study layer stores in Parquet.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_core.config_dicts import ConfigError, build_dataclass, merge_dotted, nest_dotted, plain_data
from wsss_core.crf import CRFConfig
from wsss_core.data import DataConfig
from wsss_core.formulations import FORMULATIONS
from wsss_core.models.deeplab import HEADS
from wsss_core.fsl import DEFAULT_MASS, MIN_MASS, NORMALIZATIONS, RESIZERS
from wsss_core.metrics import ABSENT_CLASS_F
from wsss_core.yaml_loader import YAMLSyntaxError, load_yaml

POOLINGS = ("gap", "gmp")
CAM_MODES = ("plain", "seam")
BG_RULES = ("threshold", "one_minus_sum")
DEVICES = ("auto", "cpu", "cuda")
INFER_AVERAGES = ("logits", "probs")


def _require(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainingConfig:
    """What every trained stage shares: backbone, augmentation and SGD with poly
    decay (lr_t = lr * (1 - t/T)^poly_power, new layers at 10x lr, as psa/SEAM).

    weights: "default" (ImageNet where it ships offline, else random init),
    None, a local file, or a torchvision weights enum name (see build_backbone).
    resize_long: random long-side range before cropping (psa/SEAM: 448..768;
    None: no random resize).
    optimizer: "sgd" (the reference codebases' choice and the default) or
    "adam" (same groups, lr multipliers and poly decay; converges far faster
    from random init, which is what the CPU demo trains from).
    output_stride: 8 (the paper's backbones, dilated) or 16 (efficientnet_lite0
    only: one dilated stage fewer, about 3x cheaper on CPU, coarser maps).
    freeze_backbone: train only the new layers on fixed pretrained features
    (no backbone gradients, BatchNorm statistics kept): far cheaper on CPU, and
    on a few hundred photos the CAMs of a fine-tuned backbone localise worse.
    train_backbone_head: with freeze_backbone, the backbone's head layer
    (efficientnet_lite0: the 1x1 conv 320 -> 1280 with BatchNorm and ReLU6)
    still trains: the stage's new layers then read trainable non-linear
    features of the fixed trunk instead of fixed ones, at about the same cost.
    train_backbone_blocks: with train_backbone_head, the trunk's last N blocks
    (efficientnet_lite0: of MBConv blocks 11-15, N <= 5) train with the head
    layer, their BatchNorm statistics fixed, at backbone_blocks_lr_mult x the
    backbone's lr (also under Adam): spatial layers that FSL's objective can
    move, which a per-location head on fixed features lacks; the feature memo
    then holds the maps before them.
    momentum: SGD momentum. The reference PolyOptimizer (psa/SEAM/icam
    tool/torchutils.py) hands its weight_decay to SGD's momentum slot, so
    their CAM and AffinityNet stages train with momentum 5e-4 (the stage
    defaults here); DeepLab (icam train_final.py) uses 0.9.
    """

    INFERENCE_FIELDS: typing.ClassVar[tuple[str, ...]] = ()
    """Fields read only after training (inference, labels): the stage's training
    key leaves them out, so runs that differ only there train once (runner).
    List a field here only if the stage's `train` never reads it: a listed
    training field would let runs that train differently share weights
    (tests/test_pipeline.py trains with every listed field changed and
    compares the weights)."""

    backbone: str = "resnet_small"
    weights: str | None = "default"
    output_stride: int = 8
    freeze_backbone: bool = False
    train_backbone_head: bool = False
    train_backbone_blocks: int = 0
    backbone_blocks_lr_mult: float = 0.03
    optimizer: str = "sgd"
    momentum: float = 0.9
    crop_size: int = 448
    resize_long: tuple[int, int] | None = (448, 768)
    color_jitter: bool = True
    batch_size: int = 8
    epochs: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    poly_power: float = 0.9

    def validate(self, section: str) -> None:
        from wsss_core.models import BACKBONES, has_head_layer, max_head_blocks, output_strides

        _require(self.backbone in BACKBONES, f"{section}.backbone", self.backbone, ", ".join(BACKBONES))
        strides = output_strides(self.backbone)
        _require(self.output_stride in strides, f"{section}.output_stride", self.output_stride,
                 f"{', '.join(map(str, strides))} with backbone {self.backbone}")
        if self.train_backbone_head:
            _require(self.freeze_backbone, f"{section}.train_backbone_head", True,
                     f"false unless {section}.freeze_backbone is true (an unfrozen backbone trains its head anyway)")
            _require(has_head_layer(self.backbone), f"{section}.train_backbone_head", True,
                     f"false with backbone {self.backbone} (no head layer; efficientnet_lite0 has one)")
        if self.train_backbone_blocks:
            _require(self.train_backbone_head, f"{section}.train_backbone_blocks", self.train_backbone_blocks,
                     f"0 unless {section}.train_backbone_head is true (the blocks train as part of the head)")
        most = max_head_blocks(self.backbone)
        _require(0 <= self.train_backbone_blocks <= most, f"{section}.train_backbone_blocks",
                 self.train_backbone_blocks, f"0-{most}" if most else f"0 with backbone {self.backbone}")
        _require(self.backbone_blocks_lr_mult > 0, f"{section}.backbone_blocks_lr_mult",
                 self.backbone_blocks_lr_mult, "a number > 0")
        _require(self.optimizer in OPTIMIZERS, f"{section}.optimizer", self.optimizer, ", ".join(OPTIMIZERS))
        _require(self.crop_size >= 16, f"{section}.crop_size", self.crop_size, "an integer >= 16")
        _require(0 <= self.momentum < 1, f"{section}.momentum", self.momentum, "0 <= momentum < 1")
        if self.resize_long is not None:
            lo, hi = self.resize_long
            _require(1 <= lo <= hi, f"{section}.resize_long", self.resize_long, "null or [lo, hi], 1 <= lo <= hi")
        _require(self.batch_size >= 1, f"{section}.batch_size", self.batch_size, "an integer >= 1")
        _require(self.epochs >= 1, f"{section}.epochs", self.epochs, "an integer >= 1")
        _require(self.lr > 0, f"{section}.lr", self.lr, "a number > 0")
        _require(self.weight_decay >= 0, f"{section}.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.poly_power >= 0, f"{section}.poly_power", self.poly_power, "a number >= 0")


@dataclass(frozen=True)
class CamConfig(TrainingConfig):
    """Stage 1: the CAM network and its pseudo-labels.

    formulation: the loss and CAM inference (wsss_core.formulations): "icam",
    the authors' code (default), or "seam", the SEAM baseline. mode "seam"
    adds the siamese pass at seam_scale (SEAM's 0.3) and the PCM.
    Loss (Sec. 4.1): L_cls (Eq. 8: (1 - lam) * BCE(pooling) + lam * BCE(n
    importance samples, Eqs. 5-6); probabilities smoothed by bce_eps (authors
    1e-3, 0 = Eq. 7 as printed); bce_background: the terms whose BCE includes
    class 0 (authors: gmp only; Eq. 7 as printed: all); naive: per-class
    sigmoid maps instead of the softmax, the Table 5 ablation) + pcm_weight x
    the PCM term + fsl_weight * L_fs (Eqs. 9-12; fsl_normalization "pixels"
    divides by HW, the authors' scale, so weight 1 = their 0.5 x loss_fs;
    "pairs" by (HW)^2 as Eq. 9 is printed; sigma/mu start at
    fsl_sigma_init/fsl_mu_init, the authors' 5 and 2.5, and stay fixed as in
    their train_cam.py unless fsl_learn, the paper's text; image resized by
    fsl_resize, authors: bilinear with aligned corners) + er_weight * L_er +
    ecr_weight * L_ecr. The paper weights all terms 1.
    Inference: the formulation's maps, mean over infer_scales (x flip).
    Evaluated pseudo-label: background from `bg` ("one_minus_sum": icam
    eval_cam.py; "threshold": bg_threshold, swept as SEAM's evaluation). Stage-2 labels: dense CRF with the
    background (1 - max fg)^alpha at crf_alpha_low (amplified background:
    confident foreground) and crf_alpha_high (weakened: confident background);
    the paper's 2 and 4 (SEAM used 4 and 24); the rest is ignored (255).
    """

    INFERENCE_FIELDS = ("infer_scales", "infer_flip", "bg", "bg_threshold", "crf_alpha_low", "crf_alpha_high")

    momentum: float = 5e-4  # reference PolyOptimizer, see TrainingConfig
    formulation: str = "icam"
    mode: str = "seam"
    dropout: float = 0.5
    seam_scale: float = 0.3
    lam: float = 0.8
    pooling: str = "gap"
    num_samples: int = 100  # arvijj/icam train_cam.py --num_samples; the paper's text samples 1
    naive: bool = False
    bce_eps: float = 1e-3
    bce_background: tuple[str, ...] = ("gmp",)
    pcm_weight: float = 1.0
    fsl: bool = True
    fsl_weight: float = 1.0
    fsl_sigma_init: float = 5.0
    fsl_mu_init: float = 2.5
    fsl_learn: bool = False
    fsl_normalization: str = "pixels"
    fsl_mass: float = DEFAULT_MASS
    fsl_resize: str = "bilinear_corners"
    er_weight: float = 1.0
    ecr_weight: float = 1.0
    infer_scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    infer_flip: bool = True
    bg: str = "one_minus_sum"
    bg_threshold: float = 0.2
    crf_alpha_low: float = 2.0
    crf_alpha_high: float = 4.0

    def validate(self, section: str = "cam") -> None:
        super().validate(section)
        _require(self.formulation in FORMULATIONS, "cam.formulation", self.formulation, ", ".join(FORMULATIONS))
        _require(self.mode in CAM_MODES, "cam.mode", self.mode, ", ".join(CAM_MODES))
        _require(0 <= self.dropout < 1, "cam.dropout", self.dropout, "0 <= dropout < 1")
        _require(0 < self.seam_scale < 1, "cam.seam_scale", self.seam_scale, "0 < seam_scale < 1")
        _require(0 <= self.lam <= 1, "cam.lam", self.lam, "a number in [0, 1]")
        _require(self.pooling in POOLINGS, "cam.pooling", self.pooling, ", ".join(POOLINGS))
        _require(self.num_samples >= 1, "cam.num_samples", self.num_samples, "an integer >= 1")
        _require(0 <= self.bce_eps < 0.5, "cam.bce_eps", self.bce_eps, "0 <= bce_eps < 0.5")
        _require(set(self.bce_background) <= {"gap", "gmp", "sample"}, "cam.bce_background",
                 list(self.bce_background), "a list of gap, gmp, sample")
        _require(self.pcm_weight >= 0, "cam.pcm_weight", self.pcm_weight, "a number >= 0")
        if self.formulation == "seam":
            _require(self.pooling == "gap", "cam.pooling", self.pooling, "gap (cam.formulation=seam)")
            _require(self.naive or (self.lam == 0 and not self.fsl), "cam.naive", self.naive,
                     "true when cam.formulation=seam has lam > 0 or fsl (SEAM has no softmax CAMs)")
        _require(self.fsl_weight >= 0, "cam.fsl_weight", self.fsl_weight, "a number >= 0")
        _require(self.fsl_sigma_init > 0, "cam.fsl_sigma_init", self.fsl_sigma_init, "a number > 0")
        _require(
            self.fsl_normalization in NORMALIZATIONS, "cam.fsl_normalization", self.fsl_normalization,
            ", ".join(NORMALIZATIONS),
        )
        _require(MIN_MASS <= self.fsl_mass < 1, "cam.fsl_mass", self.fsl_mass, f"{MIN_MASS} <= mass < 1")
        _require(self.fsl_resize in RESIZERS, "cam.fsl_resize", self.fsl_resize, ", ".join(RESIZERS))
        _require(self.er_weight >= 0, "cam.er_weight", self.er_weight, "a number >= 0")
        _require(self.ecr_weight >= 0, "cam.ecr_weight", self.ecr_weight, "a number >= 0")
        _check_scales("cam.infer_scales", self.infer_scales)
        _require(self.bg in BG_RULES, "cam.bg", self.bg, ", ".join(BG_RULES))
        _require(0 < self.bg_threshold < 1, "cam.bg_threshold", self.bg_threshold, "0 < bg_threshold < 1")
        _require(self.crf_alpha_low > 0, "cam.crf_alpha_low", self.crf_alpha_low, "a number > 0")
        _require(
            self.crf_alpha_high > self.crf_alpha_low, "cam.crf_alpha_high", self.crf_alpha_high,
            f"a number > crf_alpha_low ({self.crf_alpha_low})",
        )


@dataclass(frozen=True)
class AffinityConfig(TrainingConfig):
    """Stage 2: AffinityNet on pixel pairs closer than `radius` on the stride-8
    map (psa: 5), trained as icam train_aff.py: lr 0.01, effective momentum
    5e-4, random crop and flip without a random resize; random walk with transition
    A^beta and T^iterations (SEAM: beta 8, logt 6 -> 64 iterations) from CAMs
    whose background is (1 - max fg)^rw_alpha (SEAM: 6).
    """

    INFERENCE_FIELDS = ("beta", "iterations", "rw_alpha")

    lr: float = 0.01
    momentum: float = 5e-4  # reference PolyOptimizer, see TrainingConfig
    resize_long: tuple[int, int] | None = None
    radius: int = 5
    beta: float = 8.0
    iterations: int = 64
    rw_alpha: float = 6.0

    def validate(self, section: str = "affinity") -> None:
        super().validate(section)
        _require(self.radius >= 2, "affinity.radius", self.radius, "an integer >= 2")
        _require(self.beta > 0, "affinity.beta", self.beta, "a number > 0")
        _require(self.iterations >= 1, "affinity.iterations", self.iterations, "an integer >= 1")
        _require(self.rw_alpha > 0, "affinity.rw_alpha", self.rw_alpha, "a number > 0")


@dataclass(frozen=True)
class SegmentationConfig(TrainingConfig):
    """Stage 3: DeepLab-v1 (`head` from wsss_core.models.deeplab.HEADS: "bn", the
    authors' lib/net/deeplabv1.py with BN and dropout 0.5, or "largefov")
    trained with cross-entropy on the refined pseudo-labels plus fsl_weight x
    L_fs on its stride-8 softmax (icam train_final.py adds 0.5 x their FSL:
    weight 1 with "pixels" normalisation, sigma 5, mu 2.5, fixed). Inference:
    mean over infer_scales (x flip) of the logits (infer_average "logits", as
    icam eval_final.py) or of the softmax ("probs"), then dense CRF when `crf`
    with the crf section's kernels but crf_bilateral_sxy and crf_iterations
    (icam lib/utils/DenseCRF.py: 32 and 1; the crf section's 80 and 10 are
    psa/SEAM's, used for the stage-1 labels). bn_momentum: the head's BatchNorm
    running-statistics momentum (authors 3e-4, made for ~20k steps; a run of a
    few hundred steps keeps nearly the initial statistics and predicts garbage
    in eval mode: CPU presets use null, a cumulative average). backbone_head:
    false reads the trunk's last map instead of the backbone's head layer
    (efficientnet_lite0: the last MBConv block's 320 channels, not the 1x1 conv
    to 1280 that feeds ImageNet's classifier), as segmentation encoders use
    EfficientNet; the first head conv then costs a quarter."""

    INFERENCE_FIELDS = ("infer_scales", "infer_flip", "infer_average", "crf", "crf_bilateral_sxy", "crf_iterations")

    lr: float = 0.001
    epochs: int = 20
    batch_size: int = 10  # icam voc/config_voc2012.py TRAIN_BATCHES
    head: str = "bn"
    train_norm: bool = False  # icam deeplabv1.get_parameter_groups: conv parameters only
    bn_momentum: float | None = 3e-4  # icam voc/config_voc2012.py TRAIN_BN_MOM; None: cumulative average
    head_channels: int = 512
    dilation: int = 12
    dropout: float = 0.5
    fsl: bool = True
    fsl_weight: float = 1.0
    fsl_sigma: float = 5.0
    fsl_mu: float = 2.5
    fsl_normalization: str = "pixels"
    infer_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    infer_flip: bool = True
    infer_average: str = "logits"
    crf: bool = True
    crf_bilateral_sxy: float = 32.0
    crf_iterations: int = 1
    backbone_head: bool = True

    def validate(self, section: str = "segmentation") -> None:
        from wsss_core.models import has_head_layer

        super().validate(section)
        if not self.backbone_head:
            _require(has_head_layer(self.backbone), "segmentation.backbone_head", False,
                     f"true with backbone {self.backbone} (no head layer to skip; efficientnet_lite0 has one)")
            _require(not self.train_backbone_head, "segmentation.backbone_head", False,
                     "true while segmentation.train_backbone_head is true (a skipped head does not train)")
        _require(self.head_channels >= 1, "segmentation.head_channels", self.head_channels, "an integer >= 1")
        _require(self.dilation >= 1, "segmentation.dilation", self.dilation, "an integer >= 1")
        _require(0 <= self.dropout < 1, "segmentation.dropout", self.dropout, "0 <= dropout < 1")
        _require(self.head in HEADS, "segmentation.head", self.head, ", ".join(HEADS))
        _require(self.bn_momentum is None or 0 < self.bn_momentum <= 1, "segmentation.bn_momentum",
                 self.bn_momentum, "null (cumulative average) or a number in (0, 1]")
        _require(self.fsl_weight >= 0, "segmentation.fsl_weight", self.fsl_weight, "a number >= 0")
        _require(self.fsl_sigma > 0, "segmentation.fsl_sigma", self.fsl_sigma, "a number > 0")
        _require(self.fsl_normalization in NORMALIZATIONS, "segmentation.fsl_normalization",
                 self.fsl_normalization, ", ".join(NORMALIZATIONS))
        _check_scales("segmentation.infer_scales", self.infer_scales)
        _require(self.infer_average in INFER_AVERAGES, "segmentation.infer_average", self.infer_average,
                 ", ".join(INFER_AVERAGES))
        _require(self.crf_bilateral_sxy > 0, "segmentation.crf_bilateral_sxy", self.crf_bilateral_sxy, "a number > 0")
        _require(self.crf_iterations >= 1, "segmentation.crf_iterations", self.crf_iterations, "an integer >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after every stage on `splits` (mIoU and contour F, Sec. 4.1).

    bg_thresholds: CAM background thresholds swept on the train split (as SEAM's
    evaluation); the best one is applied to every split and reported. Empty:
    no sweep, cam.bg_threshold is used.
    max_images: evaluate only the first N images of each split (None: all).
    overlays: how many train images get an overlay PNG per stage.
    workers: process-pool size for CRF and evaluation (0: in-process).
    bound_th: contour-F boundary tolerance (fraction of the image diagonal, DAVIS).
    contour_f_absent: contour F of a class no image of the split shows or is
    predicted to show: "one" (scores 1 in the mean; the authors'
    contour_fscore.py) or "skip" (left out, as mIoU does); see
    metrics.ABSENT_CLASS_F. They agree wherever every class appears.
    """

    splits: tuple[str, ...] = ("train", "val")
    bg_thresholds: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
    max_images: int | None = None
    overlays: int = 4
    workers: int = 2
    bound_th: float = 0.008
    contour_f_absent: str = "one"

    def validate(self, section: str = "eval") -> None:
        for split in self.splits:
            _require(split in ("train", "val"), "eval.splits", list(self.splits), "a list of train, val")
        _require("val" in self.splits, "eval.splits", list(self.splits), "a list that includes val")
        for t in self.bg_thresholds:
            _require(0 < t < 1, "eval.bg_thresholds", list(self.bg_thresholds), "numbers in (0, 1)")
        _require(self.max_images is None or self.max_images >= 1, "eval.max_images", self.max_images, "null or >= 1")
        _require(self.overlays >= 0, "eval.overlays", self.overlays, "an integer >= 0")
        _require(self.workers >= 0, "eval.workers", self.workers, "an integer >= 0")
        _require(0 < self.bound_th < 1, "eval.bound_th", self.bound_th, "0 < bound_th < 1")
        _require(self.contour_f_absent in ABSENT_CLASS_F, "eval.contour_f_absent", self.contour_f_absent,
                 ", ".join(ABSENT_CLASS_F))


@dataclass(frozen=True)
class RuntimeConfig:
    """seed: fixes every random choice (deterministic on CPU). device: "auto"
    picks CUDA when available. amp applies on CUDA only (same code path;
    ignored on CPU). channels_last: NHWC weights and images on any device
    (faster CPU convolutions for the demo's networks: bench/channels_last.py
    times both layouts). threads: torch intra-op threads (None: torch's
    default). loader_workers: DataLoader workers for training batches.
    feature_memo: frozen backbones (`freeze_backbone`) read their feature maps
    from an on-disk memo shared by every process on the machine
    ($WSSS_FEATURE_MEMO, else <temp>/wsss-feature-memo; wsss_core.models.
    feature_memo): trials that differ only downstream of a frozen backbone
    compute its maps once. Exact (float32 as computed); it costs disk (the
    maps of every image view a trial trains on) and may be deleted at any time.
    frozen_bf16: a frozen backbone's fixed part runs under bfloat16 autocast
    (its maps return as float32; the layers that train stay float32): faster
    on a CPU with native bfloat16 (AVX-512 BF16, AMX; bench/frozen_bf16.py
    times it), slower on one without (a run with a frozen backbone then warns:
    wsss_core.pipeline.native_bf16); the maps differ from float32 by a few
    percent (relative L2), so the results differ from a float32 run's."""

    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    threads: int | None = None
    loader_workers: int = 0
    feature_memo: bool = False
    frozen_bf16: bool = False

    def validate(self, section: str = "runtime") -> None:
        _require(self.device in DEVICES, "runtime.device", self.device, ", ".join(DEVICES))
        _require(self.threads is None or self.threads >= 1, "runtime.threads", self.threads, "null or >= 1")
        _require(self.loader_workers >= 0, "runtime.loader_workers", self.loader_workers, "an integer >= 0")


@dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline; stages reuse cached outputs whose config matches."""

    data: DataConfig = field(default_factory=DataConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "cam": CamConfig,
    "affinity": AffinityConfig,
    "segmentation": SegmentationConfig,
    "crf": CRFConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
}


STUDY_SPEC_KEYS = frozenset({"base", "fixed", "space", "seeds", "search", "scheduler", "resources", "failure"})
"""Top-level keys only a study spec has: a file with them is named as one when given to `wsss pipeline run`."""


def load_config(source: str | Path | dict | PipelineConfig, overrides: list[str] | None = None) -> PipelineConfig:
    """A YAML file path, a dict (nested sections or dotted keys) or a config ->
    validated PipelineConfig. `overrides`: "section.key=value" strings (values
    parsed as YAML) applied on top. Raises ConfigError (one line)."""
    if isinstance(source, PipelineConfig):
        source = config_to_dict(source)
    elif not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            source = load_yaml(path.read_text(), str(path)) or {}
        except YAMLSyntaxError as error:
            raise ConfigError(str(error)) from None
        if not isinstance(source, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(source).__name__}")
        if STUDY_SPEC_KEYS & set(map(str, source)) and not set(SECTIONS) & set(map(str, source)):
            raise ConfigError(f"{path} is a study spec, not a pipeline config; run it with `wsss study run {path}`")
    nested = nest_dotted(source)
    for item in overrides or []:
        nested = merge_dotted(nested, parse_override(item))
    return _build(nested)


def parse_override(item: str) -> dict[str, Any]:
    """"section.key=value" (value in YAML, numbers in any notation) -> {key: value}."""
    key, sep, text = item.partition("=")
    if not sep or "." not in key.strip():
        raise ConfigError(f"override {item!r} is invalid; allowed: section.key=value")
    try:
        return {key.strip(): load_yaml(text, f"override {item!r}")}
    except YAMLSyntaxError as error:
        raise ConfigError(f"{error}; allowed: section.key=value with a YAML value") from None


def config_to_dict(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict (tuples as lists), YAML/JSON-ready; load_config's inverse."""
    return {name: plain_data(dataclasses.asdict(getattr(config, name))) for name in SECTIONS}


def flatten_config(config: PipelineConfig) -> dict[str, Any]:
    """{"cam.lam": 0.5, "cam.infer_scales": "0.5,1.0", ...}: dotted keys, scalar
    values (sequences joined with commas, None kept) for Parquet columns."""
    flat: dict[str, Any] = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = ",".join(str(v) for v in value) if isinstance(value, list) else value
    return flat


def _build(nested: dict[str, Any]) -> PipelineConfig:
    for name in nested:
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; allowed: {', '.join(SECTIONS)}")
    return PipelineConfig(**{name: build_dataclass(cls, nested.get(name, {}), name) for name, cls in SECTIONS.items()})


def _check_scales(key: str, scales: tuple[float, ...]) -> None:
    _require(len(scales) >= 1 and all(s > 0 for s in scales), key, list(scales), "a non-empty list of numbers > 0")
