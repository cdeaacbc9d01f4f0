"""`wsss pipeline run CONFIG.yaml --out DIR [--cache DIR] [--set key=value ...]`.

`register(subparsers)` adds the command to the top-level `wsss` parser
(study.cli); `python -m wsss_core.pipeline.cli pipeline run ...` works alone.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pipeline run` to a parent parser's subcommands."""
    pipeline = subparsers.add_parser("pipeline", help="run the three-stage WSSS pipeline (one trial)")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    run = commands.add_parser("run", help="run all three stages and write metrics.json, overlays and a log")
    run.add_argument("config", help="pipeline config YAML (e.g. search_spaces/pipeline_demo.yaml)")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--cache", default=None, help="stage cache folder (default $WSSS_CACHE or ~/.cache/wsss)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set cam.lam=0.5 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the pipeline; a bad config or data path is one line on stderr, exit 2."""
    from wsss_core.pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
        from wsss_core.pipeline.runner import run_pipeline

        result = run_pipeline(config, args.out, cache_dir=args.cache, progress=not args.quiet)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # e.g. a missing weights file; the traceback is in the log
        print(f"error: {error} (details: {args.out}/pipeline.log)", file=sys.stderr)
        return 2
    for stage, metrics in result.metrics().items():
        hit = " (cache hit)" if metrics["cache_hit"] else ""
        print(f"{stage:13s} val mIoU {metrics['miou']:.4f}  contour F {metrics['contour_f']:.4f}  "
              f"{metrics['seconds']:.1f} s{hit}")
    print(f"wrote {result.out_dir / 'metrics.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
