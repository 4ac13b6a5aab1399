"""CLI-level faults: output into a closed pipe (any command), SIGTERM/SIGHUP during a dataset scan
(plan, eval, train, cv), files that are not CSV text given as the CSV, and unexpected exceptions,
which only the CLI's top level turns into 'internal error' (exit 1, traceback in a file)."""

from __future__ import annotations

import gzip
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus import FAST, assert_clean, good_rows, mammo, write_csv

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX pipes and signals")
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, what `seq 9 | head -1` gives too


def _dataset(root: Path) -> Path:
    return write_csv(root, good_rows(root))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(csv, run dir, work dir): one tiny run for report / eval."""
    work = tmp_path_factory.mktemp("cli-corpus")
    csv = _dataset(work / "data")
    proc = mammo("train", "--no-ui", "--csv", csv, "--outdir", work / "runs", "--run-name", "r", *FAST, cwd=work)
    assert_clean(proc, (0, 3))
    return csv, work / "runs" / "r", work


# -- output into a closed pipe ----------------------------------------------------------------------


def _into_closed_pipe(args: list[str], cwd: Path, stderr_closed: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI with stdout (and maybe stderr) a pipe whose reader is gone, as after `| head`."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "mammo_tui", *map(str, args)], cwd=cwd, stdout=write_end,
                              stderr=write_end if stderr_closed else subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write_end)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr or "")


@pytest.mark.slow
@posix_only
@pytest.mark.parametrize("args", [["presets"], ["--help"], ["--version"], ["train", "--help"], ["plan", "{csv}"],
                                  ["plan", "{csv}", "--json"], ["report", "{run}", "--stdout"], ["report", "{run}"],
                                  ["eval", "{run}", "--csv", "{csv}"], ["runs", "--help"]])
def test_output_into_a_closed_pipe_exits_quietly(trained, args):
    csv, run, work = trained
    args = [a.format(csv=csv, run=run) for a in args]
    proc = _into_closed_pipe(args, work)
    # argparse's own --help / --version printing ignores write errors: quiet, exit 0
    out = assert_clean(proc, (0, EXIT_CLOSED_PIPE) if {"--help", "--version"} & set(args) else EXIT_CLOSED_PIPE)
    assert "Broken pipe" not in out and "Exception ignored" not in out and "BrokenPipe" not in out, out


@posix_only
def test_an_error_into_a_closed_stderr_keeps_its_exit_code(tmp_path):
    proc = _into_closed_pipe(["plan", tmp_path / "missing.csv"], tmp_path, stderr_closed=True)
    assert proc.returncode == 2


# -- signals during a dataset scan ---------------------------------------------------------------------

# the scan's image probe announces itself, then blocks: the test signals while it is scanning
_SLOW_SCAN = """
import sys, time
import mammo_tui.data.cache as cache
def probe(path):
    print("SCANNING", file=sys.stderr, flush=True)
    time.sleep(120)
cache.probe = probe
from mammo_tui.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _signal_during_scan(args: list[str], signum: int, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SCAN, *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 300
    while "SCANNING" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "SCANNING" in seen, seen
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still scanning 60 s after the signal:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, seen + err)


@pytest.mark.slow
@posix_only
@pytest.mark.parametrize("command,signum", [
    ("plan", signal.SIGTERM), ("plan", signal.SIGHUP), ("eval", signal.SIGTERM),
    ("train", signal.SIGTERM), ("train", signal.SIGHUP), ("cv", signal.SIGTERM)])
def test_a_signal_during_the_scan_exits_130(trained, tmp_path, command, signum):
    csv, run, _ = trained
    args = {"plan": ["plan", csv], "eval": ["eval", run, "--csv", csv],
            "train": ["train", "--no-ui", "--csv", csv, "--outdir", tmp_path / "runs", *FAST],
            "cv": ["cv", "--no-ui", "--folds", "2", "--csv", csv, "--outdir", tmp_path / "runs", *FAST]}[command]
    proc = _signal_during_scan(args, signum, tmp_path)
    assert_clean(proc, 130, signal.Signals(signum).name)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing half-written"


# -- files that are not CSV text --------------------------------------------------------------------------


def _xlsx(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")


NOT_CSV = {
    "gzip": lambda p: p.write_bytes(gzip.compress(b"image_path,label\nA0.png,A\n")),
    "xlsx": _xlsx,
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 40),
    "nul-filled": lambda p: p.write_bytes(b"image_path,label\n" + bytes(4000)),
    "jpeg": lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200)),
}


def _printable(out: str) -> bool:
    return all(ch.isprintable() or ch in "\n\t" for ch in out) and "\ufffd" not in out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(NOT_CSV))
@pytest.mark.parametrize("command", ["plan", "train", "eval"])
def test_a_non_text_csv_is_named_without_raw_bytes(trained, tmp_path, kind, command):
    _, run, _ = trained
    path = tmp_path / "labels.csv"
    NOT_CSV[kind](path)
    args = {"plan": ["plan", path], "train": ["train", "--no-ui", "--csv", path, "--outdir", tmp_path / "runs", *FAST],
            "eval": ["eval", run, "--csv", path]}[command]
    out = assert_clean(mammo(*args, cwd=tmp_path), 2, str(path), "CSV")
    assert _printable(out), repr(out[-2000:])


def test_a_utf16_csv_through_the_cli_is_read(tmp_path):
    csv = _dataset(tmp_path / "data")
    csv.write_bytes(csv.read_text().encode("utf-16-le"))  # no BOM: Excel-ish exports do this too
    out = assert_clean(mammo("plan", csv, cwd=tmp_path), 0, "UTF-16")
    assert "24" in out


@pytest.mark.parametrize("case", ["folder", "empty", "header-only-nul", "duplicate-label", "fifo"])
def test_odd_user_files_are_user_errors_never_internal(tmp_path, case):
    path = tmp_path / "labels.csv"
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "header-only-nul":
        path.write_bytes(b"\x00" * 10)
    elif case == "duplicate-label":
        _dataset(tmp_path)
        path.write_text(path.read_text().replace("image_path,label,patient_id", "image_path,Label,label "))
    elif case == "fifo":
        if os.name != "posix":
            pytest.skip("POSIX FIFOs")
        os.mkfifo(path)
    out = assert_clean(mammo("plan", path, cwd=tmp_path, timeout=60), 2, "labels.csv")
    assert "internal error" not in out


# -- unexpected exceptions: only the top level, exit 1, traceback in a file ----------------------------------

_CRASH = """
import sys
import mammo_tui.cli as cli
def broken(args):
    raise ZeroDivisionError("division by zero in a test")
cli.cmd_presets = broken
raise SystemExit(cli.main(["presets"]))
"""


def test_an_unexpected_exception_is_one_line_and_a_traceback_file(tmp_path):
    env = {**os.environ, "MAMMO_TUI_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-c", _CRASH], cwd=tmp_path, capture_output=True, text=True, env=env)
    out = assert_clean(proc, 1, "internal error (ZeroDivisionError: division by zero in a test)", "please report")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    crash_file = Path(lines[0].split("traceback in ")[1].split(" ")[0].rstrip(";,)"))
    assert crash_file.is_file(), out
    assert "Traceback" in crash_file.read_text() and "ZeroDivisionError" in crash_file.read_text()
    if os.name == "posix":
        assert stat.S_IMODE(crash_file.stat().st_mode) == 0o600  # it may quote paths with patient names


def test_mammo_tui_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "MAMMO_TUI_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "-c", _CRASH], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "internal error" in proc.stderr


def test_watch_of_a_folder_without_a_run_exits_2_and_points_at_the_runs(tmp_path):
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "events.jsonl").write_text("")
    assert_clean(mammo("watch", str(runs), cwd=tmp_path), 2, "holds no run itself", "r1")
    assert_clean(mammo("watch", str(runs / "r1" / "nothing"), cwd=tmp_path), 2, "not a directory")
    (tmp_path / "empty").mkdir()
    assert_clean(mammo("watch", str(tmp_path / "empty"), cwd=tmp_path), 2, "holds no run")
