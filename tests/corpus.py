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


def mammo(*args: str, cwd: str | Path, env: dict[str, str | None] | None = None, timeout: float = 600,
          stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m mammo_tui ARGS` in cwd (the test session's environment, plus env; a None value
    unsets the variable)."""
    merged = {key: value for key, value in {**os.environ, **(env or {})}.items() if value is not None}
    return subprocess.run([sys.executable, "-m", "mammo_tui", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=merged, input=stdin)


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


def png(path: Path, level: int, size: tuple[int, int] = (40, 32)) -> None:
    """A small 8-bit PNG around `level`; the noise is seeded by the file name too, so no two files
    share their bytes (no duplicate_content)."""
    import zlib

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([level, zlib.crc32(path.name.encode())])
    Image.fromarray(np.clip(rng.normal(level, 20, size), 0, 255).astype(np.uint8)).save(path)


def good_rows(root: Path, per_class=(6, 6, 6, 6), patients_per_class: int = 3) -> list[str]:
    """Write a generic-CSV dataset's good PNGs under root (A0.png ... D5.png, brighter per class)
    and return its CSV lines, header first; a case appends its bad rows and writes labels.csv."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image_path,label,patient_id"]
    for c, n in enumerate(per_class):
        for i in range(n):
            name = f"{'ABCD'[c]}{i}.png"
            png(root / name, 40 + 50 * c)
            rows.append(f"{name},{'ABCD'[c]},p{c}-{i % patients_per_class}")
    return rows


def write_csv(root: Path, rows: list[str]) -> Path:
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


# a sweep spec's [set] table that makes every run a few seconds on a CPU (as FAST)
TINY_SWEEP_SET = """
[set]
epochs = 1
img_size = 32
pretrained = false
augment = false
num_workers = 0
max_batches_per_epoch = 2
"""
