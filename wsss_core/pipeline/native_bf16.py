"""Whether a device computes bfloat16 natively: `runtime.frozen_bf16` is faster
than float32 on a CPU with native bfloat16 instructions (bench/frozen_bf16.py
times it) and slower on one that emulates them."""
from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""/proc/cpuinfo flags of native bfloat16 arithmetic: x86 ("flags") and aarch64 ("Features")."""


def cpu_bf16_flags(cpuinfo: str) -> tuple[str, ...] | None:
    """The CPU_BF16_FLAGS named in /proc/cpuinfo text (empty: none); None when
    the text has no flags or Features line to tell from."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words = set(value.split())
            return tuple(flag for flag in CPU_BF16_FLAGS if flag in words)
    return None


def read_cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...] | None:
    """cpu_bf16_flags of the file `cpuinfo`; None when it is unreadable or tells nothing."""
    try:
        return cpu_bf16_flags(cpuinfo.read_text())
    except OSError:
        return None


def native_bf16(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """True or False where it can be told, None where not (a CPU without a readable cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    flags = read_cpu_bf16_flags(cpuinfo)
    return None if flags is None else bool(flags)
