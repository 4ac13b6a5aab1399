"""Launching work: one run, a K-fold CV, or a sweep. The CLI and the screens both call these.

"Preset auto" is planned here, once (app.planning), before the engine or the CV driver sees the
request: the engine trains a decided config. The heavy modules (torch) load when a launch runs,
never when this module is imported.
"""

from __future__ import annotations

import threading
from typing import Any

from mammo_tui.app.planning import resolve_auto
from mammo_tui.app.requests import RunResult, TrainRequest
from mammo_tui.events import EventSink, ProgressMeter


def _quiet(event) -> None:
    pass


def main_process() -> bool:
    """Whether this process speaks: always, except the ranks other than 0 under torchrun."""
    from mammo_tui.engine.distributed import main_process as is_main

    return is_main()


def _scan_progress(sink: EventSink):
    """The dataset check's progress, on the screen of the main process only (under torchrun)."""
    return ProgressMeter("checking images", sink) if main_process() else None


def train(request: TrainRequest, sink: EventSink = _quiet, cancel: threading.Event | None = None) -> RunResult:
    """Run (or resume) one training run synchronously; "preset auto" is planned first."""
    from mammo_tui.engine.trainer import train as train_run

    request, prepared, plan = resolve_auto(request, _scan_progress(sink))
    return train_run(request, sink, cancel, prepared=prepared, plan=plan)


def run_cv(request: TrainRequest, folds: int, sink: EventSink = _quiet, cancel: threading.Event | None = None):
    """A K-fold cross-validation (drivers/cv.py); "preset auto" planned once for every fold."""
    from mammo_tui.drivers.cv import run_cv as run_folds

    return run_folds(request, folds, sink, cancel)


def launch(request: TrainRequest, sink: EventSink = _quiet, cancel: threading.Event | None = None) -> Any:
    """What a face starts: a CV when the request asks for folds (cv_folds >= 2), else one run.
    The result has run_dir and exit_code either way."""
    if request.cv_folds >= 2:
        return run_cv(request, request.cv_folds, sink, cancel)
    return train(request, sink, cancel)


def run_sweep(job: Any, sink: EventSink = _quiet, cancel: threading.Event | None = None):
    """A sweep (drivers/sweep.py): one ordinary run directory per (configuration, seed); base =
    auto is planned once, through app.planning, by the sweep itself."""
    from mammo_tui.drivers.sweep import run_sweep as run_queue

    return run_queue(job, sink, cancel)
