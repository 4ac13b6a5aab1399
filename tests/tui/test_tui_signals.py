"""Signals reach the real app in a real terminal (a pty): SIGTERM and SIGHUP end it cleanly, with
the terminal given back (alternate screen left) and the documented exit code 130."""

import os
import pty
import select
import signal
import sys
import time

import pytest

ALT_SCREEN_ON, ALT_SCREEN_OFF = b"\x1b[?1049h", b"\x1b[?1049l"


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the child closed the terminal
        return b""


def run_until_signal(args: list[str], signum: int) -> tuple[int | None, bytes]:
    """Start `mammo-tui ARGS` on a pty, wait for its screen, send signum; (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, on the pty as its terminal
        os.execvp(sys.executable, [sys.executable, "-m", "mammo_tui", *args])
    out, deadline = b"", time.time() + 60
    while ALT_SCREEN_ON not in out and time.time() < deadline:
        out += _read(fd, 0.5)
    time.sleep(1.0)  # the app's signal handlers are installed once it is mounted
    os.kill(pid, signum)
    deadline = time.time() + 30
    while time.time() < deadline:
        out += _read(fd, 0.2)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            out += _read(fd, 0.2)
            return os.waitstatus_to_exitcode(status), out
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None, out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and ptys")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_app_cleanly_with_130(tmp_path, signum):
    code, out = run_until_signal(["--runs-dir", str(tmp_path), "runs"], signum)
    assert ALT_SCREEN_ON in out, out[-500:]
    assert code == 130, (code, out[-500:])
    assert out.rfind(ALT_SCREEN_OFF) > out.rfind(ALT_SCREEN_ON)  # the terminal is given back
    assert b"Traceback" not in out
