"""What a run is and what to do next, as ready-to-paste commands (pure: no textual, no torch).

The finished dashboard shows these lines, and the CLI prints `exit_summary(run_dir)` to the shell
after the app exits, so the user leaves with the run directory and the next commands in hand.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from mammo_tui.config import MORE_EPOCHS

PROG = "mammo-tui"


def next_commands(run_dir: str | Path, status: str, *, is_cv: bool = False,
                  epochs_completed: int = 0) -> list[str]:
    """report / eval / watch, and how to continue: resume a stopped run, or train it longer."""
    path = shlex.quote(str(run_dir))
    kind = "cv" if is_cv else "train"
    out = []
    if status in ("interrupted", "stopped"):
        out.append(f"{PROG} {kind} --resume {path}")
    if status != "failed" or epochs_completed:
        out += [f"{PROG} report {path}",
                f"{PROG} eval {path} --csv LABELS.csv --dicom-root DICOM_DIR",
                f"{PROG} watch {path}"]
    if not is_cv and status in ("healthy", "warning", "collapsed") and epochs_completed:
        out.append(f"{PROG} train --resume {path} --set epochs={epochs_completed + MORE_EPOCHS} --force")  # longer
    if status == "failed" and not epochs_completed:
        out.append(f"{PROG} watch {path}")  # the error and the events before it
    return out


def summary_lines(run_dir: str | Path, status: str, *, best_epoch: int | None = None,
                  best_metrics: dict[str, Any] | None = None, is_cv: bool = False,
                  epochs_completed: int = 0, best_status: str | None = None,
                  error: str = "") -> list[str]:
    """Run directory, final and best status, then the next commands."""
    what = "cross-validation" if is_cv else "run"
    lines = [f"{what} directory: {run_dir}", f"status: {status}"]
    if error:
        lines.append(f"error: {error}")
    metrics = best_metrics or {}
    kappa, bal = metrics.get("kappa_quadratic"), metrics.get("balanced_accuracy_adjusted")
    if best_epoch is not None or kappa is not None:
        where = f"epoch {best_epoch}" if best_epoch is not None else "mean over the folds"
        where += f" ({best_status})" if best_status else ""
        lines.append(f"best: {where}, κq {_num(kappa)}, bal-acc-adj {_num(bal)}")
    lines.append("next:")
    lines += [f"  {cmd}" for cmd in next_commands(run_dir, status, is_cv=is_cv,
                                                   epochs_completed=epochs_completed)]
    return lines


def dashboard_lines(run_dir: str | Path, status: str, *, is_cv: bool = False,
                    epochs_completed: int = 0) -> list[str]:
    """The finished dashboard's short form (its log already says the status and the best epoch)."""
    return [f"{'cross-validation' if is_cv else 'run'} directory: {run_dir}"] + [
        f"next: {cmd}" for cmd in next_commands(run_dir, status, is_cv=is_cv,
                                                epochs_completed=epochs_completed)]


def exit_summary(run_dir: str | Path | None) -> str:
    """What the CLI prints after the app exits (finished, quit, interrupted, failed, CV);
    "" when there is no run directory (the user quit in the wizard)."""
    if not run_dir or not Path(run_dir).is_dir():
        return ""
    from mammo_tui.rundir import is_cv_dir
    from mammo_tui.runread import cv_details

    if is_cv_dir(run_dir):
        d = cv_details(run_dir)
        status = d["status"]
        if d["folds_done"] < d["folds"] and status != "failed":
            status = "stopped"  # cv --resume continues it
        return "\n".join(summary_lines(run_dir, status, best_metrics=d["best_metrics"], is_cv=True,
                                       epochs_completed=d["folds_done"]))
    from mammo_tui.rundir import read_summary
    from mammo_tui.runread import run_info

    info = run_info(run_dir)
    summary = read_summary(run_dir) or _summary_from_log(run_dir)
    return "\n".join(summary_lines(run_dir, info.status, best_epoch=summary.get("best_epoch"),
                                   best_metrics=summary.get("best_metrics") or {},
                                   epochs_completed=info.epochs_completed,
                                   best_status=summary.get("best_status"), error=summary.get("error") or ""))


def sweep_summary(sweep_dir: str | Path, *, no_ui: bool = False) -> str:
    """A sweep's exit summary, from its folder: the leaderboard, the best configuration and the
    command that trains it, how to continue a stopped sweep, where the folder and report are."""
    from mammo_tui.drivers.leaderboard import best_entry, format_leaderboard, leaderboard
    from mammo_tui.rundir import read_group_manifest
    from mammo_tui.drivers.sweep import reproduce_command

    manifest = read_group_manifest(sweep_dir, "sweep")
    if not manifest:
        return ""
    entries = leaderboard(sweep_dir, manifest)
    path = shlex.quote(str(sweep_dir))
    lines = [format_leaderboard(entries)]
    best = best_entry(entries)
    if best is not None:
        lines.append(f"best configuration: {best.config_id} ({best.status}, {best.seeds_done} of "
                     f"{best.seeds_planned} seeds)")
        lines.append(f"train it: {reproduce_command(sweep_dir, best, manifest)}")
    if manifest.get("status") in ("interrupted", "running"):  # stopped, or killed while it said running
        lines.append(f"sweep stopped; continue it with: {PROG} sweep{' --no-ui' if no_ui else ''} --resume {path}")
    lines.append(f"sweep folder: {sweep_dir}  (report: {PROG} report {path})")
    lines.append(f"watch it: {PROG} watch {path}")
    return "\n".join(lines)


def _summary_from_log(run_dir: str | Path) -> dict[str, Any]:
    """best_epoch / best_metrics from the log's finished event (no summary.json: an old or a
    killed run)."""
    from mammo_tui.events import RunFinished
    from mammo_tui.runlog import read_events

    try:
        finished = [e for e in read_events(run_dir) if isinstance(e, RunFinished)]
    except OSError:
        return {}
    if not finished:
        return {}
    return {"best_epoch": finished[-1].best_epoch, "best_metrics": dict(finished[-1].best_metrics)}


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
