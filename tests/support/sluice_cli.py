"""The `sluice` command as tests and benchmarks run it: `python -m cli.main ...` with this
interpreter, from the repository root. `sluice_command` builds the argument list (for a child
that keeps running, such as `serve` or `dev cluster`); `run_sluice` runs one command to the end
and captures its exit code, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the working directory of every `sluice` child."""

SLUICE = (sys.executable, "-m", "cli.main")


def sluice_command(*args: str) -> list[str]:
    """The argument list of `sluice *args`."""
    return [*SLUICE, *args]


def run_sluice(
    *args: str,
    bootstrap: str | None = None,
    stdin: bytes | None = None,
    timeout: float | None = 120.0,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run `sluice *args` to the end: `returncode`, `stdout` and `stderr` (bytes). `bootstrap`
    is passed as SLUICE_BOOTSTRAP (a `--bootstrap` among `args` wins over it); `stdin` is fed
    to the command; a command still running after `timeout` seconds is killed and
    `subprocess.TimeoutExpired` raised (None: no limit); `check` raises
    `subprocess.CalledProcessError` on a non-zero exit."""
    env = dict(os.environ)
    if bootstrap is not None:
        env["SLUICE_BOOTSTRAP"] = bootstrap
    return subprocess.run(
        sluice_command(*args),
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=check,
    )
