"""Debian programs the observability tests drive (Prometheus, promtool, Chromium), installed
by the project's own `scripts/install-debian-tools` when missing. A test that needs one calls
`debian_program(name)`: it fails (never skips) when the program cannot be installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-debian-tools"


def debian_program(name: str) -> str:
    """The path of `name` (prometheus, promtool, chromium), installing it first if needed."""
    found = shutil.which(name)
    if found is None:
        done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{SCRIPT} failed:\n{done.stdout}\n{done.stderr}"
        found = shutil.which(name)
    assert found is not None, f"{name} is not on PATH after {SCRIPT}"
    return found
