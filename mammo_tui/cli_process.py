"""The process around a command: signals, a closed output pipe, exit codes, and the one net that
turns a bug into a crash file and one line (the CLI's plumbing, apart from its subcommands)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from mammo_tui import __version__
from mammo_tui.exitcodes import EXIT_FAILED as EXIT_INTERNAL  # an internal error: 1, as a failed run

DEBUG_ENV = "MAMMO_TUI_DEBUG"  # 1: show the traceback of an internal error on stderr too


class Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP as an interrupt (its argument names the signal): exit 130 like Ctrl-C."""


def _abort_on_signal(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def install_abort_handlers() -> dict:
    """SIGTERM and SIGHUP abort any command like Ctrl-C (exit 130, not the shell's 143 / 129) until
    a command installs its own (training stops after the batch); returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    return {getattr(signal, name): signal.signal(getattr(signal, name), _abort_on_signal) for name in names}


def restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _scanning(frame) -> bool:
    """Whether the interrupted code is inside the dataset scan (it writes nothing: abort at once)."""
    while frame is not None:
        if frame.f_code.co_name == "scan_dataset" and frame.f_globals.get("__name__") == "mammo_tui.data.sources":
            return True
        frame = frame.f_back
    return False


def say(text: str) -> None:
    """A message on stderr; a closed stderr loses it, never the exit code."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):
        _silence(sys.stderr)


def _silence(stream) -> None:
    """Point a stream whose reader is gone at /dev/null: the interpreter's final flush then has
    nothing to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def flush_stdout() -> bool:
    """Flush stdout; False, quietly, when its reader stopped (`| head`), as other Unix tools do."""
    try:
        sys.stdout.flush()
        return True
    except (BrokenPipeError, OSError, ValueError):
        _silence(sys.stdout)
        return False


def _crash_file(text: str) -> Path | None:
    """Write an internal error's traceback where the user can attach it (0600: it may quote paths)."""
    import tempfile
    import time

    folder = Path(os.environ.get("MAMMO_TUI_CACHE") or Path.home() / ".cache" / "mammo-tui") / "crashes"
    for where in (folder, Path(tempfile.gettempdir())):
        try:
            where.mkdir(parents=True, exist_ok=True)
            path = where / f"mammo-tui-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            return path
        except OSError:
            continue
    return None


def internal_error(exc: Exception) -> int:
    import traceback

    text = "".join(traceback.format_exception(exc))
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    path = _crash_file(f"mammo-tui {__version__} {' '.join(sys.argv)}\n{text}")
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        say(text.rstrip())
    where = f"full traceback in {path}" if path else f"set {DEBUG_ENV}=1 to see the traceback"
    say(f"mammo-tui: internal error ({detail}); please report it with the {where}")
    return EXIT_INTERNAL


def install_signal_handlers(cancel: threading.Event) -> None:
    def handler(signum, frame):
        if cancel.is_set() or _scanning(frame):  # a second signal: the user means it; a scan saves nothing
            raise Interrupted(signal.Signals(signum).name)
        print(f"\n{signal.Signals(signum).name}: stopping after the current batch, saving state "
              "(send again to abort)", file=sys.stderr, flush=True)
        cancel.set()

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


PARENT_ENV = "MAMMO_TUI_DIE_WITH"  # set by a parallel sweep for its runs: the sweep's pid


def die_with_parent() -> None:
    """A parallel sweep's run stops when its sweep dies, even by kill -9 (it kept training, and the
    sweep's --resume found it "failed"): Linux sends it SIGTERM (PR_SET_PDEATHSIG), which stops
    it after the batch, saved as interrupted. Elsewhere, or outside a sweep, nothing changes."""
    expected = os.environ.pop(PARENT_ENV, "")  # not inherited by this run's own children
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:  # the sweep died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
