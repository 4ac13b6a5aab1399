"""Fault survival: kill -9, SIGTERM, unwritable run dirs, PHI never written out."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mammo_tui.engine.checkpoint import load_checkpoint
from mammo_tui.runlog import read_events

TINY = ["--preset", "demo", "--no-pretrained", "--img-size", "32", "--batch-size", "16", "--seed", "7",
        "--set", "augment=false", "--set", "num_workers=0", "--set", "early_stop_patience=0"]


def start_training(spec, outdir, name, epochs, *extra):
    args = [sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--csv", spec.csv, "--dicom-root",
            spec.dicom_root, "--outdir", str(outdir), "--run-name", name, "--epochs", str(epochs), *TINY, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_event(run_dir: Path, predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "events.jsonl").exists():
            for line in (run_dir / "events.jsonl").read_text().splitlines():
                try:
                    if predicate(json.loads(line)):
                        return
                except ValueError:
                    pass
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.returncode}\n{proc.stdout.read()}{proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("event never came")


def final_epoch_metrics(run_dir: Path) -> dict:
    return [e for e in read_events(run_dir) if e.type == "epoch"][-1].metrics


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tiny_demo, tmp_path):
    reference = start_training(tiny_demo, tmp_path, "reference", 3)
    assert reference.wait(timeout=600) in (0, 3), reference.stderr.read()

    proc = start_training(tiny_demo, tmp_path, "killed", 3)
    run_dir = tmp_path / "killed"
    wait_for_event(run_dir, lambda e: e["type"] == "batch" and e["epoch"] == 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # the run directory stays readable, checkpoints are whole
    events = read_events(run_dir)
    assert events[0].type == "run_started"
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert last["epoch"] in (1, 2)
    json.loads((run_dir / "summary.json").read_text())

    resumed = subprocess.run([sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--resume", str(run_dir)],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode in (0, 3), resumed.stdout + resumed.stderr
    assert f"resuming at epoch {last['epoch'] + 1}" in resumed.stdout
    a, b = final_epoch_metrics(tmp_path / "reference"), final_epoch_metrics(run_dir)
    for key in ("kappa_quadratic", "balanced_accuracy_adjusted", "accuracy"):
        assert a[key] == pytest.approx(b[key], abs=0.02), key
    assert np.abs(np.array(a["confusion_matrix"]) - np.array(b["confusion_matrix"])).sum() <= 2
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "stale temp files are cleaned on resume"


@pytest.mark.slow
def test_sigterm_saves_marks_interrupted_and_exits_130(tiny_demo, tmp_path):
    proc = start_training(tiny_demo, tmp_path, "term", 50)
    run_dir = tmp_path / "term"
    wait_for_event(run_dir, lambda e: e["type"] == "checkpoint" and e["kind"] == "last", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] and summary["status"] == "interrupted"
    assert read_events(run_dir)[-1].type == "finished"
    assert "--resume" in out


@pytest.mark.slow
def test_unwritable_outdir_is_a_clear_error(tiny_demo, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the runs folder should be")
    proc = start_training(tiny_demo, blocker / "runs", "x", 1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert "cannot write the run directory" in err and "Traceback" not in err


@pytest.mark.slow
def test_no_patient_identifying_header_values_reach_the_run_dir(make_dicom, tmp_path):
    rng = np.random.default_rng(0)
    rows = ["image_path,label,patient_id"]
    for i in range(24):
        label = "ABCD"[i % 4]
        name = f"img{i}.dcm"
        pixels = (rng.random((40, 32)) * 4000 * (1 + "ABCD".index(label))).astype(np.uint16)
        make_dicom(tmp_path / "data" / name, pixels, patient_id=f"MRN-{i // 2:05d}", PatientName="DOE^JANE",
                   PatientBirthDate="19600101", InstitutionName="ST ELSEWHERE HOSPITAL")
        rows.append(f"{name},{label},")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--csv",
                           str(tmp_path / "data" / "labels.csv"), "--outdir", str(tmp_path / "runs"),
                           "--run-name", "phi", "--epochs", "1", *TINY], capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "phi"
    texts = [p.read_bytes() for p in run_dir.rglob("*") if p.is_file()]
    texts.append((proc.stdout + proc.stderr).encode())
    for secret in (b"DOE^JANE", b"19600101", b"MRN-0000", b"ST ELSEWHERE"):
        assert not any(secret in t for t in texts), secret


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs: room for the run's small files, not for a checkpoint (root only)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.mark.slow
def test_disk_full_is_a_clear_failure_and_the_log_says_so(tiny_demo, tiny_disk):
    proc = start_training(tiny_demo, tiny_disk, "full", 2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert "disk is full" in out + err and "Traceback" not in err
    assert "--resume" in out + err


# -- the run-directory lock ----------------------------------------------------------------------

from mammo_tui.errors import RunDirError  # noqa: E402
from mammo_tui.rundir import lock_run_dir  # noqa: E402

LOCK_HOLDER = """
import sys, time
from mammo_tui.rundir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_locked_run_dir_is_refused_naming_the_holder_and_freed_by_kill_9(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=rf"in use .*pid {holder.pid} on .*since"):
        lock_run_dir(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tmp_path / ".lock").is_file()  # left behind by the killed holder: must not block
    lock = lock_run_dir(tmp_path)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_one_process_cannot_lock_a_run_dir_twice(tmp_path):
    """The TUI: a second job on a run that is still training in this process is refused too."""
    lock = lock_run_dir(tmp_path)
    with pytest.raises(RunDirError, match="in use"):
        lock_run_dir(tmp_path)
    lock.release()
    lock_run_dir(tmp_path).release()


def test_atomic_writes_name_the_file_when_it_is_a_directory(tmp_path):
    from mammo_tui.rundir import write_json

    (tmp_path / "summary.json").mkdir()
    with pytest.raises(RunDirError, match=r"summary.json: it is a directory"):
        write_json(tmp_path / "summary.json", {})
    assert not list(tmp_path.glob(".*.tmp"))
