"""Bad inputs at the command line are one line, exit 2 and nothing written:
numbers in every notation (1e-4, 1E6, 1.0e6, .5) in YAML files, specs and
--set; YAML syntax errors with line and column; study names that are one
folder name; files where folders belong and the reverse; --help with the
defaults; `wsss --version`."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from study.cli import main
from study.spec import SpecError, load_spec, parse_spec
from wsss_core.pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `wsss argv...` in process."""
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_numbers_in_every_notation_from_yaml_and_set(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cam:\n  lr: 1e-4\n  weight_decay: 5E-4\n  seam_scale: .5\n  fsl_mu_init: -.5\n"
                      "segmentation:\n  lr: 1.0e-3\n")
    cfg = load_config(config)
    assert (cfg.cam.lr, cfg.cam.weight_decay, cfg.cam.seam_scale, cfg.cam.fsl_mu_init) == (1e-4, 5e-4, 0.5, -0.5)
    assert cfg.segmentation.lr == 1e-3
    for text, value in [("1e6", 1e6), ("1.0e6", 1e6), ("1E6", 1e6), ("+2e-3", 2e-3), (".5", 0.5), ("5.", 5.0)]:
        assert load_config(config, [f"cam.lr={text}"]).cam.lr == value, text
    assert load_config(config, ["cam.epochs=3"]).cam.epochs == 3  # integers stay integers
    with pytest.raises(ConfigError, match=r"^cam.epochs=1000\.0 is invalid; allowed: an integer$"):
        load_config(config, ["cam.epochs=1e3"])


def test_a_spec_reads_numbers_in_every_notation(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: {TINY}\nfixed: {{cam.weight_decay: 1E-5}}\n"
                    "space:\n  cam.lr: {loguniform: [1e-4, 1.0e-2]}\n  segmentation.lr: {grid: [1e-3, .01]}\n")
    loaded = load_spec(spec)
    assert loaded.fixed == {"cam.weight_decay": 1e-5}
    assert (loaded.axes[0].low, loaded.axes[0].high) == (1e-4, 1e-2)
    assert loaded.axes[1].values == (1e-3, 0.01)


def test_yaml_syntax_errors_keep_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cam:\n  lr: 0.1\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=rf"^{config}: not valid YAML at line 4, column 1: expected ',' or ']'"):
        load_config(config)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nbase: {cam: {lr: 1}\n")
    with pytest.raises(SpecError, match=rf"^{spec}: not valid YAML at line 3, column 1"):
        load_spec(spec)
    out = tmp_path / "out"
    code, err = run(capsys, "pipeline", "run", str(TINY), "--out", str(out), "--set", "cam.lr=[1")
    assert code == 2
    assert err == ("wsss pipeline run: override 'cam.lr=[1': not valid YAML at line 1, column 3: expected ',' or ']', "
                   "but got '<stream end>'; allowed: section.key=value with a YAML value")
    code, err = run(capsys, "pipeline", "run", str(TINY), "--out", str(out), "--set", "cam.lr")
    assert (code, err) == (2, "wsss pipeline run: override 'cam.lr' is invalid; allowed: section.key=value")
    assert not out.exists()


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/abs", "..", ".hidden", "_cache", "", "a\\b", "é"])
def test_study_names_are_one_folder_name(name: str) -> None:
    with pytest.raises(SpecError, match=r"^name=.* is invalid; allowed: 1-100 letters, digits, '-', '_', '\.'"):
        parse_spec({"name": name, "base": str(TINY)})


def test_valid_study_names() -> None:
    for name in ("fig2", "fig2_gmp-v1.2", "A" * 100):
        assert parse_spec({"name": name, "base": str(TINY)}).name == name


@pytest.mark.parametrize("name", ["../escaped", "a/b"])
def test_cli_refuses_bad_names_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    storage = tmp_path / "runs"
    spec = REPO / "search_spaces" / "studies" / "demo.yaml"
    code, err = run(capsys, "study", "run", str(spec), "--storage", str(storage), "--name", name)
    assert code == 2 and err.startswith(f"wsss study run: --name={name!r} is invalid; allowed:")
    assert "\n" not in err
    for action in ("status", "resume"):
        code, err = run(capsys, "study", action, name, "--storage", str(storage))
        assert code == 2 and err.startswith(f"wsss study {action}: NAME={name!r} is invalid; allowed:")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written, inside or outside the storage"


def test_files_where_folders_belong_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    spec = str(REPO / "search_spaces" / "studies" / "demo.yaml")
    cases = [
        (["pipeline", "run", str(TINY), "--out", str(a_file)], f"wsss pipeline run: --out={str(a_file)!r} is a file"),
        (["pipeline", "run", str(TINY), "--out", str(tmp_path / "o"), "--cache", str(a_file)],
         f"wsss pipeline run: --cache={str(a_file)!r} is a file"),
        (["study", "run", spec, "--storage", str(a_file)], f"wsss study run: --storage={str(a_file)!r} is a file"),
        (["study", "run", spec, "--storage", str(tmp_path / "s"), "--cache", str(a_file)],
         f"wsss study run: --cache={str(a_file)!r} is a file"),
        (["data", "synth", "--out", str(a_file)], f"wsss data synth: --out={str(a_file)!r} is a file"),
    ]
    for argv, start in cases:
        code, err = run(capsys, *argv)
        assert code == 2 and err.startswith(start) and "allowed: a folder" in err and "\n" not in err, argv
    code, err = run(capsys, "report", str(tmp_path), "-o", str(tmp_path))
    assert code == 2 and err.startswith(f"wsss report: -o {str(tmp_path)!r} is a folder; allowed: an HTML file path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and a_file.read_text() == ""


def test_version_and_help_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"wsss {importlib.metadata.version('wsss-study')}"

    def help_text(*argv: str) -> str:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())

    synth = help_text("data", "synth")
    for option, default in [("--seed", 0), ("--num-train", 160), ("--num-val", 48), ("--size", 112), ("--max-objects", 3)]:
        assert option in synth and f"(default: {default})" in synth
    assert "rerun of the same command reuses finished stages and resumes" in help_text("pipeline", "run")
    for action in ("status", "resume"):
        assert "name study name: the folder <storage>/<name>" in help_text("study", action)
    run_help = help_text("study", "run")
    assert "Exit code 0: every trial completed; 1: some trial failed" in run_help
    assert "(default: the spec's name)" in run_help and "(default: <storage>/_cache)" in run_help


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_configuration_error() -> None:
    import logging

    from wsss_core.pipeline.config import RuntimeConfig
    from wsss_core.pipeline.training import Runtime

    with pytest.raises(ConfigError, match=r"^runtime.device='cuda' is invalid here: CUDA is not available"):
        Runtime.from_config(RuntimeConfig(device="cuda"), progress=False, log=logging.getLogger("test"))
