"""The bad-input corpus's one way to run a case: the real CLI in a subprocess, then the checks every
case shares (no traceback, the documented exit code, the file or key named in the message)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the fastest training flags: a case that gets past the checks trains one tiny epoch
FAST = ["--preset", "demo", "--epochs", "1", "--no-pretrained", "--img-size", "32", "--set", "augment=false",
        "--set", "num_workers=0"]


def mammo(*args: str, cwd: str | Path, env: dict[str, str] | None = None, timeout: float = 600,
          stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m mammo_tui ARGS` in cwd (the test session's environment, plus env)."""
    return subprocess.run([sys.executable, "-m", "mammo_tui", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, input=stdin)


def assert_clean(proc: subprocess.CompletedProcess, code: int | tuple[int, ...], *named: str) -> str:
    """No traceback, exit code `code` (or one of them), and every string of `named` in the output.

    Returns stdout + stderr for further checks."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    codes = code if isinstance(code, tuple) else (code,)
    assert proc.returncode in codes, f"exit {proc.returncode}, expected {codes}:\n{out[-3000:]}"
    for name in named:
        assert name in out, f"{name!r} not named in:\n{out[-3000:]}"
    return out
