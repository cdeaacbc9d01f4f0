"""Times the paper's VOC preset per stage with runtime.amp off and on: training
images/s, wall seconds and peak device memory.

Target, on a CUDA GPU: with AMP at least 1.3x the float32 training images/s
in every stage, in less peak memory. On a CPU AMP does nothing (same code
path, float32), and the script only checks that the preset runs.

    python -m bench.paper_preset [--steps N] [--device auto|cuda|cpu] [--set key=value ...]

The preset (search_spaces/pipelines/paper_voc.yaml: ResNet-38d at output
stride 8, 448 px crops, the authors' batch sizes, the siamese CAM network with
PCM and FSL, the 64-step random walk, DeepLab-v1 with multi-scale inference and
CRF) runs on the synthetic VOC-layout set with random-init weights
(`weights: null`): speed and memory do not depend on the weights, so neither
VOC nor the ImageNet ResNet-38d file is needed, and the mIoU printed is not the
paper's. Each stage trains for about --steps optimiser steps (whole epochs of
--train-images images); --val-images val images are evaluated. Each AMP
setting runs with its own fresh temporary cache. Peak memory is
torch.cuda.max_memory_allocated per stage on CUDA (reset between stages) and
not measured on CPU.

On a GPU:
    python -m bench.paper_preset --device cuda
Small on CPU (checks that the script runs, in minutes on 2 cores):
    python -m bench.paper_preset --device cpu --steps 2 --train-images 8 --val-images 2 \\
        --set cam.crop_size=128 --set cam.resize_long=[128,160] --set affinity.crop_size=128 \\
        --set segmentation.crop_size=128 --set segmentation.resize_long=[128,160] \\
        --set cam.infer_scales=[1.0] --set segmentation.infer_scales=[1.0] --set data.synth_size=128 \\
        --set runtime.loader_workers=0
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import torch

from wsss_core.pipeline import STAGES, ConfigError, load_config, run_pipeline

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "search_spaces" / "pipelines" / "paper_voc.yaml"


def preset_overrides(args: argparse.Namespace) -> list[str]:
    """The preset on synthetic data with random-init weights, sized to --steps per stage."""
    base = load_config(PRESET)
    epochs = {stage: math.ceil(args.steps * getattr(base, stage).batch_size / args.train_images) for stage in STAGES}
    return [
        "data.kind=synthetic", "data.root=null", "data.train_split=train", "data.val_split=val",
        f"data.synth_num_train={args.train_images}", f"data.synth_num_val={args.val_images}",
        *[f"{stage}.weights=null" for stage in STAGES],
        *[f"{stage}.epochs={epochs[stage]}" for stage in STAGES],
        "eval.splits=[val]", "eval.bg_thresholds=[]", "eval.overlays=0",
        f"runtime.device={args.device}",
        *args.set,
    ]


def run(overrides: list[str], amp: bool) -> list[tuple[str, float, float, float, float | None, float]]:
    """One pipeline run in a fresh cache -> per stage (name, train img/s, train s, wall s, peak GiB, val mIoU)."""
    cuda = load_config(PRESET, overrides).runtime.device != "cpu" and torch.cuda.is_available()
    peaks: dict[str, float | None] = {}

    def on_stage_end(result) -> None:
        peaks[result.stage] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="wsss-bench-paper-") as tmp:
        result = run_pipeline(PRESET, Path(tmp) / "run", cache_dir=Path(tmp) / "cache", progress=False,
                              overrides=[*overrides, f"runtime.amp={str(amp).lower()}"], on_stage_end=on_stage_end)
    rows = []
    for stage in result.stages:
        images, seconds = stage.extra.get("train_images", 0), stage.extra.get("train_seconds", 0.0)
        rows.append((stage.stage, images / seconds if seconds else math.nan, seconds, stage.seconds,
                     peaks.get(stage.stage), stage.metrics["val"]["miou"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per stage, rounded up to whole epochs "
                        "(default: 100)")
    parser.add_argument("--train-images", type=int, default=80, help="synthetic train images (default: 80)")
    parser.add_argument("--val-images", type=int, default=16, help="synthetic val images evaluated (default: 16)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                        help="runtime.device (default: auto, CUDA when available)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further config override, applied to both runs (repeatable)")
    args = parser.parse_args()
    for name in ("steps", "train_images", "val_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid; allowed: an integer >= 1")
    overrides = preset_overrides(args)
    try:
        load_config(PRESET, overrides)
    except ConfigError as error:
        parser.error(str(error))
    device = torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"config: {PRESET.name} on synthetic data, random-init weights, {args.steps}+ steps per stage, "
          f"device {device}")
    print(f"{'amp':5s} {'stage':13s} {'train img/s':>12s} {'train s':>8s} {'wall s':>8s} {'peak GiB':>9s} "
          f"{'val mIoU':>9s}")
    for amp in (False, True):
        start = time.perf_counter()
        for stage, rate, train_s, wall_s, peak, miou in run(overrides, amp):
            peak_text = f"{peak:9.2f}" if peak is not None else f"{'-':>9s}"
            print(f"{'on' if amp else 'off':5s} {stage:13s} {rate:12.1f} {train_s:8.1f} {wall_s:8.1f} {peak_text} "
                  f"{miou:9.4f}")
        print(f"{'on' if amp else 'off':5s} {'total':13s} {'':12s} {'':8s} {time.perf_counter() - start:8.1f}")


if __name__ == "__main__":
    main()
