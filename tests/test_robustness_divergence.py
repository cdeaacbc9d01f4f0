"""Divergence is reported as what it is, at the step it happens: "loss diverged
at stage X, epoch N, step S" for a non-finite loss term, a non-finite
parameter after an update, or a forward pass that fails once the parameters
have exploded; no epoch mean holding a NaN is logged; `wsss pipeline run`
exits 1 with that one line and marks nothing complete."""
from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from wsss_core.pipeline.config import RuntimeConfig, TrainingConfig
from wsss_core.pipeline.training import Runtime, fit

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "pipelines" / "tiny.yaml"
STEPS = 4


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def train(tmp_path: Path, step_fn, *, lr: float = 0.1, epochs: int = 2) -> tuple[nn.Module, list[str]]:
    """fit() a one-weight model on STEPS dummy batches per epoch; returns it and its log lines."""
    lines = Lines()
    log = logging.getLogger(f"test.divergence.{tmp_path}")
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    try:
        fit(
            name="cam", model=model, optimizer=optimizer, step_fn=lambda batch: step_fn(model, batch),
            epoch_batches=lambda epoch: [SimpleNamespace(names=["x"], epoch=epoch, step=s) for s in range(1, STEPS + 1)],
            num_steps=STEPS, train=TrainingConfig(epochs=epochs, lr=lr, poly_power=0.0), work_dir=tmp_path,
            generator=torch.Generator(), runtime=Runtime.from_config(RuntimeConfig(device="cpu"), progress=False, log=log),
        )
    finally:
        log.removeHandler(lines)
    return model, lines.lines


def at(epoch: int, step: int, value: float):
    """A step_fn whose loss is w^2, plus a logged term that is `value` at (epoch, step)."""
    def step_fn(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        loss = (model.weight ** 2).sum()
        hit = (batch.epoch + 1, batch.step) == (epoch, step)
        return {"loss": loss + (value if hit else 0.0), "fsl": torch.tensor(value if hit else 0.5)}
    return step_fn


def test_a_nan_loss_is_reported_at_its_epoch_and_step_and_no_mean_hides_it(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError) as raised:
        train(tmp_path, at(2, 3, math.nan))
    assert str(raised.value) == "loss diverged at stage cam, epoch 2, step 3: loss=nan, fsl=nan; try a lower cam.lr (now 0.1)"


def test_training_that_ends_finite_logs_every_mean(tmp_path: Path) -> None:
    _, lines = train(tmp_path, at(9, 9, math.nan))
    assert [line.split(":")[0] for line in lines] == ["cam epoch 1/2", "cam epoch 2/2"]
    assert all("fsl 0.5000" in line and "nan" not in line for line in lines)


def test_a_nan_term_in_the_last_epoch_stops_before_its_mean_is_logged(tmp_path: Path) -> None:
    def step_fn(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        bad = (batch.epoch, batch.step) == (1, STEPS)
        return {"loss": (model.weight ** 2).sum(), "accuracy": torch.tensor(math.nan if bad else 1.0)}

    lines: list[str] = []
    with pytest.raises(FloatingPointError, match=r"^loss diverged at stage cam, epoch 2, step 4: accuracy=nan;"):
        _, lines = train(tmp_path, step_fn)
    assert not any("epoch 2/2" in line for line in lines)


def test_a_parameter_overflowing_in_the_update_is_reported_at_that_step(tmp_path: Path) -> None:
    def step_fn(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        return {"loss": (model.weight * 1e30).sum()}

    with pytest.raises(FloatingPointError) as raised:
        train(tmp_path, step_fn, lr=1e10)
    assert str(raised.value) == ("loss diverged at stage cam, epoch 1, step 1: parameter weight reached inf after "
                                 "the update (loss 1e+30); try a lower cam.lr (now 1e+10)")


def test_a_forward_failing_after_parameters_exploded_is_divergence(tmp_path: Path) -> None:
    def step_fn(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        if model.weight.abs().max() > 100:
            raise ValueError("sigma=inf is not allowed; use a positive finite float")
        return {"loss": (model.weight * 1e6).sum()}

    with pytest.raises(FloatingPointError) as raised:
        train(tmp_path, step_fn, lr=1.0)
    assert str(raised.value) == (
        "loss diverged at stage cam, epoch 1, step 2: parameter weight reached 1e+06 after the last update, then "
        "ValueError: sigma=inf is not allowed; use a positive finite float; try a lower cam.lr (now 1)")


def test_other_errors_are_not_called_divergence(tmp_path: Path) -> None:
    def first_step_fails(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="^shape mismatch$"):
        train(tmp_path / "a", first_step_fails)

    def later_step_fails(model: nn.Module, batch: SimpleNamespace) -> dict[str, torch.Tensor]:
        if batch.step == 3:
            raise RuntimeError("a bug, parameters fine")
        return {"loss": (model.weight ** 2).sum()}

    with pytest.raises(RuntimeError, match="^a bug, parameters fine$"):
        train(tmp_path / "b", later_step_fails)


def test_pipeline_cli_reports_divergence_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "wsss_core.pipeline.cli", "pipeline", "run", str(TINY),
         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet",
         "--set", "cam.lr=1e12", "--set", "eval.workers=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    line, = proc.stderr.strip().splitlines()
    assert line.startswith("wsss pipeline run: loss diverged at stage cam, epoch 1, step ")
    assert line.endswith(f"try a lower cam.lr (now 1e+12) (details: {tmp_path / 'out'}/pipeline.log)")
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "cache" / "stages" / "cam").iterdir() if not p.name.endswith((".partial", ".lock"))]
