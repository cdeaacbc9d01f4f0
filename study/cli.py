"""`wsss`: the command line of wsss-study.

    wsss data synth --out DIR                  (wsss_core.data.cli)
    wsss pipeline run CONFIG.yaml ...          (wsss_core.pipeline.cli)
    wsss diagnose DIAGNOSTIC CONFIG.yaml ...   (wsss_core.diagnostics.cli)
    wsss study run SPEC.yaml [--set KEY=VALUE ...] [--grid KEY=A,B,... ...] [--address auto|ray://...]
                   [--storage DIR|URI] [--name NAME] [--no-dashboard] [--track TRACKER]
    wsss study status NAME | resume NAME | list [--storage DIR|URI]
    wsss report STUDY_DIR                      (analysis.cli)

Subcommands owned by other packages are imported only when invoked, so
`wsss --help` stays fast and works even if one of them fails to import.
Every leaf parser sets ``func`` (args -> exit code). Exit codes of `study
run`/`resume`: 0 every trial completed, 1 some trial failed (one line each
on stderr naming the cause), 2 a bad input (spec, name, data, folders), 3
the study stopped (Ctrl-C, a lost driver) with trials not finished and none
failed: `wsss study resume` continues it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from study.runner import StudyLocation

EXTERNAL_COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("wsss_core.data.cli", "prepare data sets (synthetic VOC-layout set)"),
    "diagnose": ("wsss_core.diagnostics.cli", "research diagnostics of a pipeline config (labels, FSL, seed spread)"),
    "pipeline": ("wsss_core.pipeline.cli", "run the three-stage pipeline once"),
    "report": ("analysis.cli", "HTML report and tables of a study's Parquet results"),
}
DEFAULT_STORAGE_ENV = "WSSS_STORAGE"
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray for the driver of a `ray job submit` job."""
FAILED, BAD_INPUT, UNFINISHED = 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wsss` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        return _unrecognized(parser, args, extra)
    return int(args.func(args) or 0)


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    """Hydra's bare KEY=VALUE after `wsss study run SPEC` names the two flags that
    say it (one line, exit 2); anything else is argparse's usage error."""
    if getattr(args, "study_command", None) == "run" and "=" in extra[0] and not extra[0].startswith("-"):
        return _fail(f"wsss study run: {extra[0]!r} is not an argument; allowed: --set {extra[0]} (the same value "
                     f"in every trial) or --grid {extra[0]} (a sweep over comma-separated values)")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return BAD_INPUT


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; only the external command named in `argv` is imported."""
    parser = argparse.ArgumentParser(prog="wsss", description="Hyperparameter studies of weakly-supervised segmentation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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

    name_help = "study name: the folder <storage>/<name> (letters, digits, '-', '_', '.')"
    address_help = ("Ray cluster: auto, HOST:PORT of its head, or ray://host:port (default: $RAY_ADDRESS when set, "
                    "as in a `ray job submit` job, else start a local Ray sized to this machine)")
    quiet_help = "no Tune progress table or trial tracebacks; failed trials still get one line each (default: off)"
    dashboard_help = ("start the local Ray without its dashboard (default: the dashboard on 127.0.0.1, URL printed; "
                      "a cluster's driver uses the cluster's)")

    run = actions.add_parser(
        "run", help="run a study spec",
        description="Validate the spec and every data configuration it uses, then run every trial on Ray Tune "
                    "and print the status table. Exit code 0: every trial completed; 1: some trial failed "
                    "(one line each on stderr); 2: a bad spec, name, data set or folder (nothing is run); "
                    "3: stopped (Ctrl-C) with trials not finished, none failed (`wsss study resume` continues).")
    run.add_argument("spec", help="study spec YAML (see search_spaces/studies/)")
    run.add_argument("--storage", default=default_storage, help=storage_help)
    run.add_argument("--name", help="study name, the folder <storage>/<name> (default: the spec's name)")
    run.add_argument("--address", help=address_help)
    run.add_argument("--cache", help="pipeline stage cache every node can reach (default: <storage>/_cache)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override the spec for every trial: a pipeline key (data.root=/data/VOC2012, cam.epochs=1; "
                          "a searched key is pinned), a setting (resources.gpus=0.5, search.num_samples=8) or "
                          "seeds=[0,1]; YAML value; repeatable (default: none)")
    run.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=A,B,...",
                     help="sweep a pipeline key over these YAML values, replacing its axis or fixed value "
                          "(e.g. --grid cam.lam=0,0.5,1); repeatable (default: none)")
    run.add_argument("--quiet", action="store_true", help=quiet_help)
    run.add_argument("--no-dashboard", dest="dashboard", action="store_false", help=dashboard_help)
    run.add_argument("--track", action="append", default=[], metavar="TRACKER",
                     help="also log to wandb, mlflow, tensorboard or comet (repeat, or a comma list; "
                          "options in the spec's `tracking:`, see docs/tracking.md)")
    run.set_defaults(func=_run)

    resume = actions.add_parser(
        "resume", help="continue a study whose driver died",
        description="Resume unfinished trials from their checkpoints and start those never started; completed "
                    "and failed trials stay as they are. Exit codes as for `wsss study run`.")
    resume.add_argument("name", help=name_help)
    resume.add_argument("--storage", default=default_storage, help=storage_help)
    resume.add_argument("--address", help=address_help)
    resume.add_argument("--quiet", action="store_true", help=quiet_help)
    resume.add_argument("--no-dashboard", dest="dashboard", action="store_false", help=dashboard_help)
    resume.set_defaults(func=_resume)

    status = actions.add_parser("status", help="table of a study's trials")
    status.add_argument("name", help=name_help)
    status.add_argument("--storage", default=default_storage, help=storage_help)
    status.set_defaults(func=_status)

    listing = actions.add_parser("list", help="the studies in a storage")
    listing.add_argument("--storage", default=default_storage, help=storage_help)
    listing.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from study.runner import StudyError, locate, run_study
    from study.spec import SpecError, check_study_name, load_spec, num_trials
    from study.tracking import with_trackers

    try:
        spec = with_trackers(load_spec(args.spec, sets=args.sets, grids=args.grids), args.track)
        name = spec.name if args.name is None else check_study_name(args.name, "--name")
        _check_local_folder(args.storage, "--storage")
        _check_local_folder(args.cache, "--cache")
        _check_job_storage(args.storage)
    except SpecError as error:
        return _fail(f"wsss study run: {error}")
    location = locate(args.storage, name)
    print(f"study {location.name}: {num_trials(spec)} trials, results in {location.results}", flush=True)
    if spec.search.storage:
        print(f"Optuna storage: {spec.search.storage} (live view: optuna-dashboard {spec.search.storage})", flush=True)
    _quiet_tune(args.quiet)
    start = time.perf_counter()
    try:
        table = run_study(
            spec, storage=location.storage, name=location.name, address=args.address,
            cache_dir=args.cache, verbose=0 if args.quiet else 1, dashboard=args.dashboard,
        )
    except StudyError as error:
        return _fail(f"wsss study run: {error}")
    return _summary(location, table, time.perf_counter() - start)


def _resume(args: argparse.Namespace) -> int:
    from study.runner import StudyError, locate, resume_study
    from study.spec import SpecError, check_study_name

    try:
        _check_job_storage(args.storage)
        location = locate(args.storage, check_study_name(args.name, "NAME"))
    except SpecError as error:
        return _fail(f"wsss study resume: {error}")
    _quiet_tune(args.quiet)
    start = time.perf_counter()
    try:
        table = resume_study(location.name, storage=location.storage, address=args.address,
                             verbose=0 if args.quiet else 1, dashboard=args.dashboard)
    except StudyError as error:
        return _fail(f"wsss study resume: {error}")
    return _summary(location, table, time.perf_counter() - start)


def _status(args: argparse.Namespace) -> int:
    from study.runner import StudyError, format_table, study_status
    from study.spec import SpecError, check_study_name

    try:
        print(format_table(study_status(check_study_name(args.name, "NAME"), storage=args.storage)))
    except (StudyError, SpecError) as error:
        return _fail(f"wsss study status: {error}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from study.runner import format_table, list_studies

    print(format_table(list_studies(args.storage)))
    return 0


def _summary(location: StudyLocation, table: list[dict], seconds: float) -> int:
    """Print the table and a summary; one stderr line per failed trial and one
    for trials not finished (interrupted or never started), naming the resume
    command. Exit code 0 when every trial completed, FAILED when one failed,
    else UNFINISHED when one is not finished."""
    from study.runner import format_table, planned_trials

    print(format_table(table))
    planned = planned_trials(location)
    completed = sum(row["state"] == "TERMINATED" for row in table)
    failed = [row for row in table if row["state"] == "ERROR"]
    unfinished = planned - completed - len(failed)
    print(f"{completed} of {planned} trials completed, {len(failed)} failed, {unfinished} not finished, "
          f"in {seconds:.0f}s; Parquet results: {location.results}")
    print(f"read them with: pyarrow.dataset.dataset({location.results!r})")
    for row in failed:
        print(f"trial {row['trial']} failed: {row['error'] or 'no recorded error'}", file=sys.stderr)
    if unfinished:
        print(f"study {location.name} stopped with {unfinished} of {planned} trials not finished; continue it with: "
              f"wsss study resume {location.name} --storage {location.storage}", file=sys.stderr)
    return FAILED if failed else UNFINISHED if unfinished else 0


def _check_local_folder(path: str | None, option: str) -> None:
    """SpecError when a local `path` exists and is not a folder (URIs are not checked)."""
    from study.spec import SpecError

    if path is not None and "://" not in path and os.path.exists(path) and not os.path.isdir(path):
        raise SpecError(f"{option}={path!r} is a file; allowed: a folder (created if missing) or a URI")


def _check_job_storage(storage: str) -> None:
    """SpecError for a relative --storage in a `ray job submit` driver (Ray sets
    RAY_JOB_CONFIG_JSON_ENV_VAR for it): its working directory is a temporary copy."""
    from study.spec import SpecError

    if os.environ.get(RAY_JOB_ENV) and "://" not in storage and not os.path.isabs(os.path.expanduser(storage)):
        raise SpecError(f"--storage={storage!r} is relative in a Ray job, whose working directory is a temporary "
                        "copy; allowed: an absolute folder every node reaches, or a URI (s3://, gs://)")


def _quiet_tune(quiet: bool) -> None:
    """With --quiet neither Tune prints each trial's traceback (the summary
    names the cause) nor Optuna its info lines."""
    if quiet:
        import optuna

        os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _version() -> str:
    try:
        return importlib.metadata.version("wsss-study")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
