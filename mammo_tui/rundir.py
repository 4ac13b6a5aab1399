"""Run directory layout and the runs listing (pure: no torch, no textual)."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_tui.errors import RunDirError
from mammo_tui.runlog import EVENTS_FILE, RunLogError, read_events

try:
    import fcntl
except ImportError:  # not POSIX: no run-directory locks
    fcntl = None

CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"
SPLITS_FILE = "splits.csv"
DATASET_FILE = "dataset.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"  # who trains in this run directory now (fcntl.flock; see RunLock)
NAME_MAX = 255  # bytes in one folder name on the usual file systems (ext4, xfs, btrfs, tmpfs)


class RunFileError(RunLogError):
    """A run-directory file cannot be written or read: a message naming the file (exit 2) that is
    still an OSError for callers that already handle those."""


def file_problem(path: str | Path, exc: OSError, doing: str = "write") -> RunFileError:
    """OSError -> a message that names the file, says why in words and what to do."""
    path = Path(path)
    if exc.errno == errno.ENOSPC:
        why, fix = "the disk is full", "Free space (or pass --outdir on another disk), then --resume the run."
    elif exc.errno == errno.EISDIR or path.is_dir():
        why, fix = "it is a directory, not a file", f"Move that directory away (mv {path} {path}.bak)."
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the folder is read-only" if exc.errno == errno.EROFS else "permission denied"
        fix = (f"Work on a writable copy of the run (cp -r {path.parent} NEW_DIR) or pass --outdir on a "
               "writable disk.")
    elif exc.errno == errno.ENAMETOOLONG:
        why, fix = "the name is too long for the file system", "Pick a shorter --run-name / --name."
    else:
        why, fix = exc.strerror or str(exc), "Check the run directory."
    error = RunFileError(f"cannot {doing} {path}: {why}. {fix}")
    error.errno = exc.errno
    return error


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
    except OSError as exc:
        raise file_problem(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run dirs are shared with colleagues
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise file_problem(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def new_run_name(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def safe_run_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if len(cleaned.encode()) > NAME_MAX - 20:  # room for what is written next to it (temp files)
        raise RunDirError(f"--run-name is {len(cleaned)} characters; folder names may have at most "
                          f"{NAME_MAX - 20} here. Pick a shorter --run-name.")
    return cleaned or new_run_name()


def read_run_json(path: str | Path, fix: str) -> Any:
    """A JSON file the caller needs (dataset.json, cv.json): RunDirError naming it when it is
    missing, a directory, unreadable or not JSON; `fix` says what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing. {fix}") from None
    except OSError as exc:
        raise file_problem(path, exc, "read") from None
    except ValueError as exc:
        raise RunDirError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:120]}); it was damaged "
                          f"or edited. {fix}") from None


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
        try:
            events = read_events(run_dir)
        except OSError:  # a log that cannot be read: listed as unknown, not a crash of the list
            events = []
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


# ---------------------------------------------------------------------------------------------
# one process at a time per run directory


class RunLock:
    """An exclusive lock on a run (or CV) directory, held while a process trains in it.

    fcntl.flock on RUN/.lock: the OS drops it when the holder exits or is killed (kill -9), so a
    lock file left behind never blocks; the file only says who took it last (pid, host, command,
    start time), which the refusal quotes."""

    def __init__(self, fd: int | None, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)  # closing the descriptor releases the flock
            except OSError:
                pass

    def __del__(self) -> None:
        self.release()


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Take RUN/.lock or raise RunDirError saying who holds it. The directory must exist."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None:
        return RunLock(None, path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise file_problem(path, exc, "lock the run directory with") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder_text(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise file_problem(path, exc, "lock") from None
        raise RunDirError(f"{run_dir} is in use by another mammo-tui process ({holder}). Two processes "
                          "in one run directory would write every epoch twice: wait for it to finish, "
                          "or stop it first (Ctrl-C in its terminal, or kill its pid).") from None
    _write_holder(fd)
    return RunLock(fd, path)


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(["mammo-tui", *sys.argv[1:]])}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    except OSError:
        pass  # a full disk must not stop the lock itself; a refusal then says less


def _holder_text(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"pid {info['pid']} on {info['host']}, `{info['command']}`, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not recorded its pid yet"
