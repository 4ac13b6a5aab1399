"""The run-directory layer reads a driver's folder (cross-validation, sweep) by its manifest alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammo_tui.errors import RunDirError
from mammo_tui.rundir import group_kind, member_dirs
from mammo_tui.runread import group_info, list_runs


def _run(path: Path, status: str, kappa: float, bal: float, started: float = 1.0) -> Path:
    path.mkdir(parents=True)
    summary = {"run_name": path.name, "status": status, "started": started, "epochs_completed": 1,
               "best_metrics": {"kappa_quadratic": kappa, "balanced_accuracy_adjusted": bal},
               "config": {"arch": "resnet18"}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_an_older_cv_without_a_member_list_lists_its_fold_folders_in_number_order(tmp_path):
    cv = tmp_path / "cv"
    for fold in (1, 2, 9, 10, 11):
        _run(cv / f"fold-{fold}", "healthy", 0.5, 0.5)
    (cv / "notes").mkdir()  # a folder that holds no run is not a member
    (cv / "cv.json").write_text(json.dumps({"folds": 11, "status": "running", "config": {"arch": "resnet18"}}))
    assert [p.name for p in member_dirs(cv)] == ["fold-1", "fold-2", "fold-9", "fold-10", "fold-11"]
    assert group_kind(cv) == "cv"


def test_a_member_list_gives_the_order_and_skips_members_not_started(tmp_path):
    sweep = tmp_path / "sw"
    for name in ("b-seed0", "a-seed0"):
        _run(sweep / name, "healthy", 0.5, 0.5)
    manifest = {"status": "running", "members": [{"run": "b-seed0"}, "a-seed0", {"run": "c-seed0"}], "planned": 3}
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    assert [p.name for p in member_dirs(sweep)] == ["b-seed0", "a-seed0"]
    info = group_info(sweep)
    assert (info.kind, info.status, info.folds, info.folds_done) == ("sweep", "running", 3, 2)


def test_the_listing_row_is_the_headline_or_the_mean_over_finished_members(tmp_path):
    cv = tmp_path / "cv"
    _run(cv / "fold-1", "healthy", 0.6, 0.4)
    _run(cv / "fold-2", "collapsed", 0.2, 0.0)
    _run(cv / "fold-3", "running", 0.9, 0.9)  # not finished: not in the mean
    (cv / "cv.json").write_text(json.dumps({"folds": 3, "status": "finished", "started": 5.0}))
    info = group_info(cv)
    assert info.kappa_quadratic == pytest.approx(0.4) and info.bal_acc_adj == pytest.approx(0.2)
    # an older manifest says only "finished": the folder is as healthy as its worst member
    assert info.status == "collapsed"
    sweep = tmp_path / "sw"
    _run(sweep / "x-seed0", "collapsed", 0.1, 0.1)
    (sweep / "sweep.json").write_text(json.dumps({
        "status": "finished", "outcome": "healthy", "members": ["x-seed0"],
        "headline": {"kappa_quadratic": 0.77, "balanced_accuracy_adjusted": 0.66}}))
    info = group_info(sweep)
    assert (info.status, info.kappa_quadratic, info.bal_acc_adj) == ("healthy", 0.77, 0.66)


def test_list_runs_shows_each_folder_then_its_members_and_survives_a_damaged_manifest(tmp_path):
    runs = tmp_path / "runs"
    _run(runs / "single", "healthy", 0.5, 0.5, started=3.0)
    _run(runs / "sw" / "a-seed0", "warning", 0.3, 0.3)
    (runs / "sw" / "sweep.json").write_text(json.dumps({"status": "running", "started": 2.0, "members": ["a-seed0"]}))
    _run(runs / "cv" / "fold-1", "healthy", 0.5, 0.5)
    (runs / "cv" / "cv.json").write_text("{not json")
    rows = [(r.name, r.kind) for r in list_runs(runs)]
    assert rows[:3] == [("single", "run"), ("sw", "sweep"), ("a-seed0", "member")]
    assert ("cv", "cv") in rows and ("fold-1", "fold") in rows


def test_train_resume_of_a_sweep_folder_names_the_sweep_command(tmp_path):
    from mammo_tui.app import TrainRequest, train

    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"status": "interrupted", "members": []}))
    with pytest.raises(RunDirError, match=r"this is a sweep; continue it with `mammo-tui sweep --resume"):
        train(TrainRequest(resume=str(sweep)))


def test_run_names_keep_any_script_and_a_name_with_nothing_to_keep_is_refused():
    """A non-ASCII --run-name became a timestamp without a word."""
    from mammo_tui.rundir import safe_run_name

    assert safe_run_name("Überprüfung 2") == "Überprüfung-2" and safe_run_name("データ") == "データ"
    assert safe_run_name("a/b c") == "a-b-c"
    with pytest.raises(RunDirError, match="--run-name '///' has no letter or digit"):
        safe_run_name("///")
