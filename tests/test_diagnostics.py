"""`wsss diagnose ...` through the CLI on the tiny config: what each diagnostic
prints, and one line with exit code 2 for a bad argument.

The CAM runs share one stage cache: the oracle trains (lambda 0.5, seed 0)
with FSL off and on, the seed spread and the label scores read them from there."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "search_spaces" / "pipelines" / "tiny.yaml")
NUMBER = r"[-+]?\d+\.\d+"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("diagnose-cache"))


def wsss(argv: list[str]) -> int:
    """The exit code of `wsss ARGV` (argparse's exits included)."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


def report(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    """stdout lines of a successful `wsss diagnose ...`; the first names the config. With
    --quiet nothing reaches stderr."""
    assert wsss(["diagnose", *argv]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert not ("--quiet" in argv and err), err
    lines = out.splitlines()
    assert lines[0] == f"config: {TINY}" + "".join(f" --set {item}" for item in argv[argv.index(TINY) + 1:]
                                                   if "=" in item)
    return lines[1:]


def rows(lines: list[str], names: list[str]) -> dict[str, list[float]]:
    """{row name: the numbers on its line} for lines that start (after spaces) with a name."""
    found = {}
    for line in lines:
        for name in names:
            if line.strip().startswith(name) and name not in found:
                found[name] = [float(v) for v in re.findall(NUMBER, line[line.index(name) + len(name):])]
    assert list(found) == names, lines
    return found


def test_fsl_pairs_prints_each_pair_type(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = report(capsys, ["fsl-pairs", TINY, "--cache", cache, "--quiet"])
    assert lines[0].startswith("8 val images, map long side 8, sigma 2, mu 2.5, resize bilinear_corners")
    assert lines[1].split() == ["pairs", "mean", "f", "pushed", "apart", "weight", "share"]
    table = rows(lines[2:], ["object", "background", "different"])
    assert table["object"][0] < table["different"][0]  # the synthetic set meets FSL's premise
    shares = [int(line.split()[-1].rstrip("%")) for line in lines[2:]]
    assert all(-1 <= values[0] <= 1 for values in table.values()) and 99 <= sum(shares) <= 101


def test_fsl_oracle_from_the_cams_scores_both_networks_and_the_minimised_maps(
        cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = report(capsys, ["fsl-oracle", TINY, "--cache", cache, "--steps", "5", "--betas", "1", "0.1",
                            "--jobs", "1"])
    assert lines[0] == "lambda 0.5, seed 0; 8 val images, last map 8 x 8, sigma 2, mu 2.5"
    energy = rows(lines[1:5], ["CAM, FSL off", "CAM, FSL on", "ground truth"])
    assert energy["ground truth"][0] < 0
    scores = rows(lines[5:], ["CAM, FSL off", "CAM, FSL on", "FSL off, map-size round trip",
                              "FSL off, L_fs + 1 KL minimised", "FSL off, L_fs + 0.1 KL minimised"])
    assert all(len(pair) == 2 and all(0 <= v <= 100 for v in pair) for pair in scores.values())


def test_fsl_oracle_from_the_blurred_truth_trains_nothing(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = report(capsys, ["fsl-oracle", TINY, "--cache", cache, "--start", "blurred-truth", "--blur", "1.5",
                            "--steps", "5", "--betas", "0.3"])
    assert lines[0].startswith("ground truth blurred by 1.5 cells; 8 val images")
    energy = rows(lines[1:4], ["ground truth", "blurred ground truth"])
    assert energy["ground truth"][0] < energy["blurred ground truth"][0]  # FSL prefers the sharp truth
    scores = rows(lines[4:], ["ground truth, map-size round trip", "blurred ground truth",
                              "blurred, L_fs + 0.3 KL minimised"])
    assert scores["ground truth, map-size round trip"][0] > scores["blurred ground truth"][0]


def test_seeds_prints_each_run_and_the_spread_of_fsl_on_minus_off(
        cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = report(capsys, ["seeds", TINY, "--cache", cache, "--seeds", "0", "1", "--lambdas", "0.5", "--jobs", "1",
                            "--quiet"])
    assert lines[0].split()[:5] == ["lambda", "FSL", "seed", "val", "mIoU"]
    runs = [line.split() for line in lines[1:5]]
    assert [run[:3] for run in runs] == [["0.5", "off", "0"], ["0.5", "on", "0"], ["0.5", "off", "1"],
                                          ["0.5", "on", "1"]]
    assert lines[5] == "" and lines[6] == "FSL on - off (points), mean over 2 seeds (± std), seeds positive"
    summary = lines[8].split()
    assert summary[0] == "0.5"
    contour_diffs = [float(runs[i + 1][4]) - float(runs[i][4]) for i in (0, 2)]
    assert float(summary[1]) == pytest.approx(sum(contour_diffs) / 2, abs=0.11)  # printed to 0.1 points
    assert summary[2] == "±" and re.fullmatch(r"[0-2]/2", summary[4])


def test_labels_scores_each_hand_off(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With the oracle's FSL-off overrides stage 1 comes from the cache; stage 2 trains."""
    cam_run = ["cam.lam=0.5", "cam.fsl=false", "runtime.seed=0", "runtime.threads=1", "eval.workers=0"]
    lines = report(capsys, ["labels", TINY, "--cache", cache, "--quiet", *[a for s in cam_run for a in ("--set", s)]])
    assert re.fullmatch(r"train split, 16 images, \d+ pixels with a ground-truth class", lines[0])
    assert re.fullmatch(rf"CAM pseudo-labels +train mIoU {NUMBER}", lines[1])
    coverage = re.search(rf"coverage ({NUMBER})  precision ({NUMBER})", lines[2])
    assert coverage and all(0 <= float(v) <= 1 for v in coverage.groups())
    assert re.fullmatch(rf"random-walk labels +train mIoU {NUMBER}", lines[3])


@pytest.mark.parametrize(("argv", "named"), [
    (["nope"], "'nope'"),
    (["seeds", TINY, "--jobs", "0"], "'0' is invalid; allowed: an integer >= 1"),
    (["seeds", TINY, "--seeds", "1", "1"], "--seeds=1 1 is invalid; allowed: distinct values"),
    (["seeds", TINY, "--lambdas", "2"], "cam.lam=2.0 is invalid"),
    (["fsl-oracle", TINY, "--blur", "0"], "'0' is invalid; allowed: a number > 0"),
    (["fsl-oracle", TINY, "--start", "truth"], "'truth'"),
    (["fsl-oracle", TINY, "--set", "cam.bg=threshold"], "cam.bg='threshold' is invalid"),
    (["fsl-pairs", TINY, "--split", "test"], "'test'"),
    (["labels", "missing.yaml"], "config file not found: missing.yaml"),
    (["labels", TINY, "--set", "cam.lamda=1"], "unknown key cam.lamda"),
    (["labels"], "config"),
])
def test_a_bad_argument_is_one_line_and_exit_2(argv: list[str], named: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert wsss(["diagnose", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("wsss diagnose") and named in error, error


def test_a_cache_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert wsss(["diagnose", "fsl-pairs", TINY, "--cache", str(tmp_path / "file")]) == 2
    assert "is a file; allowed: a folder" in capsys.readouterr().err


@pytest.mark.parametrize("diagnostic", ["labels", "fsl-pairs", "fsl-oracle", "seeds"])
def test_help_says_what_each_measures_prints_and_costs(diagnostic: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert wsss(["diagnose", diagnostic, "--help"]) == 0
    text = capsys.readouterr().out
    assert all(part in text for part in ("Measures", "Prints:", "Takes:", "--set", "--cache")), text


def test_wsss_core_with_its_diagnostics_imports_neither_ray_pyarrow_nor_plotly() -> None:
    probe = ("import importlib, pkgutil, sys, wsss_core\n"
             "names = [m.name for m in pkgutil.walk_packages(wsss_core.__path__, 'wsss_core.')]\n"
             "for name in names: importlib.import_module(name)\n"
             "assert 'wsss_core.diagnostics.cli' in names and 'wsss_core.diagnostics.seeds' in names\n"
             "print(sorted(m for m in ('ray', 'pyarrow', 'plotly') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ctrl_c_stops_with_one_line_and_exit_130(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "study.cli", "diagnose", "seeds", TINY, "--cache", str(tmp_path), "--seeds", "0",
               "--lambdas", "0.5", "--jobs", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "training 2 CAM stages" in process.stderr.readline()
        time.sleep(1.0)  # inside the first CAM run
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.splitlines() == ["wsss diagnose: stopped; finished stages are in the cache and a rerun continues "
                                "from them"], err
