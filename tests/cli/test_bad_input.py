"""The bad-input corpus end to end through the CLI: exit 2 with every problem named, or a
reported skip with --skip-bad-rows. Nothing is lost silently and no traceback is shown."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import FAST, good_rows, mammo, png, write_csv

from mammo_tui.runlog import read_events


def make_dataset(root: Path, per_class=(6, 6, 6, 6), patients_per_class=3, bad_rows=True) -> Path:
    rows = good_rows(root, per_class, patients_per_class)
    if bad_rows:
        (root / "fake.dcm").write_text("this is not a DICOM file")
        png(root / "tiny.png", 100, size=(1, 1))
        rows += ["missing.png,B,px", "fake.dcm,C,px", "A0.png,A,p0-0", "tiny.png,B,px", "../../etc/passwd,C,px",
                 "B1.png,E,px", "B2.png,0,px", "C1.png,,px"]
    return write_csv(root, rows)


@pytest.mark.slow
def test_bad_rows_stop_the_run_with_every_problem_counted(tmp_path):
    csv = make_dataset(tmp_path / "data")
    proc = mammo("train", "--no-ui", "--csv", str(csv), "--outdir", str(tmp_path / "runs"), *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for fragment in ("missing_file", "unreadable", "duplicate_path", "tiny_image", "outside_root",
                     "unknown_label", "--skip-bad-rows", "row "):
        assert fragment in proc.stderr, fragment
    assert not (tmp_path / "runs").exists(), "nothing is written before the user decides"


@pytest.mark.slow
def test_skip_bad_rows_trains_and_records_every_skipped_row(tmp_path):
    csv = make_dataset(tmp_path / "data")
    proc = mammo("train", "--no-ui", "--csv", str(csv), "--skip-bad-rows", "--outdir", str(tmp_path / "runs"),
                 "--run-name", "skip", *FAST, cwd=tmp_path)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    report = json.loads((tmp_path / "runs" / "skip" / "dataset.json").read_text())["report"]
    rows = sorted(p["row"] for p in report["problems"])
    assert rows == list(range(26, 34)), rows  # the 8 bad rows, each with its CSV line number
    assert (report["rows_read"], report["rows_usable"], report["n_images"]) == (32, 24, 24)
    assert sum(report["problem_counts"].values()) == 8


@pytest.mark.slow
@pytest.mark.parametrize("per_class, patients, expected", [
    ((1, 6, 6, 6), 3, "A"),   # a 1-image class cannot be on both sides of the split
    ((6, 6, 6, 6), 1, "belong to one patient"),  # every class owned by a single patient
])
def test_degenerate_classes_train_with_a_warning_naming_the_class(tmp_path, per_class, patients, expected):
    csv = make_dataset(tmp_path / "data", per_class, patients, bad_rows=False)
    proc = mammo("train", "--no-ui", "--csv", str(csv), "--outdir", str(tmp_path / "runs"), "--run-name", "r",
                 *FAST, cwd=tmp_path)
    if proc.returncode == 2:  # refusing is acceptable only with a message naming the problem
        assert expected.split()[0] in proc.stderr and "Traceback" not in proc.stderr
        return
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    warnings = [e.message for e in read_events(tmp_path / "runs" / "r") if e.type == "log" and e.level == "warning"]
    assert any(expected in w or f"class {expected}" in w for w in warnings), warnings


@pytest.mark.slow
def test_empty_class_is_reported_and_training_goes_on(tmp_path):
    csv = make_dataset(tmp_path / "data", (6, 6, 6, 0), bad_rows=False)
    proc = mammo("train", "--no-ui", "--csv", str(csv), "--outdir", str(tmp_path / "runs"), "--run-name", "r",
                 *FAST, cwd=tmp_path)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "class D has no usable images" in proc.stdout


@pytest.mark.slow
def test_a_closed_stdout_pipe_does_not_kill_training(tmp_path):
    csv = make_dataset(tmp_path / "data", bad_rows=False)
    cmd = (f"{sys.executable} -m mammo_tui train --no-ui --csv {csv} --outdir {tmp_path / 'runs'} --run-name p "
           + " ".join(FAST) + " | head -1")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "runs" / "p" / "summary.json").read_text())["epochs_completed"] == 1


@pytest.mark.slow
def test_batch_size_larger_than_the_dataset_is_clamped_with_a_warning(tmp_path):
    csv = make_dataset(tmp_path / "data", bad_rows=False)
    proc = mammo("train", "--no-ui", "--csv", str(csv), "--outdir", str(tmp_path / "runs"), *FAST,
                 "--batch-size", "999", cwd=tmp_path)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "batch_size 999 is larger than the" in proc.stdout


def folders_without_patient_ids(root: Path) -> Path:
    """8 patients x 2 views in class folders; the patient is only in the file name."""
    for patient in range(8):
        (root / "ABCD"[patient % 4]).mkdir(parents=True, exist_ok=True)
        for view in ("CC", "MLO"):
            png(root / "ABCD"[patient % 4] / f"P{patient}_{view}.png", 40 + 50 * (patient % 4))
    return root


def test_a_bad_group_pattern_is_refused_with_a_message(tmp_path):
    images = folders_without_patient_ids(tmp_path / "data")
    proc = mammo("train", "--no-ui", "--images", str(images), "--group-pattern", "(", "--outdir",
                 str(tmp_path / "runs"), *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--group-pattern '(' is not a valid regular expression" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_plan_says_loudly_when_images_have_no_patient_ids(tmp_path):
    images = folders_without_patient_ids(tmp_path / "data")
    proc = mammo("plan", str(images), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING: no patient ids: all 16 images" in proc.stdout and "--group-pattern" in proc.stdout
    proc = mammo("plan", str(images), "--group-pattern", r"^(P\d+)_", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout and "Patients (groups): 8, from group pattern" in proc.stdout
