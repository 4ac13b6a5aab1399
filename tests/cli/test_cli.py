"""The command line as a script user sees it: exit codes, messages, no textual in headless mode."""

import subprocess
import sys
import time

import pytest

TINY = ["--no-pretrained", "--img-size", "32", "--batch-size", "16", "--set", "augment=false",
        "--set", "max_batches_per_epoch=2", "--set", "num_workers=0"]


def run_py(code: str, cwd, timeout=600):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_help_imports_neither_torch_nor_textual(tmp_path):
    proc = run_py("import sys\nfrom mammo_tui.cli import build_parser\nbuild_parser().format_help()\n"
                  "print(sorted(m for m in ('torch', 'textual', 'pydicom', 'sklearn') if m in sys.modules))",
                  tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_headless_train_never_imports_textual_and_writes_a_run(tiny_demo, tmp_path):
    args = ["train", "--no-ui", "--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, "--preset", "demo",
            "--epochs", "1", "--outdir", str(tmp_path / "runs"), "--run-name", "cli", *TINY]
    proc = run_py(f"import sys\nfrom mammo_tui.cli import main\nrc = main({args!r})\n"
                  "print('TEXTUAL' if any(m.startswith('textual') for m in sys.modules) else 'NO-TEXTUAL')\n"
                  "sys.exit(rc)", tmp_path)
    assert proc.returncode in (0, 3), proc.stderr + proc.stdout
    assert "NO-TEXTUAL" in proc.stdout
    assert "epoch 1/1" in proc.stdout and "\x1b" not in proc.stdout
    assert (tmp_path / "runs" / "cli" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["train", "--no-ui"], "no dataset"),
    (["train", "--no-ui", "--demo", "--set", "lerning_rate=1"], "unknown config key 'lerning_rate'"),
    (["train", "--no-ui", "--demo", "--arch", "vgg99"], "arch must be one of"),
    (["train", "--no-ui", "--demo", "--preset", "missing.toml"], "preset file missing.toml does not exist"),
    (["train", "--no-ui", "--csv", "nope.csv"], "nope.csv"),
    (["train", "--no-ui", "--resume", "not-a-run"], "not-a-run"),
    (["train", "--no-ui", "--demo", "--set", "class_weights=balanced"], "balances the classes twice"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_presets_command_lists_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "presets"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("head_only", "last_block", "last_two_blocks", "full_finetune", "demo"):
        assert name in proc.stdout


@pytest.mark.slow
def test_default_demo_run_learns_every_class(tmp_path):
    """`mammo-tui train --no-ui --demo` with the demo preset as shipped: not collapsed, all classes predicted."""
    import json

    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--demo", "--outdir",
                           str(tmp_path / "runs"), "--run-name", "demo"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    assert summary["status"] in ("healthy", "warning")
    best = summary["best_metrics"]
    assert min(best["prediction_counts"]) > 0, best["prediction_counts"]
    assert min(best["recall_per_class"]) > 0
    assert best["kappa_quadratic"] > 0.5


@pytest.mark.parametrize("args, message", [
    (["cv", "--no-ui", "--demo", "--folds", "1"], "--folds must be between 2 and 20"),
    (["cv", "--no-ui"], "no dataset"),
    (["cv", "--no-ui", "--resume", "nowhere"], "nowhere is not a directory"),
])
def test_cv_bad_input_exits_2_with_a_message(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_without_a_terminal_train_and_cv_run_headless_and_say_so(tmp_path):
    # subprocess pipes are not terminals: a script that forgets --no-ui gets the plain output
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "train"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert "no terminal; running headless as with --no-ui" in proc.stderr
    assert proc.returncode == 2 and "no dataset" in proc.stderr  # the headless path's own message


def test_in_a_terminal_cv_opens_the_wizard_and_train_resume_the_dashboard(monkeypatch, tmp_path):
    """What the terminal path hands the TUI (the TUI itself is tested through run_test)."""
    from mammo_tui import cli
    from mammo_tui.tui import app

    jobs = []
    monkeypatch.setattr(cli, "_wants_ui", lambda args: True)
    monkeypatch.setattr(app, "run_app", lambda *args, **kwargs: jobs.append((args, kwargs)) or 0)
    assert cli.main(["cv", "--demo", "--folds", "3", "--epochs", "2", "--outdir", str(tmp_path)]) == 0
    args, kwargs = jobs[-1]
    # as train: the wizard, pre-filled; no --preset, so the decision flow plans and the flags ride along
    assert args == ("wizard",) and kwargs["cv_folds"] == 3 and kwargs["demo"]
    assert kwargs["config"] is None and kwargs["overrides"] == {"epochs": 2} and kwargs["runs_root"] == str(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    assert cli.main(["train", "--resume", str(run)]) == 0
    job = jobs[-1][1]["job"]
    assert job.resume == str(run) and job.config is None and not job.cv_folds
    assert jobs[-1][1]["runs_root"] == str(tmp_path)


def test_a_sweeps_run_dies_with_the_sweep_even_after_kill_9():
    """Runs of a parallel sweep kept training after the sweep was killed with -9. A process that
    calls die_with_parent() (every `mammo-tui` command a sweep starts) gets SIGTERM when its parent
    dies; outside a sweep (no MAMMO_TUI_DIE_WITH) it changes nothing."""
    import signal

    parent = (
        "import os, subprocess, sys, time\n"
        "from mammo_tui.cli_process import PARENT_ENV\n"
        "env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})\n"
        "code = 'from mammo_tui.cli_process import die_with_parent; die_with_parent(); import time; time.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code], env=env, start_new_session=True,\n"  # as the sweep
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(1.5)\n"
        "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    child = int(proc.stdout.split()[0])

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/status") as status:
                return "\nState:\tZ" not in status.read()  # a zombie nobody reaped is gone too
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), "the run outlived its sweep"
