"""Messages that carry work from thread workers to the UI thread (post_message is thread-safe)."""

from __future__ import annotations

import threading
from typing import Any

from textual.message import Message
from textual.worker import Worker, WorkerState

from mammo_tui.events import Event


class EngineEvent(Message):
    """One engine event, live from train() or read from events.jsonl."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class EngineDone(Message):
    """The training / follow thread returned (result) or raised (error)."""

    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


class ScanProgress(Message):
    def __init__(self, done: int, total: int, stage: str = "") -> None:
        super().__init__()
        self.done, self.total, self.stage = done, total, stage


class ScanDone(Message):
    def __init__(self, spec: Any = None, report: Any = None, error: BaseException | None = None,
                 demo: bool = False, fingerprint: Any = None, plan: Any = None) -> None:
        super().__init__()
        self.spec, self.report, self.error, self.demo = spec, report, error, demo
        self.fingerprint, self.plan = fingerprint, plan


class SweepRead(Message):
    """One read of a sweep folder (tui/sweep.py read_sweep), or why it failed."""

    def __init__(self, view: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.view, self.error = view, error


async def stop_and_wait(cancel: threading.Event, worker: Worker | None) -> None:
    """Set the engine's cancel flag and wait for its thread (the run saves its checkpoint first)."""
    cancel.set()
    if worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
        try:
            await worker.wait()
        except Exception:  # noqa: BLE001 - WorkerFailed / WorkerCancelled: it has stopped either way
            pass
