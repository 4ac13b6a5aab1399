"""A sweep's command lines, as plain functions: the `--preset P --set k=v` and dataset flags that
give one member run's config exactly, the `mammo-tui train` command that trains a configuration
again (the leaderboard's "reproduce"), and the command a parallel sweep (--jobs / --gpus) starts
each member run with."""

from __future__ import annotations

import json
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

from mammo_tui.drivers.leaderboard import Entry
from mammo_tui.drivers.sweep_spec import format_value
from mammo_tui.errors import ConfigError
from mammo_tui.rundir import read_group_manifest, read_summary

LOGS_DIR = "logs"  # in the sweep folder: each subprocess run's output, and its config when no preset gives it


def set_value(value: Any) -> str:
    """A value as `--set key=VALUE` reads it back exactly (config.parse_set: TOML, else the text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_value(value)
    try:
        tomllib.loads(f"v = {value}")
    except tomllib.TOMLDecodeError:
        return str(value)  # not TOML: parse_set keeps the text as it is
    return json.dumps(value)  # would parse as something else ("1", "true"): quoted


def preset_args(config: dict[str, Any], preset: str) -> list[str]:
    """`--preset P --set k=v ...`: exactly `config` via `mammo-tui train` (every key that differs
    from the preset); [] when the preset cannot be read (the caller writes a file instead)."""
    from mammo_tui.config import resolve

    try:
        values = resolve(preset).to_dict() if preset else None
    except ConfigError:
        values = None
    if values is None:
        return []
    out = ["--preset", preset]
    for key, value in config.items():
        if key in values and values[key] != value:
            out += ["--set", f"{key}={set_value(value)}"]
    return out


def dataset_args(dataset: dict[str, Any] | None, demo: bool, skip_bad_rows: bool = False) -> list[str]:
    from mammo_tui.data.inputs import description_args

    out = ["--demo"] if demo and not dataset else []
    for key in ("csv", "dicom_root", "images", "group_pattern", "views"):
        if dataset and dataset.get(key):
            out += [f"--{key.replace('_', '-')}", str(dataset[key])]
    if dataset and dataset.get("root"):
        out += description_args(dataset["root"], dataset.get("description"), dataset.get("layout"))
    return out + (["--skip-bad-rows"] if skip_bad_rows else [])


def reproduce_command(sweep_dir: str | Path, entry: Entry, manifest: dict[str, Any] | None = None) -> str:
    """The `mammo-tui train` command line that trains this configuration (its first seed) again."""
    manifest = read_group_manifest(sweep_dir, "sweep") if manifest is None else manifest
    base = manifest.get("config") or {}
    config = {**base, **entry.changes, "seed": entry.seeds[0] if entry.seeds else base.get("seed")}
    summary = read_summary(Path(sweep_dir) / entry.runs[0]) if entry.runs else None
    if summary and isinstance(summary.get("config_history"), list) and summary["config_history"]:
        config = summary["config_history"][0].get("config") or config  # what it launched with, exactly
    args = preset_args(config, str(manifest.get("preset") or "")) or [
        "--preset", str(Path(sweep_dir) / entry.runs[0] / "config.toml")]
    dataset = manifest.get("dataset")
    words = ["mammo-tui", "train", "--no-ui", *dataset_args(dataset, bool(manifest.get("demo")),
                                                           bool(manifest.get("skip_bad_rows"))), *args]
    return " ".join(shlex.quote(w) for w in words)


def member_command(sweep_dir: Path, run: str, config: dict[str, Any] | None, *, dataset: Any, demo: bool,
                   demo_size: float | None, skip_bad_rows: bool, preset: str, track: list[str]) -> list[str]:
    """`python -m mammo_tui train --no-ui ...` for the member run `run` of the sweep in `sweep_dir`:
    config None resumes it (its own config); else it starts with exactly `config`. dataset: the
    sweep's DatasetSpec (or None: the demo)."""
    words = [sys.executable, "-m", "mammo_tui", "train", "--no-ui"]
    data = None if dataset is None else dataset.absolute().to_dict()
    if demo and demo_size is not None and not data:
        from mammo_tui.prepare import DEMO_SIZE, ensure_demo_dataset

        if demo_size != DEMO_SIZE:  # `train` has no --demo-size: the demo files themselves
            data = ensure_demo_dataset(demo_size).absolute().to_dict()
    if config is None:
        words += ["--resume", str(sweep_dir / run)]
        words += dataset_args(data, False) if data else []
    else:
        args = preset_args(config, preset)
        if not args:  # no readable preset to start from: the whole config as a file
            from mammo_tui.config import to_toml
            from mammo_tui.rundir import atomic_write_text

            path = sweep_dir / LOGS_DIR / f"{run}.toml"
            atomic_write_text(path, to_toml(config))
            args = ["--preset", str(path)]
        words += dataset_args(data, demo, skip_bad_rows) + args
        words += ["--outdir", str(sweep_dir), "--run-name", run]
    for spec in track:
        words += ["--track", spec]
    return words
