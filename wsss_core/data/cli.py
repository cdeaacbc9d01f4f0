"""`wsss data ...` subcommands. study/cli.py calls `register(subparsers)`; each
leaf parser sets ``func`` (args -> exit code), the convention of the `wsss` CLI."""

from __future__ import annotations

import argparse
import os
import sys
import time

from wsss_core.data.synth import SynthParams, write_synthetic_voc


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command (with `data synth`) to a top-level subparsers object."""
    data = subparsers.add_parser("data", help="prepare data sets")
    commands = data.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser(
        "synth", help="write the synthetic VOC-layout data set",
        description="Write a synthetic data set in the PASCAL VOC layout (JPEGImages, SegmentationClass, "
                    "ImageSets/Segmentation/{train,val}.txt, classes.txt, labels.json), read by the same loader "
                    "as real VOC. The same options give the same images.")
    defaults = SynthParams()
    synth.add_argument("--out", required=True, help="output folder; VOC2012/ is created inside (required)")
    synth.add_argument("--seed", type=int, default=defaults.seed,
                       help=f"random seed of the shapes, colours and textures (default: {defaults.seed})")
    synth.add_argument("--num-train", type=int, default=defaults.num_train,
                       help=f"images in the train list (default: {defaults.num_train})")
    synth.add_argument("--num-val", type=int, default=defaults.num_val,
                       help=f"images in the val list (default: {defaults.num_val})")
    synth.add_argument("--size", type=int, default=defaults.size,
                       help=f"image side in pixels (default: {defaults.size})")
    synth.add_argument("--max-objects", type=int, default=defaults.max_objects,
                       help=f"most objects per image (default: {defaults.max_objects})")
    synth.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Write the synthetic set; a bad parameter is one line on stderr and exit code 2."""
    start = time.perf_counter()
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"wsss data synth: --out={args.out!r} is a file; allowed: a folder (created if missing)", file=sys.stderr)
        return 2
    try:
        root = write_synthetic_voc(
            args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
            size=args.size, max_objects=args.max_objects,
        )
    except ValueError as error:
        print(f"wsss data synth: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_train} train + {args.num_val} val images to {root} in {time.perf_counter() - start:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m wsss_core.data.cli data synth --out DIR``."""
    parser = argparse.ArgumentParser(prog="wsss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
