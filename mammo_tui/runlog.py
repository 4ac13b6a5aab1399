"""The run log: `events.jsonl`, one JSON event per line, appended and flushed per event.

The writer is an event sink; `read_events` replays a finished run and `follow_events` tails a live
one, so `mammo-tui watch` shows the same dashboard whether the run is in-process or headless.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mammo_tui.errors import RunDirError
from mammo_tui.events import RUN_ENDS, CheckpointSaved, Event, from_dict

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


class RunLogError(RunDirError, OSError):
    """The run log cannot be opened or written: a message for the user (exit 2) that is still an
    OSError for callers that already handle those (report, the runs browser)."""


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EISDIR:
        return "it is a directory, not a file"
    return exc.strerror or str(exc)


class RunLogWriter:
    """Append-only JSONL sink: one os.write per event (no buffer that a failed flush could replay
    or glue onto the next line), fsynced for terminal events.

    On open, a torn last line (kill -9 or a full disk mid-write) is cut off, so the next event
    starts on a line of its own; `repaired` says what was done (the trainer logs it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.repaired = ""
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._repair()
        except OSError as exc:
            self.close()
            raise RunLogError(f"cannot open the run log {self.path}: {_reason(exc)}. "
                              f"{_fix_for(exc, self.path)}") from None

    def _repair(self) -> None:
        size = os.fstat(self._fd).st_size
        tail = os.pread(self._fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        cut = tail.rfind(b"\n") + 1
        torn = tail[cut:]
        if not torn:
            return
        if parse_line(torn.decode("utf-8", "replace")) is not None:
            os.write(self._fd, b"\n")  # a whole event that lost only its line end: keep it
            self.repaired = f"{self.path}: the last event had no line end; added it"
            return
        os.ftruncate(self._fd, size - len(torn))
        self.repaired = (f"{self.path}: removed a torn last line ({len(torn)} bytes of an event cut off "
                         "by a kill or a full disk); the events before it are intact")

    def __call__(self, event: Event) -> None:
        data = (json.dumps(_json_safe(event.to_dict()), separators=(",", ":")) + "\n").encode("utf-8")
        if self._fd is None:
            raise RunLogError(f"the run log {self.path} is closed")
        start = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if isinstance(event, (*RUN_ENDS, CheckpointSaved)):
                os.fsync(self._fd)
        except OSError as exc:
            self._cut_back(start)
            raise RunLogError(f"cannot append to the run log {self.path}: {_reason(exc)}. "
                              "The checkpoints already written are intact; free space and --resume.") from None

    def _cut_back(self, size: int) -> None:
        """Undo a half-written line, so the log stays one event per line (best effort)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass

    def close(self) -> None:
        """Never raises: every event was written (or reported) when it was sent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _fix_for(exc: OSError, path: Path) -> str:
    if exc.errno == errno.EISDIR:
        return f"Move that directory away (mv {path} {path}.bak) and run again."
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"The run directory is not writable; copy it (cp -r {path.parent} NEW) and --resume NEW."
    if exc.errno == errno.ENOSPC:
        return "Free space, then --resume the run."
    return "Check the run directory, then --resume the run."


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
    with _open_log(path) as handle:
        return [event for event in map(parse_line, handle) if event is not None]


def _open_log(path: Path):
    """The log for reading; RunLogError (an OSError) naming it when it cannot be read."""
    try:
        return open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RunLogError(f"cannot read the run log {path}: {_reason(exc)}. {_fix_for(exc, path)}") from None


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
    with _open_log(path) as handle:
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
            if isinstance(event, RUN_ENDS):
                # A resumed run appends to its log: an end with more lines after it is not the end.
                pending = handle.readline()
                if not pending:
                    return
