"""What both trackers log, computed once: per-epoch scalars, collapse text, the config table, run
facts, the report; and tracking.json, the run directory's record of where it is tracked."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mammo_tui.events import CollapseStatus, EpochMetrics, RunStarted
from mammo_tui.rundir import DATASET_FILE, group_kind, write_json
from mammo_tui.runlog import EVENTS_FILE

TRACKING_FILE = "tracking.json"
COLLAPSE_CODES = {"healthy": 0, "warning": 1, "collapsed": 2}
# the metrics' scalars logged per epoch, beside the losses, lr and the per-class ones
EPOCH_METRICS = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy", "kappa",
                 "balanced_accuracy")
HEADLINE = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy")
REPORT_TIMEOUT_S = 300


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_scalars(event: EpochMetrics, class_names: list[str]) -> dict[str, float]:
    """One epoch's scalars. A NaN loss (null in events.jsonl) and an AUC that could not be computed
    are left out, so live tracking and an export of events.jsonl log the same values. A class
    without validation images has no recall (n/a, as in the report), not 0."""
    m = event.metrics or {}
    out: dict[str, Any] = {"train_loss": event.train_loss, "val_loss": event.val_loss, "lr": event.lr,
                           "epoch_time_s": event.epoch_time_s}
    out.update({key: m.get(key) for key in EPOCH_METRICS})
    recalls = m.get("recall_per_class") or []
    true_counts = m.get("true_counts") or []
    pred_counts = m.get("prediction_counts") or []
    n = sum(pred_counts)
    for i, name in enumerate(class_names):
        if i < len(recalls) and (i >= len(true_counts) or true_counts[i] > 0):
            out[f"recall_{name}"] = recalls[i]
        if i < len(pred_counts) and n:
            out[f"pred_share_{name}"] = pred_counts[i] / n
    return {key: float(value) for key, value in out.items() if finite(value)}


def suggestion_lines(event: CollapseStatus) -> list[str]:
    return [f"{s.get('key')} = {s.get('value')!r}: {s.get('reason', '')}".rstrip(": ")
            for s in event.suggestions or []]


def collapse_markdown(event: CollapseStatus) -> str:
    lines = [f"**{event.status}** at epoch {event.epoch}"]
    lines += [f"- {reason}" for reason in event.reasons]
    suggestions = suggestion_lines(event)
    if suggestions:
        lines += ["", "Suggestions (most useful first):"] + [f"- `{s}`" for s in suggestions]
    return "\n".join(lines)


def run_facts(event: RunStarted, run_dir: Path) -> dict[str, Any]:
    """Logged beside the config: the split's sizes, the device, the preset (from dataset.json)."""
    preset = ""
    try:
        info = json.loads((run_dir / DATASET_FILE).read_text(encoding="utf-8"))
        preset = str(info.get("preset") or "") if isinstance(info, dict) else ""
    except (OSError, ValueError):
        pass
    return {"n_train": event.n_train, "n_val": event.n_val, "device": event.device, "preset": preset}


def markdown_table(values: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|") if value != "" else '""'

    return "\n".join(["| key | value |", "| --- | --- |"] + [f"| {k} | {cell(v)} |" for k, v in values.items()])


def run_label(run_dir: str | Path) -> str:
    """The run's name; a cross-validation fold or sweep member is named with its folder
    ("cv-x/fold-1"): every CV has a fold-1."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.name}/{run_dir.name}" if group_kind(run_dir.parent) else run_dir.name


def experiment_name(run_dir: str | Path) -> str:
    """MLflow experiment: the folder holding the run (runs/, a CV, a sweep), else "mammo-tui"."""
    return Path(run_dir).absolute().parent.name or "mammo-tui"


def run_key(run_dir: str | Path) -> str:
    """Names this run for good, wherever its folder is moved or copied: its name and the time of
    the first event it ever logged (the first line of events.jsonl; a resume appends)."""
    run_dir = Path(run_dir)
    first = ""
    try:
        with open(run_dir / EVENTS_FILE, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        stamp = json.loads(first).get("time")
    except (OSError, ValueError, AttributeError):
        stamp = None
    return f"{run_dir.name}@{stamp!r}" if stamp is not None else run_dir.name


def report_text(run_dir: str | Path) -> str:
    """The run's Markdown report (`mammo-tui report RUN --stdout`), made in a child process: report.py
    sits above the drivers (it reads cross-validations), which the engine, and so a live tracker, must
    not import; and a report that fails or takes long stays out of the training process."""
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "report", str(run_dir), "--stdout"],
                          capture_output=True, text=True, timeout=REPORT_TIMEOUT_S,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"`mammo-tui report {run_dir}` failed (exit {proc.returncode}): {said}")
    return proc.stdout


def read_tracking(run_dir: str | Path) -> dict[str, Any]:
    """tracking.json: destination ("mlflow:URI", "tensorboard:DIR") -> what continues it; {} if none."""
    try:
        data = json.loads((Path(run_dir) / TRACKING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_tracking(run_dir: str | Path, destination: str, info: dict[str, Any]) -> bool:
    """Remember a destination in tracking.json; False when the run directory cannot be written
    (an export of a read-only run: MLflow then finds its run by the run-key tag)."""
    data = read_tracking(run_dir)
    data[destination] = {**(data.get(destination) or {}), **info}
    try:
        write_json(Path(run_dir) / TRACKING_FILE, data)
    except OSError:  # the run-dir layer's RunFileError is one too
        return False
    return True
