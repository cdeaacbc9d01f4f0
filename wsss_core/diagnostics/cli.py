"""`wsss diagnose labels|fsl-pairs|fsl-oracle|seeds CONFIG.yaml [--set key=value ...]`.

`register(subparsers)` adds the command to the top-level `wsss` parser
(study.cli); `python -m wsss_core.diagnostics.cli diagnose ...` works alone.
Each diagnostic prints its report on stdout and its progress on stderr.
Exit codes: 0 done, 1 a training run failed (e.g. the loss diverged), 2 a bad
argument or input (one line on stderr), 128 + N stopped by signal N (SIGINT:
130); finished stages stay in the cache, so a rerun continues.
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from wsss_core.pipeline.config import PipelineConfig

PROG = "wsss diagnose"
CACHE_HELP = ("cache folder: stages read from and added to <cache>/stages, generated data in <cache>/data "
              "(default: $WSSS_CACHE, else ~/.cache/wsss)")
SET_HELP = "override a config value, e.g. --set cam.lam=0.5 (YAML value; repeatable; default: none)"

LABELS = """\
How good the labels each stage hand-off trains on are, on the train split.

Measures: stages 1-2 of CONFIG run (or are read from the stage cache), and the
labels each later stage learns from are scored against the train split's
ground-truth masks. CAM -> AffinityNet: the confident CRF labels (psa's rule,
cam.crf_alpha_low / crf_alpha_high): coverage (share of pixels labelled),
precision (share of labelled pixels right; background and foreground apart)
and recall (share of each ground-truth region labelled right). AffinityNet ->
DeepLab: the random-walk labels' train mIoU next to the CAM pseudo-labels'.
A later stage can do no better than its labels: where it loses, this says
which hand-off to mend.

Prints: the config, the pixels scored, then one line per hand-off.

Takes: as long as `wsss pipeline run` takes for stages 1-2 of CONFIG (minutes
for the demo config on a laptop CPU); seconds when the cache holds them, e.g.
after a study with the same settings (--cache <storage>/_cache).
"""

FSL_PAIRS = """\
Whether a data set meets FSL's premise: how Eq. 12's sign splits its pixel pairs.

Measures: FSL (Eqs. 9-12) pulls together nearby pixels of close colour (f < 0)
and pushes apart those whose colours differ (f > 0). It helps where pixels of
one class are close in colour and pixels of different classes are not. Over the
ground-truth masks of --split, at the CAM stage's map size (cam.crop_size,
output_stride, fsl_resize) with cam.fsl_sigma_init and fsl_mu_init: for pixel
pairs within one object class, within the background and across classes, the
Gaussian-weighted (Eq. 10) mean of f, the share of weight pushed apart and the
pair type's share of all weight.

Prints: the geometry and the colour difference where f changes sign, then one
line per pair type. Within-class means near -1 and a cross-class mean near +1
are what FSL needs; a background mean well above 0 means FSL splits the
background into pieces.

Takes: no training; seconds for the demo config, minutes for VOC val at the
paper's geometry.
"""

FSL_ORACLE = """\
Whether FSL's objective favours the true contours, and how far the CAM network follows it.

Measures, on the val split at the CAM stage's map size: L_fs (Eq. 9) of the
ground truth and of the label-conditioned CAMs of stage 1 trained with FSL off
and on (--lam, --seed); contour F and mIoU of both networks' pseudo-labels and
of the FSL-off CAM after minimising L_fs + beta * KL(CAM || map) directly over
the map (Adam, --steps per image, each --betas). If the minimised map scores
better than the FSL-on network, FSL's objective is right and the network does
not follow it. --start blurred-truth trains nothing: the ground truth blurred
by --blur map cells is the start (FSL's premise on the photos alone).

Prints: the setting, mean val L_fs per map (lower is what FSL asks for), then
contour F and mIoU (percent) per label map.

Takes: two CAM stages of CONFIG (--jobs at a time; read from the cache when
there) plus --steps optimiser steps per val image and beta: minutes for the
demo config; --start blurred-truth only the optimisation.
"""

SEEDS = """\
FSL on - off at the CAM stage, per lambda, against the spread over seeds.

Measures: stage 1 of CONFIG trains for every --seeds x --lambdas x FSL off/on
(2 x seeds x lambdas runs). Per run: val mIoU and contour F, the foreground
classes never predicted (val IoU below 1%), and those whose CAM peaks off the
object in most val images (pointing game). Per lambda: the FSL on - off
difference in val contour F and mIoU, its mean over seeds, its standard
deviation (ddof 1) and the seeds where it is positive. A one-seed comparison
(e.g. `make demo`) means little when the spread is as large as the difference.

Prints: one line per run as it finishes, then the per-lambda summary.

Takes: 2 x seeds x lambdas CAM stages of CONFIG, --jobs at a time, one thread
each (runs already in the cache are read): the defaults train 18, half an
hour or more for the demo config on 2 cores.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `diagnose` and its four diagnostics to a parent parser's subcommands."""
    diagnose = subparsers.add_parser(
        "diagnose", help="research diagnostics of a pipeline config (label quality, FSL's premise, seed spread)",
        description="Research diagnostics of a pipeline config. Each prints a report on stdout; "
                    "`wsss diagnose DIAGNOSTIC --help` says what it measures, prints and costs. "
                    "Exit codes: 0 done, 1 a training run failed, 2 a bad argument or input, 130 stopped by Ctrl-C "
                    "(finished stages stay in the cache; a rerun continues).")
    _one_line_errors(diagnose)
    commands = diagnose.add_subparsers(dest="diagnose_command", required=True, metavar="DIAGNOSTIC")

    _add(commands, "labels", "score the labels each stage hand-off trains on (train split)", LABELS, run_labels)

    pairs = _add(commands, "fsl-pairs", "how FSL's Eq. 12 splits a data set's ground-truth pixel pairs", FSL_PAIRS,
                 run_fsl_pairs)
    pairs.add_argument("--split", choices=("train", "val"), default="val",
                       help="the split whose masks are counted (default: val)")

    oracle = _add(commands, "fsl-oracle", "whether FSL's objective favours the true contours, and the CAMs follow it",
                  FSL_ORACLE, run_fsl_oracle)
    oracle.add_argument("--start", choices=("cam", "blurred-truth"), default="cam",
                        help="the maps to minimise from: the FSL-off CAM (trains stage 1 twice) or the ground truth "
                             "blurred by --blur (no training) (default: cam)")
    oracle.add_argument("--blur", type=_number(0, inclusive=False), default=1.5,
                        help="Gaussian std in map cells for --start blurred-truth (default: 1.5)")
    oracle.add_argument("--lam", type=float, default=0.5, help="cam.lam of both CAM runs (default: 0.5)")
    oracle.add_argument("--seed", type=_integer(0), default=0, help="runtime.seed of both CAM runs (default: 0)")
    oracle.add_argument("--betas", type=_number(0), nargs="+", default=[1.0, 0.3, 0.1], metavar="BETA",
                        help="weights of the KL anchor to the start (default: 1 0.3 0.1)")
    oracle.add_argument("--steps", type=_integer(1), default=150, help="Adam steps per image and beta (default: 150)")
    oracle.add_argument("--jobs", type=_integer(1), default=2,
                        help="CAM runs at a time, one thread each; 1 runs them in this process (default: 2)")

    seeds = _add(commands, "seeds", "FSL on - off at the CAM stage per lambda, against the spread over seeds", SEEDS,
                 run_seeds)
    seeds.add_argument("--seeds", type=_integer(0), nargs="+", default=[0, 1, 2], metavar="SEED",
                       help="runtime.seed values, distinct (default: 0 1 2)")
    seeds.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5, 1.0], metavar="LAMBDA",
                       help="cam.lam values, distinct (default: 0 0.5 1)")
    seeds.add_argument("--jobs", type=_integer(1), default=2,
                       help="CAM runs at a time, one thread each; 1 runs them in this process (default: 2)")


def run_labels(args: argparse.Namespace) -> int:
    from wsss_core.diagnostics.label_quality import label_quality

    config, cache = _inputs(args)
    return _report(args, lambda: label_quality(config, cache, progress=not args.quiet).lines())


def run_fsl_pairs(args: argparse.Namespace) -> int:
    from wsss_core.cache_dir import DATA_FOLDER
    from wsss_core.diagnostics.fsl_pairs import pair_statistics

    config, cache = _inputs(args)
    return _report(args, lambda: pair_statistics(config, args.split, cache / DATA_FOLDER, not args.quiet).lines())


def run_fsl_oracle(args: argparse.Namespace) -> int:
    from wsss_core.diagnostics.cam_runs import cam_overrides
    from wsss_core.diagnostics.fsl_oracle import OracleSettings, fsl_oracle

    _, cache = _inputs(args, [cam_overrides(args.lam, fsl, args.seed) for fsl in (False, True)])
    settings = OracleSettings(args.start, args.blur, args.lam, args.seed, tuple(args.betas), args.steps, args.jobs)
    return _report(args, lambda: fsl_oracle(args.config, args.overrides, settings, cache, progress=not args.quiet,
                                            announce=_progress if not args.quiet else _silent).lines())


def run_seeds(args: argparse.Namespace) -> int:
    from wsss_core.cache_dir import DATA_FOLDER
    from wsss_core.diagnostics.cam_runs import cam_overrides
    from wsss_core.diagnostics.seeds import HEADER, planned_runs, seed_runs, spread_lines

    for option, values in (("--seeds", args.seeds), ("--lambdas", args.lambdas)):
        if len(set(values)) != len(values):
            return _fail(f"{option}={' '.join(map(str, values))} is invalid; allowed: distinct values", 2)
    config, cache = _inputs(args, [cam_overrides(lam, fsl, seed) for lam, fsl, seed in
                                   planned_runs(args.seeds, args.lambdas)])

    def report() -> list[str]:
        from wsss_core.data import build_dataset

        names = build_dataset(config.data, "val", cache_dir=cache / DATA_FOLDER).class_names
        build_dataset(config.data, "train", cache_dir=cache / DATA_FOLDER)
        total = len(planned_runs(args.seeds, args.lambdas))
        if not args.quiet:
            _progress(f"training {total} CAM stages of {args.config}, {min(args.jobs, total)} at a time")
        print(HEADER, flush=True)
        runs = []
        for run in seed_runs(args.config, args.overrides, args.seeds, args.lambdas, cache, args.jobs):
            runs.append(run)
            print(run.line(names), flush=True)
        print()
        return spread_lines(runs)

    return _report(args, report)


def _add(commands: argparse._SubParsersAction, name: str, summary: str, description: str,
         func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A diagnostic's parser with the arguments every diagnostic takes."""
    parser = commands.add_parser(name, help=summary, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _one_line_errors(parser)
    parser.add_argument("config", help="pipeline config YAML (e.g. search_spaces/pipelines/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR", help=CACHE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines on stderr (default: off)")
    parser.set_defaults(func=func)
    return parser


def _inputs(args: argparse.Namespace, variants: Sequence[list[str]] = ()) -> tuple[PipelineConfig, Path]:
    """(CONFIG with --set, the cache folder), each run's `variants` of the
    overrides checked too; a bad one exits 2 with one line."""
    from wsss_core.cache_dir import default_cache_dir
    from wsss_core.pipeline.config import ConfigError, load_config
    from wsss_core.pipeline.preflight import check_folder

    try:
        config = load_config(args.config, args.overrides)
        for variant in variants:
            load_config(config, variant)
        cache = check_folder(args.cache if args.cache is not None else default_cache_dir(), "--cache")
    except ConfigError as error:
        raise SystemExit(_fail(str(error), 2)) from None
    return config, cache


def _report(args: argparse.Namespace, report: Callable[[], list[str]]) -> int:
    """Print the config line and the report; every failure is one line on stderr."""
    from wsss_core.data import DataError
    from wsss_core.pipeline.config import ConfigError

    print(f"config: {args.config}" + "".join(f" --set {item}" for item in args.overrides), flush=True)
    try:
        lines = report()
    except (ConfigError, DataError, FileNotFoundError) as error:
        return _fail(str(error), 2)
    except FloatingPointError as error:
        return _fail(str(error), 1)
    except KeyboardInterrupt as error:  # SIGINT, or the pipeline's Interrupted (SIGINT/SIGTERM, with .signum)
        signum = getattr(error, "signum", signal.SIGINT)
        return _fail("stopped; finished stages are in the cache and a rerun continues from them", 128 + signum)
    for line in lines:
        print(line, flush=True)
    return 0


def _integer(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: an integer >= {low}")
        return value
    return parse


def _number(low: float, inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not (value >= low if inclusive else value > low):
            bound = f"{'>=' if inclusive else '>'} {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: a number {bound}")
        return value
    return parse


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """A usage error is one line on stderr naming the bad value, and exit code 2."""
    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: {message}\n")
    parser.error = error  # type: ignore[method-assign]


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    """Progress dropped (--quiet)."""


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
