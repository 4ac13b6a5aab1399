"""Run directory layout and the runs listing (pure: no torch, no textual)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_tui.runlog import EVENTS_FILE, read_events

CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"
SPLITS_FILE = "splits.csv"
DATASET_FILE = "dataset.json"
CHECKPOINT_DIR = "checkpoints"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run dirs are shared with colleagues
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def new_run_name(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def safe_run_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned or new_run_name()


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RunInfo:
    path: Path
    name: str
    status: str  # healthy | warning | collapsed | interrupted | failed | running | unknown
    preset: str
    arch: str
    epochs_completed: int
    best_epoch: int | None
    kappa_quadratic: float | None  # a cross-validation: the mean over its finished folds
    bal_acc_adj: float | None
    started: float
    kind: str = "run"  # run | cv | fold (a fold of the cross-validation listed just above it)
    parent: str = ""  # the run this one was started from (a fix applied to a finished run)
    folds: int = 0  # cv: K
    folds_done: int = 0  # cv: folds with a result


def run_info(run_dir: str | Path) -> RunInfo:
    """Summarise one run from summary.json, falling back to the event log for live runs."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) or {}
    best = summary.get("best_metrics") or {}
    status = summary.get("status", "unknown")
    epochs = summary.get("epochs_completed", 0)
    started = summary.get("started", 0.0)
    config = summary.get("config") or {}
    if not summary and (run_dir / EVENTS_FILE).exists():
        events = read_events(run_dir)
        status = "running"
        for event in events:
            if event.type == "run_started":
                config, started = event.config, event.time
            elif event.type == "epoch":
                epochs = event.epoch
                best = best or event.metrics
            elif event.type in ("finished", "failed"):
                status = getattr(event, "status", "failed")
    return RunInfo(
        path=run_dir,
        name=run_dir.name,
        status=status,
        preset=summary.get("preset", config.get("preset", "")) or "",
        arch=config.get("arch", ""),
        epochs_completed=int(epochs or 0),
        best_epoch=summary.get("best_epoch"),
        kappa_quadratic=best.get("kappa_quadratic"),
        bal_acc_adj=best.get("balanced_accuracy_adjusted"),
        started=float(started or 0.0),
        parent=Path(summary.get("parent_run") or "").name,
    )


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Runs under root, newest first; a cross-validation is one row followed by its folds."""
    from mammo_tui.cv import cv_info, fold_dirs, is_cv_dir

    root = Path(root)
    if not root.is_dir():
        return []
    groups: list[list[RunInfo]] = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        if is_cv_dir(path):
            folds = [run_info(f) for f in fold_dirs(path)]
            for fold in folds:
                fold.kind = "fold"
            groups.append([cv_info(path), *folds])
        elif (path / EVENTS_FILE).exists() or (path / SUMMARY_FILE).exists():
            groups.append([run_info(path)])
    groups.sort(key=lambda group: group[0].started, reverse=True)
    return [info for group in groups for info in group]
