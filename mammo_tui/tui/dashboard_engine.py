"""The dashboard's engine threads: training (or a CV) through the application layer, or following
a run's log in watch mode. The threads reach the screen only through `post_message`; torch is
imported in the training thread, never at UI start-up.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from mammo_tui.events import Event
from mammo_tui.tui.messages import EngineDone, EngineEvent, stop_and_wait
from mammo_tui.tui.state import COLLAPSE, LOG, PROGRESS, STATUS

STALE_CHECK_S = 20.0  # watch: how often a silent run is checked for a live process


class EngineThreads:
    """Mixed into DashboardScreen (state, cancel, engine_idle, worker, _dirty, _repaint, _say)."""

    def _replay_history(self, request: Any) -> None:
        """train --resume: the epochs before the resume point come from the run's own log, so every
        panel shows the whole run, not only what this session trains."""
        from mammo_tui.runlog import EVENTS_FILE, read_events

        resume = getattr(request, "resume", None)
        if not resume or getattr(request, "cv_folds", 0) or not (Path(resume) / EVENTS_FILE).is_file():
            return
        try:
            history = read_events(resume)
        except OSError:
            return  # the engine says what is wrong with the run directory
        for event in history:
            self._dirty |= self.state.apply(event)
        self.state.note("info", f"── {Path(resume).name}: {len(self.state.epochs)} epochs from its log; "
                                "resuming… ──")
        self.call_after_refresh(self._repaint)

    @property
    def engine_running(self) -> bool:
        return not self.engine_idle.is_set()

    def start_training(self, request: Any) -> None:
        self.request = request
        self.cancel = threading.Event()
        self.engine_idle.clear()
        s = self.state
        s.finished, s.failed, s.hint = None, None, ""
        what = f"resuming {Path(request.resume).name}" if getattr(request, "resume", None) else "starting"
        s.starting = f"{what}: reading the dataset and building the model…"
        s.note("info", s.starting)
        self._dirty |= {PROGRESS, STATUS, LOG}
        self.call_after_refresh(self._repaint)
        self.worker = self.run_worker(partial(self._train_thread, request, self.cancel),
                                      thread=True, group="engine", name="train", exit_on_error=False)

    def _train_thread(self, request: Any, cancel: threading.Event) -> None:
        # Runs in the worker thread: torch is imported here, never at UI start-up.
        try:
            from mammo_tui.app.launch import launch

            result = launch(request, self._sink, cancel)  # one run, or a CV (request.cv_folds)
            self.post_message(EngineDone(result=result))
        except BaseException as exc:  # noqa: BLE001 - shown in the log, never a silent thread death
            self.post_message(EngineDone(error=exc))
        finally:
            self.engine_idle.set()

    def _sink(self, event: Event) -> None:
        self.post_message(EngineEvent(event))

    def check_stale(self) -> None:
        """watch: a run whose log went silent and whose process is gone (kill -9) says so."""
        from mammo_tui.tui.watchcheck import stale_note

        if self.state.done or not self._last_event_time or not self.run_dir:
            return
        note = stale_note(self.run_dir, self._last_event_time) or ""
        if note and not self.state.stale:
            self._say("warning", note)
        if note != self.state.stale:
            self.state.stale = note
            self._dirty |= {COLLAPSE, STATUS}
            self._repaint()

    def _start_follow(self, run_dir: str) -> None:
        self.set_interval(STALE_CHECK_S, self.check_stale)
        self.engine_idle.clear()
        self.worker = self.run_worker(partial(self._follow_thread, run_dir, self.cancel),
                                      thread=True, group="engine", name="follow", exit_on_error=False)

    def _follow_thread(self, run_dir: str, cancel: threading.Event) -> None:
        from mammo_tui.drivers.cv import follow_cv
        from mammo_tui.rundir import is_cv_dir
        from mammo_tui.runlog import follow_events

        follow = follow_cv if is_cv_dir(run_dir) else follow_events
        try:
            for event in follow(run_dir, should_stop=cancel.is_set):
                self.post_message(EngineEvent(event))
            self.post_message(EngineDone())
        except BaseException as exc:  # noqa: BLE001
            self.post_message(EngineDone(error=exc))
        finally:
            self.engine_idle.set()

    async def stop_engine(self) -> None:
        await stop_and_wait(self.cancel, self.worker)
