"""`wsss`: the command line of wsss-study.

    wsss data synth --out DIR                  (wsss_core.data.cli)
    wsss pipeline run CONFIG.yaml ...          (wsss_core.pipeline.cli)
    wsss study run SPEC.yaml [--address auto|ray://...] [--storage DIR|URI] [--name NAME]
    wsss study status NAME | resume NAME | list [--storage DIR|URI]
    wsss report STUDY_DIR                      (analysis.cli)

Subcommands owned by other packages are imported only when invoked, so
`wsss --help` stays fast and works even if one of them fails to import.
Every leaf parser sets ``func`` (args -> exit code).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from study.runner import StudyLocation

EXTERNAL_COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("wsss_core.data.cli", "prepare data sets (synthetic VOC-layout set)"),
    "pipeline": ("wsss_core.pipeline.cli", "run the three-stage pipeline once"),
    "report": ("analysis.cli", "HTML report and tables of a study's Parquet results"),
}
DEFAULT_STORAGE_ENV = "WSSS_STORAGE"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wsss` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; only the external command named in `argv` is imported."""
    parser = argparse.ArgumentParser(prog="wsss", description="Hyperparameter studies of weakly-supervised segmentation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    invoked = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        if name == invoked:
            _register_external(commands, name, module, help_text)
        else:
            commands.add_parser(name, help=help_text)
    _register_study(commands)
    return parser


def _register_external(commands: argparse._SubParsersAction, name: str, module: str, help_text: str) -> None:
    try:
        importlib.import_module(module).register(commands)
    except (ImportError, AttributeError) as error:
        reason = f"{error}".splitlines()[0]
        unavailable = commands.add_parser(name, help=help_text)
        unavailable.add_argument("rest", nargs=argparse.REMAINDER)
        unavailable.set_defaults(func=lambda args: _fail(f"wsss {name}: unavailable ({module}: {reason})"))


def _register_study(commands: argparse._SubParsersAction) -> None:
    study = commands.add_parser("study", help="run, resume and inspect Ray Tune studies")
    actions = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    storage_help = f"folder or URI (s3://, gs://, file://) holding studies (default: ${DEFAULT_STORAGE_ENV} or ./runs)"
    default_storage = os.environ.get(DEFAULT_STORAGE_ENV, "runs")

    run = actions.add_parser("run", help="run a study spec")
    run.add_argument("spec", help="study spec YAML (see search_spaces/)")
    run.add_argument("--storage", default=default_storage, help=storage_help)
    run.add_argument("--name", help="study name (default: the spec's name)")
    run.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    run.add_argument("--cache", help="pipeline stage cache every node can reach (default: <storage>/_cache)")
    run.add_argument("--quiet", action="store_true", help="less Tune output")
    run.set_defaults(func=_run)

    resume = actions.add_parser("resume", help="continue a study whose driver died")
    resume.add_argument("name")
    resume.add_argument("--storage", default=default_storage, help=storage_help)
    resume.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: start a local Ray)")
    resume.add_argument("--quiet", action="store_true", help="less Tune output")
    resume.set_defaults(func=_resume)

    status = actions.add_parser("status", help="table of a study's trials")
    status.add_argument("name")
    status.add_argument("--storage", default=default_storage, help=storage_help)
    status.set_defaults(func=_status)

    listing = actions.add_parser("list", help="the studies in a storage")
    listing.add_argument("--storage", default=default_storage, help=storage_help)
    listing.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from study.runner import StudyError, locate, run_study
    from study.spec import SpecError, load_spec, num_trials

    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        return _fail(f"wsss study run: {error}")
    location = locate(args.storage, args.name or spec.name)
    print(f"study {location.name}: {num_trials(spec)} trials, results in {location.results}", flush=True)
    start = time.perf_counter()
    try:
        table = run_study(
            spec, storage=location.storage, name=location.name, address=args.address,
            cache_dir=args.cache, verbose=0 if args.quiet else 1,
        )
    except StudyError as error:
        return _fail(f"wsss study run: {error}")
    return _summary(location, table, time.perf_counter() - start)


def _resume(args: argparse.Namespace) -> int:
    from study.runner import StudyError, locate, resume_study

    location = locate(args.storage, args.name)
    start = time.perf_counter()
    try:
        table = resume_study(location.name, storage=location.storage, address=args.address, verbose=0 if args.quiet else 1)
    except StudyError as error:
        return _fail(f"wsss study resume: {error}")
    return _summary(location, table, time.perf_counter() - start)


def _status(args: argparse.Namespace) -> int:
    from study.runner import StudyError, format_table, study_status

    try:
        print(format_table(study_status(args.name, storage=args.storage)))
    except StudyError as error:
        return _fail(f"wsss study status: {error}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from study.runner import format_table, list_studies

    print(format_table(list_studies(args.storage)))
    return 0


def _summary(location: StudyLocation, table: list[dict], seconds: float) -> int:
    from study.runner import format_table

    print(format_table(table))
    failed = sum(row["state"] == "ERROR" for row in table)
    print(f"{len(table)} trials ({failed} failed) in {seconds:.0f}s; Parquet results: {location.results}")
    print(f"read them with: pyarrow.dataset.dataset({location.results!r})")
    return 0


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
