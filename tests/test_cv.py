import json
import subprocess
import sys

import pytest

from mammo_tui.cv import aggregate, mean_std


def test_mean_std_ignores_missing_values():
    assert mean_std([0.5, 0.7, None]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414, abs=1e-4), "n": 2}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_cv_runs_every_fold_with_patient_disjoint_validation_sets(tiny_demo, tmp_path):
    args = [sys.executable, "-m", "mammo_tui", "cv", "--folds", "3", "--csv", tiny_demo.csv, "--dicom-root",
            tiny_demo.dicom_root, "--preset", "demo", "--epochs", "1", "--no-pretrained", "--img-size", "32",
            "--set", "augment=false", "--set", "max_batches_per_epoch=2", "--set", "num_workers=0",
            "--outdir", str(tmp_path), "--run-name", "cv"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "mean ± std over 3 folds" in proc.stdout
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert [row["fold"] for row in summary["per_fold"]] == [1, 2, 3]
    val_groups = []
    for fold in (1, 2, 3):
        lines = (tmp_path / "cv" / f"fold-{fold}" / "splits.csv").read_text().splitlines()[1:]
        rows = [line.split(",") for line in lines]
        train = {r[2] for r in rows if r[3] == "train"}
        val = {r[2] for r in rows if r[3] == "val"}
        assert not train & val
        val_groups.append(val)
    assert not (val_groups[0] & val_groups[1]) and not (val_groups[1] & val_groups[2])
    expected = aggregate(summary["per_fold"])["kappa_quadratic"]["mean"]
    assert summary["aggregate"]["kappa_quadratic"]["mean"] == pytest.approx(expected)
    # running it again keeps the finished folds instead of retraining them
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.stdout.count("already finished") == 3
