"""`analysis` and every module under it import without torch or Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import importlib, pkgutil, sys
import analysis
names = [m.name for m in pkgutil.walk_packages(analysis.__path__, "analysis.")]
for name in names:
    importlib.import_module(name)
assert len(names) >= 8, names
leaked = sorted(m for m in ("torch", "ray") if m in sys.modules)
assert not leaked, leaked
print("ok", len(names))
"""


def test_analysis_imports_neither_torch_nor_ray():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
