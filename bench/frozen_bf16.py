"""Times `runtime.frozen_bf16` on the CPU: a frozen backbone's fixed maps under
bfloat16 autocast against float32, for the demo's stages.

Target: ratio (float32 time / bfloat16 time) >= 1.5 in every stage on a CPU
with native bfloat16 instructions (AVX-512 BF16 or AMX), with the bfloat16
maps within 10% (relative L2) of the float32 ones. Without those instructions
oneDNN emulates bfloat16 and the ratio falls below 1: a run with
runtime.frozen_bf16 warns there (wsss_core.pipeline.native_bf16).

Times the fixed part each stage of `search_spaces/pipelines/demo.yaml` computes
on a frozen EfficientNet-Lite0 (CAM network and DeepLab: the trunk at their
224 px crops, stride 8; AffinityNet: the whole backbone at its 96 px crops),
batch 8, channels_last, one thread by default. Both precisions are timed in the
same run, alternating, best of `--repeats`. Also prints how far the bfloat16
maps are from the float32 ones (relative L2 of the last map, random inputs)
and whether this CPU reports native bfloat16 instructions.

    python -m bench.frozen_bf16 [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import torch

from bench.speed_timing import DEMO, ms_per_image, speed_arguments
from wsss_core.models import build_backbone
from wsss_core.pipeline.config import load_config
from wsss_core.pipeline.native_bf16 import read_cpu_bf16_flags
from wsss_core.pipeline.stage_cam import build_cam_net
from wsss_core.pipeline.stage_segmentation import build_deeplab
from wsss_core.pipeline.training import freeze_as_configured

TARGET_RATIO, TARGET_L2 = 1.5, 0.1
BATCH = 8
NUM_CLASSES = 6


def _cpu_bf16_flags() -> str:
    """The CPU's native bfloat16 flags from /proc/cpuinfo ('none'; 'unknown' when unreadable)."""
    flags = read_cpu_bf16_flags()
    return "unknown" if flags is None else ", ".join(flags) or "none"


def main() -> None:
    args = speed_arguments(__doc__)
    cfg = load_config(DEMO)
    networks = {
        "cam": (build_cam_net(cfg.cam, NUM_CLASSES, 0).backbone, cfg.cam),
        "affinity": (build_backbone(cfg.affinity.backbone, cfg.affinity.weights, cfg.affinity.output_stride),
                     cfg.affinity),
        "deeplab": (build_deeplab(cfg.segmentation, NUM_CLASSES, cfg.segmentation.weights).backbone, cfg.segmentation),
    }
    print(f"CPU bfloat16 instructions: {_cpu_bf16_flags()}; {args.threads} thread(s), batch {BATCH}, channels_last")
    print(f"{'stage':9s} {'fp32 ms/img':>12s} {'bf16 ms/img':>12s} {'ratio':>6s} {'rel. L2':>8s}  "
          f"(target with native bfloat16: ratio >= {TARGET_RATIO:g}, rel. L2 <= {TARGET_L2:g})")
    for name, (backbone, config) in networks.items():
        freeze_as_configured(backbone, config)
        backbone.to(memory_format=torch.channels_last)
        x = torch.rand(BATCH, 3, config.crop_size, config.crop_size).contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                backbone.compute_fixed_in(dtype)
                with torch.no_grad():
                    times[precision].append(ms_per_image(lambda: backbone.features(x), BATCH))
        with torch.no_grad():
            exact = backbone.compute_fixed_in(None).features(x)[-1]
            rounded = backbone.compute_fixed_in(torch.bfloat16).features(x)[-1]
        error = float((rounded - exact).norm() / exact.norm())
        fp32, bf16 = min(times["fp32"]), min(times["bf16"])
        print(f"{name:9s} {fp32:12.1f} {bf16:12.1f} {fp32 / bf16:6.2f} {error:8.4f}")


if __name__ == "__main__":
    main()
