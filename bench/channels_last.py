"""Times `runtime.channels_last` (NHWC) against NCHW on the CPU for the demo's networks.

Target: ratio (NCHW time / NHWC time) >= 1.0 for every network and pass: NHWC
is never slower, which is why the demo turns it on.

Times one training step (forward, backward of the layers that train: the new
ones and, with train_backbone_head, the frozen backbone's head conv) and one
inference forward per image of the CAM network and DeepLab of
`search_spaces/pipelines/demo.yaml` at their training crop and output stride
(224 px, stride 8), batch 8, on one thread by default.
Both layouts are timed in the same run, alternating, best of `--repeats`.

    python -m bench.channels_last [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.*` from any folder

import torch
from torch import nn

from bench.speed_timing import DEMO, ms_per_image, speed_arguments
from wsss_core.pipeline.config import load_config
from wsss_core.pipeline.stage_cam import build_cam_net
from wsss_core.pipeline.stage_segmentation import build_deeplab
from wsss_core.pipeline.training import freeze_as_configured

TARGET_RATIO = 1.0
BATCH = 8
NUM_CLASSES = 6


def _step(model: nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    def run() -> None:
        if train:
            out = model(x)
            logits = out.logits if hasattr(out, "logits") else out
            logits.float().sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return run


def main() -> None:
    args = speed_arguments(__doc__)
    cfg = load_config(DEMO)
    cam, deeplab = build_cam_net(cfg.cam, NUM_CLASSES, 0), build_deeplab(cfg.segmentation, NUM_CLASSES,
                                                                         cfg.segmentation.weights)
    freeze_as_configured(cam.backbone, cfg.cam)
    freeze_as_configured(deeplab.backbone, cfg.segmentation)
    networks = {"cam": (cam, cfg.cam.crop_size), "deeplab": (deeplab, cfg.segmentation.crop_size)}
    print(f"{'network':8s} {'pass':6s} {'NCHW ms/img':>12s} {'NHWC ms/img':>12s} {'ratio':>6s}  "
          f"(target >= {TARGET_RATIO:g})")
    for name, (model, size) in networks.items():
        for train in (True, False):
            model.train(train)
            x = torch.randn(BATCH, 3, size, size)
            layouts = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
            times: dict[str, list[float]] = {layout: [] for layout in layouts}
            for _ in range(args.repeats):
                for layout, memory_format in layouts.items():  # Module.to converts in place
                    layout_x = x.contiguous(memory_format=memory_format)
                    step = _step(model.to(memory_format=memory_format), layout_x, train)
                    times[layout].append(ms_per_image(step, BATCH))
            nchw, nhwc = min(times["nchw"]), min(times["nhwc"])
            print(f"{name:8s} {'train' if train else 'infer':6s} {nchw:12.1f} {nhwc:12.1f} {nchw / nhwc:6.2f}")


if __name__ == "__main__":
    main()
