"""Run directory layout: file names, reading and writing them, driver folders, locks (pure: no torch,
no textual). Reading a run as a whole (a report, the runs listing) is runread.py's."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mammo_tui.errors import RunDirError
from mammo_tui.runlog import EVENTS_FILE, RunLogError

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


def names_something(name: str) -> bool:
    """Whether `name` holds a letter or digit (of any script): something a folder can be named by."""
    return re.search(r"[^\W_]", name) is not None


def safe_run_name(name: str, what: str = "--run-name") -> str:
    """`name` as a folder name: letters and digits of any script, '.', '_' and '-' kept, anything
    else (spaces, slashes) as '-'. A name left with no letter or digit is refused (it used to
    become a timestamp, or "seed0" for a sweep run, without a word). `what` names it in messages."""
    cleaned = re.sub(r"[^\w.-]+", "-", name).strip("-.")
    if not names_something(cleaned):
        raise RunDirError(f"{what} {name!r} has no letter or digit to name a folder with; pick another")
    if len(cleaned.encode()) > NAME_MAX - 20:  # room for what is written next to it (temp files)
        raise RunDirError(f"{what} is {len(cleaned)} characters; folder names may have at most "
                          f"{NAME_MAX - 20} here. Pick a shorter one.")
    return cleaned


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


# ---------------------------------------------------------------------------------------------
# folders of runs made by a driver (a cross-validation, a sweep), known by their manifest file

# file name -> kind. Each is written by its driver (drivers/cv.py, drivers/sweep.py); this layer
# reads only the keys every manifest shares, so it never imports a driver:
#   status    running | finished | interrupted | failed   (the driver's own progress)
#   outcome   optional: the folder's result status (healthy | warning | collapsed) once finished
#   started   epoch seconds;  preset, config: what the runs train (the sweep's base)
#   members   optional: the member run folders in order (names, or {"run": name, ...} tables);
#             without it (older cross-validations) every sub-folder holding a run is a member
#   planned   optional: how many members there will be (a CV's "folds" is read as that too)
#   headline  optional: {kappa_quadratic, balanced_accuracy_adjusted} for the listing; without
#             it, the mean over the finished members
CV_FILE, SWEEP_FILE = "cv.json", "sweep.json"
CV_SUMMARY_FILE = "cv_summary.json"  # a finished cross-validation's per-fold results and mean ± std
MANIFEST_FILES = {CV_FILE: "cv", SWEEP_FILE: "sweep"}
FINISHED_STATUSES = ("healthy", "warning", "collapsed")  # a run that ended with a result


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / EVENTS_FILE).is_file() or (path / SUMMARY_FILE).is_file()


def is_cv_dir(path: str | Path) -> bool:
    """A cross-validation's folder: its manifest, or (an older or hand-copied one) its summary."""
    path = Path(path)
    return (path / CV_FILE).is_file() or (path / CV_SUMMARY_FILE).is_file()


def group_kind(path: str | Path) -> str | None:
    """"cv" / "sweep" for a driver's folder (its manifest file exists), else None."""
    path = Path(path)
    return next((kind for name, kind in MANIFEST_FILES.items() if (path / name).is_file()), None)


def is_group_dir(path: str | Path) -> bool:
    return group_kind(path) is not None


def read_group_manifest(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The folder's manifest (of that kind, when given), leniently ({} when missing or damaged:
    listings and screens must not crash)."""
    kind = kind or group_kind(path)
    name = next((n for n, k in MANIFEST_FILES.items() if k == kind), None)
    if name is None:
        return {}
    try:
        data = json.loads((Path(path) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def member_dirs(path: str | Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """The member run folders that exist, in the driver's order (fold-10 after fold-9)."""
    path = Path(path)
    manifest = read_group_manifest(path) if manifest is None else manifest
    listed = manifest.get("members")
    if isinstance(listed, list):
        names = [m.get("run") if isinstance(m, dict) else m for m in listed]
        return [path / n for n in names if isinstance(n, str) and n and (path / n).is_dir()]
    found = [p for p in path.iterdir() if p.is_dir() and is_run_dir(p)] if path.is_dir() else []
    return sorted(found, key=lambda p: _natural(p.name))


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


def lock_held(run_dir: str | Path) -> bool | None:
    """Does a process hold RUN/.lock (a trainer or driver, see RunLock)? None when unknown (no lock
    file: an older run, or no flock on this system). A "running" status nobody holds was killed."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        # a shared lock, released at once: granted only when no process holds its exclusive one
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def create_locked(path: str | Path, what: str) -> RunLock:
    """Create a driver's folder (`what`: "cross-validation directory", "sweep folder") and take its
    lock: one process per folder (two would train each member run twice)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot write the {what} {path}: {exc.strerror or exc}. "
                          "Pass --outdir on a writable disk.") from None
    return lock_run_dir(path)


def remove_husk(path: str | Path, *names: str) -> None:
    """Undo create_locked for a folder that never got a member run: its lock file and `names`
    (its manifest), then the folder itself if nothing else is in it."""
    path = Path(path)
    for name in (*names, LOCK_FILE):
        (path / name).unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:
        pass


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
