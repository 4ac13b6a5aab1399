"""Bad-input corpus: run directories you can trust (resume rules, the lock, damaged or read-only run
directories, a moved dataset). Every case runs the real CLI and must end in a message with the
documented exit code, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import FAST, assert_clean, mammo
from mammo_tui.runlog import read_events


@pytest.fixture(scope="module")
def base_run(demo_dataset, tmp_path_factory) -> Path:
    """One finished 1-epoch run, trained from its own folder with a *relative* CSV path."""
    home = tmp_path_factory.mktemp("rundir-corpus")
    shutil.copytree(demo_dataset.csv.parent, home / "data")
    proc = mammo("train", "--no-ui", "--csv", "data/labels.csv", "--dicom-root", "data/dicom",
                 "--outdir", "runs", "--run-name", "base", *FAST, cwd=home)
    assert_clean(proc, (0, 3))
    return home / "runs" / "base"


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A private copy of the finished run (its dataset stays where it was)."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def edit_toml(run_dir: Path, key: str, value: str) -> None:
    path = run_dir / "config.toml"
    lines = [f"{key} = {value}" if line.startswith(f"{key} = ") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def config_history(run_dir: Path) -> list:
    return json.loads((run_dir / "summary.json").read_text())["config_history"]


# -- config.toml edited: refused with the difference named, applied and recorded under --force ---


@pytest.mark.slow
def test_an_edited_config_toml_is_refused_on_resume_naming_the_change(run, tmp_path):
    edit_toml(run, "lr", "0.5")
    out = assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), 2,
                       "lr", "0.5", "edited in config.toml", "--force")
    assert "Traceback" not in out


@pytest.mark.slow
def test_an_edited_config_toml_is_applied_and_recorded_with_force(run, tmp_path):
    edit_toml(run, "epochs", "2")
    out = assert_clean(mammo("train", "--no-ui", "--resume", run, "--force", cwd=tmp_path), (0, 3))
    assert "resuming at epoch 2" in out
    history = config_history(run)
    assert [h["epochs"] for h in history] == [[1, 1], [2, 2]]
    assert history[-1]["changes"] == {"epochs": [1, 2]}
    assert any(e.type == "config_changed" and e.changes == {"epochs": [1, 2]} for e in read_events(run))
    # config.toml and last.pt agree again: a plain resume is no longer refused
    assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), (0, 3))


@pytest.mark.slow
def test_set_on_resume_is_refused_without_force_naming_the_flag(run, tmp_path):
    assert_clean(mammo("train", "--no-ui", "--resume", run, "--set", "lr=0.25", cwd=tmp_path), 2,
                 "lr", "0.25", "flag / --set")


def test_the_tui_resume_path_gets_the_same_rules(run):
    from mammo_tui.app import train
    from mammo_tui.errors import ConfigError
    from mammo_tui.app import TrainRequest

    edit_toml(run, "lr", "0.5")
    with pytest.raises(ConfigError, match="edited in config.toml"):
        train(TrainRequest(resume=str(run)))


@pytest.mark.slow
@pytest.mark.parametrize("damage, named", [
    (lambda r: (r / "config.toml").write_text("lr = = 3\n"), "not valid TOML"),
    (lambda r: ((r / "config.toml").unlink(), (r / "config.toml").mkdir()), "is a directory"),
    (lambda r: (r / "dataset.json").write_text("{not json"), "dataset.json is not valid JSON"),
    (lambda r: ((r / "dataset.json").unlink(), (r / "dataset.json").mkdir()), "is a directory"),
    (lambda r: (r / "dataset.json").write_text("[]"), "dataset.json has no dataset"),
    (lambda r: (r / "splits.csv").unlink(), "splits.csv is missing"),
    (lambda r: ((r / "events.jsonl").unlink(), (r / "events.jsonl").mkdir()), "events.jsonl"),
    (lambda r: ((r / "summary.json").unlink(), (r / "summary.json").mkdir()), "summary.json"),
])
def test_a_damaged_run_directory_is_a_message_on_resume(run, tmp_path, damage, named):
    damage(run)
    assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), 2, named)


@pytest.mark.slow
def test_a_missing_config_toml_is_rewritten_from_the_checkpoint(run, tmp_path):
    (run / "config.toml").unlink()
    out = assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), (0, 3))
    assert "config.toml was missing" in out and (run / "config.toml").is_file()


# -- the run log -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_torn_last_line_is_repaired_on_resume_and_said(run, tmp_path):
    with open(run / "events.jsonl", "a") as handle:
        handle.write('{"type":"log","level":"info","mess')  # kill -9 mid-write
    out = assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), (0, 3), "torn last line")
    lines = (run / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # nothing glued onto the torn line
    assert "Traceback" not in out


# -- the lock ----------------------------------------------------------------------------------

HOLD = """
import sys, time
from mammo_tui.rundir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_resume_of_a_run_in_use_is_refused_naming_the_holder(run, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), 2,
                     "in use", f"pid {holder.pid}")
    finally:
        holder.kill()  # kill -9: the OS drops the lock; the stale lock file must not block
        holder.wait()
    assert (run / ".lock").is_file()
    assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), (0, 3))


# -- paths: resume from another folder, a moved dataset ------------------------------------------


@pytest.mark.slow
def test_resume_works_from_another_folder_and_records_absolute_paths(run, tmp_path):
    spec = json.loads((run / "dataset.json").read_text())["spec"]
    assert Path(spec["csv"]).is_absolute() and Path(spec["dicom_root"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=elsewhere), (0, 3))


@pytest.mark.slow
def test_a_moved_dataset_is_named_and_can_be_relocated(base_run, tmp_path):
    moved = Path(shutil.copytree(base_run.parent.parent / "data", tmp_path / "moved-data"))
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    info = json.loads((run / "dataset.json").read_text())
    info["spec"]["csv"] = str(tmp_path / "gone" / "labels.csv")
    info["spec"]["dicom_root"] = str(tmp_path / "gone" / "dicom")
    (run / "dataset.json").write_text(json.dumps(info))
    assert_clean(mammo("train", "--no-ui", "--resume", run, cwd=tmp_path), 2,
                 "not where the run recorded it", "--csv NEW.csv")
    edit_toml(run, "epochs", "2")
    out = assert_clean(mammo("train", "--no-ui", "--resume", run, "--force", "--csv", moved / "labels.csv",
                             "--dicom-root", moved / "dicom", cwd=tmp_path), (0, 3), "relocated")
    assert "resuming at epoch 2" in out
    assert json.loads((run / "dataset.json").read_text())["spec"]["csv"] == str(moved / "labels.csv")
    assert str(moved) in (run / "splits.csv").read_text()


@pytest.mark.slow
def test_a_run_name_longer_than_the_file_system_allows_is_a_message(demo_dataset, tmp_path):
    assert_clean(mammo("train", "--no-ui", "--csv", demo_dataset.csv, "--dicom-root", demo_dataset.dicom_root,
                       "--outdir", tmp_path, "--run-name", "x" * 300, *FAST, cwd=tmp_path), 2, "--run-name")


# -- read-only run directories ---------------------------------------------------------------------


@pytest.fixture
def read_only(run, tmp_path):
    """The run copy, seen through a read-only bind mount (root ignores chmod; needs root)."""
    view = tmp_path / "ro-run"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(run), str(view)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
    yield view
    subprocess.run(["umount", "-l", str(view)], capture_output=True)


@pytest.mark.slow
def test_resume_and_eval_of_a_read_only_run_directory_are_messages(read_only, demo_dataset, tmp_path):
    assert_clean(mammo("train", "--no-ui", "--resume", read_only, cwd=tmp_path), 2, "read-only", "cp -r")
    assert_clean(mammo("eval", read_only, "--csv", demo_dataset.csv, "--dicom-root", demo_dataset.dicom_root,
                       cwd=tmp_path), 2, "eval-", "writable copy")


@pytest.mark.slow
def test_eval_with_a_name_too_long_for_the_file_system_is_a_message(run, demo_dataset, tmp_path):
    assert_clean(mammo("eval", run, "--csv", demo_dataset.csv, "--dicom-root", demo_dataset.dicom_root,
                       "--name", "n" * 300, cwd=tmp_path), 2, "--name")


# -- cross-validation: the same rules ----------------------------------------------------------------


@pytest.fixture
def fake_cv(run, tmp_path) -> Path:
    """A 2-fold CV directory whose fold 1 is a finished run recorded as fold 1 of 2 (no training)."""
    from mammo_tui.config import from_mapping
    import tomllib

    config = from_mapping(tomllib.loads((run / "config.toml").read_text())).to_dict()
    spec = json.loads((run / "dataset.json").read_text())["spec"]
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv.json").write_text(json.dumps({"folds": 2, "started": 0, "status": "interrupted", "preset": "demo",
                                            "config": config, "dataset": spec, "demo": False,
                                            "demo_size": None, "skip_bad_rows": False}))
    fold = Path(shutil.move(str(run), cv / "fold-1"))
    info = json.loads((fold / "dataset.json").read_text())
    info["cv"] = {"folds": 2, "fold": 1, "config": config}
    (fold / "dataset.json").write_text(json.dumps(info))
    return cv


def test_cv_resume_refuses_set_and_folds_that_differ(fake_cv, tmp_path):
    assert_clean(mammo("cv", "--no-ui", "--resume", fake_cv, "--set", "lr=0.5", cwd=tmp_path), 2,
                 "lr", "0.5", "every fold must train the same way")
    assert_clean(mammo("cv", "--no-ui", "--resume", fake_cv, "--folds", "5", cwd=tmp_path), 2,
                 "2-fold", "--folds 5")


def test_cv_resume_refuses_a_cv_json_edited_to_other_folds(fake_cv, tmp_path):
    manifest = json.loads((fake_cv / "cv.json").read_text())
    (fake_cv / "cv.json").write_text(json.dumps({**manifest, "folds": 5}))
    assert_clean(mammo("cv", "--no-ui", "--resume", fake_cv, cwd=tmp_path), 2, "fold 1 of 2", "cv.json")


@pytest.mark.parametrize("damage, named", [
    (lambda p: p.write_text("{broken"), "cv.json is not valid JSON"),
    (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
    (lambda p: p.write_text('{"folds": "two", "config": {}}'), "folds"),
])
def test_a_corrupt_cv_json_is_named_not_reported_missing(fake_cv, tmp_path, damage, named):
    damage(fake_cv / "cv.json")
    out = assert_clean(mammo("cv", "--no-ui", "--resume", fake_cv, cwd=tmp_path), 2, named)
    assert "no cv.json" not in out


def test_two_cv_runs_of_one_directory_at_once_are_refused(fake_cv, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(fake_cv)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_clean(mammo("cv", "--no-ui", "--resume", fake_cv, cwd=tmp_path), 2, "in use", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_a_resume_refused_leaves_the_lock_free_for_the_next_one(run):
    """In one process (the TUI): a refused resume must not keep the run locked."""
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.errors import ConfigError
    from mammo_tui.rundir import lock_run_dir

    edit_toml(run, "lr", "0.5")
    with pytest.raises(ConfigError):
        train(TrainRequest(resume=str(run)))
    lock_run_dir(run).release()

