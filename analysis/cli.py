"""`wsss report STUDY_DIR [STUDY_DIR ...] -o report.html [--watch]`.

Without --watch it also prints the paper's findings checked on each study,
one line per finding: "finding: difference (spread) -> verdict".

`register(subparsers)` adds the command to the `wsss` CLI; the parsed
namespace carries `func(args) -> exit code`. `python -m analysis.cli report ...`
runs it without the rest of the CLI (no torch, no Ray).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from analysis.findings import findings_lines
from analysis.report import load_studies, watch_report, write_report
from analysis.store import ResultsError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `report` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "report", help="write one self-contained HTML report of one or more studies",
        description="Figures (lambda curves, study views) and the paper's tables from the Parquet results of "
                    "one or more study folders, in one HTML file that opens offline; then prints the paper's "
                    "findings checked on each study, one line each.")
    parser.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR", help="study folder(s) holding results/")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    parser.add_argument("--watch", action="store_true", help="regenerate whenever results change, until Ctrl-C")
    parser.add_argument("--interval", type=_positive, default=5.0, help="seconds between polls with --watch (default 5)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute `wsss report`; user errors are one line on stderr and exit code 2."""
    if os.path.isdir(args.output):
        print(f"wsss report: -o {args.output!r} is a folder; allowed: an HTML file path such as "
              f"{os.path.join(args.output, 'report.html')}", file=sys.stderr)
        return 2
    try:
        if args.watch:
            try:
                watch_report(args.study_dirs, args.output, interval=args.interval)
            except KeyboardInterrupt:
                print(f"stopped watching; last report at {args.output}")
            return 0
        path = write_report(args.study_dirs, args.output)
        studies = load_studies(args.study_dirs)
    except ResultsError as error:
        print(f"wsss report: {error}", file=sys.stderr)
        return 2
    print(f"report written to {path.resolve()}")
    for study in studies:
        print(f"The paper's findings, checked on {study.name}:")
        print("\n".join(findings_lines(study.frame)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--interval must be > 0 seconds, got {text}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
