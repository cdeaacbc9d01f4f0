"""runtime.frozen_bf16 warns on a device without native bfloat16 (where it is slower than float32)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from wsss_core.pipeline import runner, training
from wsss_core.pipeline.config import RuntimeConfig, load_config
from wsss_core.pipeline.native_bf16 import cpu_bf16_flags, native_bf16
from wsss_core.pipeline.training import Runtime

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "demo.yaml"
X86_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni {}\nbugs\t\t: spectre_v1\n"
ARM_FEATURES = "processor\t: 0\nFeatures\t: fp asimd sve {}\nCPU implementer\t: 0x41\n"


def test_cpu_bf16_flags_reads_x86_and_aarch64_cpuinfo() -> None:
    assert cpu_bf16_flags(X86_FLAGS.format("avx512_bf16 amx_bf16 amx_tile")) == ("avx512_bf16", "amx_bf16")
    assert cpu_bf16_flags(X86_FLAGS.format("avx512_fp16")) == ()
    assert cpu_bf16_flags(ARM_FEATURES.format("bf16 i8mm")) == ("bf16",)
    assert cpu_bf16_flags(ARM_FEATURES.format("i8mm")) == ()
    assert cpu_bf16_flags("processor\t: 0\nmodel name\t: a CPU\n") is None, "no flags line: cannot tell"


def test_native_bf16_on_cpu_follows_the_cpuinfo_file(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_FLAGS.format("avx512_bf16"))
    assert native_bf16(torch.device("cpu"), cpuinfo) is True
    cpuinfo.write_text(X86_FLAGS.format(""))
    assert native_bf16(torch.device("cpu"), cpuinfo) is False
    assert native_bf16(torch.device("cpu"), tmp_path / "absent") is None


@pytest.mark.parametrize(("frozen_bf16", "native", "warns"), [
    (True, False, True), (True, True, False), (True, None, False), (False, False, False),
])
def test_runtime_warns_when_frozen_bf16_is_on_without_native_bfloat16(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, frozen_bf16: bool, native: bool | None,
    warns: bool,
) -> None:
    monkeypatch.setattr(training, "native_bf16", lambda device: native)
    log = logging.getLogger("test_native_bf16")
    with caplog.at_level(logging.WARNING, logger=log.name):
        runtime = Runtime.from_config(RuntimeConfig(device="cpu", frozen_bf16=frozen_bf16), progress=False, log=log)
    assert runtime.frozen_bf16 is frozen_bf16, "the warning does not change the setting"
    warnings = [r.getMessage() for r in caplog.records if "frozen_bf16" in r.getMessage()]
    assert len(warnings) == int(warns), warnings
    if warns:
        assert "no native bfloat16" in warnings[0] and "runtime.frozen_bf16=false" in warnings[0]


@pytest.mark.parametrize(("frozen_stages", "warns"), [((), False), (("affinity",), True)])
def test_a_run_without_a_frozen_backbone_does_not_warn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, frozen_stages: tuple[str, ...], warns: bool,
) -> None:
    """frozen_bf16 changes nothing where no stage freezes its backbone, so such a run gets no warning."""
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    overrides = ["runtime.frozen_bf16=true", "runtime.device=cpu", "cam.train_backbone_head=false",
                 "cam.train_backbone_blocks=0"]
    overrides += [f"{stage}.freeze_backbone={str(stage in frozen_stages).lower()}"
                  for stage in ("cam", "affinity", "segmentation")]
    config = load_config(DEMO, overrides)
    log = logging.getLogger("test_native_bf16.run")
    with caplog.at_level(logging.WARNING, logger=log.name):
        runtime = runner._runtime(config, False, log)
    assert runtime.frozen_bf16 is warns
    assert sum("no native bfloat16" in r.getMessage() for r in caplog.records) == int(warns)
