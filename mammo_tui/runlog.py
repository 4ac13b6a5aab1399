"""The run log: `events.jsonl`, one JSON event per line, appended and flushed per event.

The writer is an event sink; `read_events` replays a finished run and `follow_events` tails a live
one, so `mammo-tui watch` shows the same dashboard whether the run is in-process or headless.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mammo_tui.errors import RunDirError
from mammo_tui.events import Event, from_dict

EVENTS_FILE = "events.jsonl"


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/inf; a NaN loss must still be logged, so write it as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunLogWriter:
    """Append-only JSONL sink. Each line is flushed (and fsynced for terminal events)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        line = json.dumps(_json_safe(event.to_dict()), separators=(",", ":"))
        try:
            self._file.write(line + "\n")
            self._file.flush()
            if event.type in ("finished", "failed", "checkpoint"):
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise RunDirError(f"cannot append to the run log {self.path}: {exc.strerror or exc}. "
                              "The checkpoints already written are intact; free space and --resume.") from None

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def parse_line(line: str) -> Event | None:
    """One log line -> event; None for a torn last line (kill -9 mid-write) or unknown type."""
    line = line.strip()
    if not line:
        return None
    try:
        return from_dict(json.loads(line))
    except (ValueError, TypeError):
        return None


def read_events(path: str | Path) -> list[Event]:
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [event for event in map(parse_line, handle) if event is not None]


def follow_events(
    path: str | Path,
    should_stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.25,
) -> Iterator[Event]:
    """Yield events from a (possibly still growing) log until a terminal event or should_stop()."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    while not path.exists():
        if should_stop():
            return
        time.sleep(poll_s)
    with open(path, encoding="utf-8", errors="replace") as handle:
        pending = ""
        while not should_stop():
            if not pending.endswith("\n"):
                chunk = handle.readline()
                if not chunk:
                    time.sleep(poll_s)
                    continue
                pending += chunk
                if not pending.endswith("\n"):
                    continue  # the writer is mid-line; wait for the rest
            event = parse_line(pending)
            pending = ""
            if event is None:
                continue
            yield event
            if event.type in ("finished", "failed"):
                # A resumed run appends to its log: an end with more lines after it is not the end.
                pending = handle.readline()
                if not pending:
                    return
