"""`wsss pipeline run CONFIG.yaml --out DIR [--cache DIR] [--set key=value ...]`.

`register(subparsers)` adds the command to the top-level `wsss` parser
(study.cli); `python -m wsss_core.pipeline.cli pipeline run ...` works alone.
Exit codes: 0 done, 1 the run failed (e.g. the loss diverged), 2 a bad
input (config, data, folders), 128 + N stopped by signal N (SIGINT: 130,
SIGTERM: 143); every failure is one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "wsss pipeline run"
RUN_DESCRIPTION = (
    "Run the three stages (CAM network, AffinityNet + random walk, DeepLab-v1), evaluating each, and write "
    "metrics.json, config.yaml, pipeline.log and overlays/ to --out. Stage outputs are cached by content, so a "
    "rerun of the same command reuses finished stages and resumes an interrupted one from its last epoch "
    "checkpoint. Exit codes: 0 done, 1 run failed, 2 bad input, 130/143 stopped by SIGINT/SIGTERM."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pipeline run` to a parent parser's subcommands."""
    pipeline = subparsers.add_parser("pipeline", help="run the three-stage WSSS pipeline (one trial)")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    run = commands.add_parser(
        "run", help="run all three stages and write metrics.json, overlays and a log (a rerun resumes)",
        description=RUN_DESCRIPTION,
    )
    run.add_argument("config", help="pipeline config YAML (e.g. search_spaces/pipelines/demo.yaml)")
    run.add_argument("--out", required=True, help="output folder (created if missing; required)")
    run.add_argument("--cache", default=None,
                     help="stage cache folder (default: $WSSS_CACHE, else ~/.cache/wsss)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set cam.lam=0.5 --set cam.lr=1e-3 "
                          "(YAML value; repeatable; default: none)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal (default: off)")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the pipeline; every failure is one line on stderr (see the module doc for exit codes)."""
    from wsss_core.data import DataError
    from wsss_core.pipeline.config import ConfigError, load_config
    from wsss_core.pipeline.lifetime import Interrupted
    from wsss_core.pipeline.preflight import check_folder

    log = f"{args.out}/pipeline.log"
    try:
        config = load_config(args.config, args.overrides)
        check_folder(args.out, "--out")
        if args.cache is not None:
            check_folder(args.cache, "--cache")
        from wsss_core.pipeline.runner import run_pipeline

        result = run_pipeline(config, args.out, cache_dir=args.cache, progress=not args.quiet)
    except Interrupted as error:
        return _fail(f"{error}; finished stages are cached and the rerun resumes (log: {log})", 128 + error.signum)
    except (ConfigError, DataError, FileNotFoundError) as error:
        return _fail(str(error), 2)
    except FloatingPointError as error:
        return _fail(f"{error} (details: {log})", 1)
    except ValueError as error:  # e.g. a missing weights file; the traceback is in the log
        return _fail(f"{error} (details: {log})", 2)
    for stage, metrics in result.metrics().items():
        hit = " (cache hit)" if metrics["cache_hit"] else ""
        print(f"{stage:13s} val mIoU {metrics['miou']:.4f}  contour F {metrics['contour_f']:.4f}  "
              f"{metrics['seconds']:.1f} s{hit}")
    print(f"wrote {result.out_dir / 'metrics.json'}")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
