"""What the per-image speed benches share (bench/channels_last.py,
bench/frozen_bf16.py): the demo config, their command line and their timer."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "demo.yaml"


def speed_arguments(doc: str) -> argparse.Namespace:
    """Parse --repeats and --threads (the first line of `doc` is the description) and set torch's threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case, best kept (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as the demo's trials)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def ms_per_image(run: Callable[[], object], images: int) -> float:
    """One warm-up call of `run`, then one timed call; milliseconds per image of its batch of `images`."""
    run()
    start = time.perf_counter()
    run()
    return 1000 * (time.perf_counter() - start) / images
