"""`mammo-tui export RUN --to mlflow|tensorboard`: a run's events.jsonl replayed through the same
tracker live tracking uses (so both log the same), plus its artifacts. A cross-validation or sweep
folder exports each member run.

Twice is safe for MLflow: the run is found again (tracking.json, else its run-key tag) and only
what it lacks is logged. TensorBoard has no such lookup: a folder that already holds the run's
events is refused, named, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mammo_tui.errors import RunDirError
from mammo_tui.events import RUN_ENDS, BatchProgress, DataProgress, RunStarted
from mammo_tui.rundir import group_kind, member_dirs
from mammo_tui.runlog import EVENTS_FILE, read_events
from mammo_tui.tracking.sinks import make_tracker, one_line
from mammo_tui.tracking.spec import TrackingError, TrackSpec, parse_spec, require

SKIPPED = (BatchProgress, DataProgress)  # progress ticks: nothing a tracker keeps


@dataclass
class Exported:
    run_dir: Path
    where: str  # the MLflow run / TensorBoard folder
    complete: bool  # the log has its end event (else: still training, or killed)


def _library_error(exc: Exception) -> bool:
    """A failure of the store or the tracking library (a user's to fix: exit 2), not a bug of ours."""
    root = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or root in ("mlflow", "tensorboard", "requests", "urllib3", "google")


def runs_to_export(path: str | Path) -> list[Path]:
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"export: {path} is not a directory; give a run, cross-validation or sweep folder")
    if group_kind(path):
        runs = [run for run in member_dirs(path) if (run / EVENTS_FILE).is_file()]
        if not runs:
            raise RunDirError(f"export: {path} holds no run with an {EVENTS_FILE} yet; nothing to export")
        return runs
    if not (path / EVENTS_FILE).is_file():
        raise RunDirError(f"export: {path} is not a run directory (no {EVENTS_FILE}); give a run, "
                          "cross-validation or sweep folder")
    return [path]


def export(path: str | Path, kind: str, target: str, say: Callable[[str], None] = lambda line: None) -> list[Exported]:
    spec: TrackSpec = parse_spec(f"{kind}:{target}", source="export")
    require([spec])
    runs = runs_to_export(path)
    if spec.kind == "tensorboard":  # refuse before writing anything
        probe = make_tracker(spec, export=True)
        for run in runs:
            probe.preflight(run)
    done = []
    for run in runs:
        done.append(export_run(run, spec))
        item = done[-1]
        said = "" if item.complete else " (no end event yet: still training, or stopped by a kill; export again later)"
        say(f"exported {run} -> {item.where}{said}")
    return done


def export_run(run_dir: Path, spec: TrackSpec) -> Exported:
    events = [e for e in read_events(run_dir) if not isinstance(e, SKIPPED)]
    if not any(isinstance(e, RunStarted) for e in events):
        raise RunDirError(f"export: {run_dir / EVENTS_FILE} has no run_started event; nothing to export")
    tracker = make_tracker(spec, export=True)
    tracker.location = run_dir.absolute()  # a moved or copied run: its files are here now
    try:
        for number, event in enumerate(events, 1):
            # the report and best.pt once, at the log's last end (they are the run dir's, as of now)
            tracker.artifacts = (not isinstance(event, RUN_ENDS)
                                 or not any(isinstance(e, RUN_ENDS) for e in events[number:]))
            tracker(event)
        complete = isinstance(events[-1], RUN_ENDS)
        if not complete:
            tracker.finish_incomplete()
    except Exception as exc:
        if not _library_error(exc):
            raise
        raise TrackingError(f"export of {run_dir} to {spec.text} failed: {one_line(exc)}") from None
    finally:
        tracker.close()
    return Exported(run_dir, tracker.where, complete)
