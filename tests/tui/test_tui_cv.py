"""Cross-validation in the TUI with the real engine: launch from the wizard, watch, runs browser,
stop and resume, apply a fix (tiny: resnet18 at 32 px, 2 batches per epoch, 1 epoch per fold)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Select

from mammo_tui.drivers.cv import read_manifest, resume_fields
from mammo_tui.rundir import CV_SUMMARY_FILE
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.app import TrainRequest
from mammo_tui.tui.dialogs import ConfirmScreen
from mammo_tui.tui.runs import RunsScreen
from tui_helpers import (async_test, collapse_config, screen_text, tiny_config, to_config_screen,
                                   wait_until)
from mammo_tui.tui.widgets import FoldsPanel


def fold_rows(state) -> dict[int, tuple]:
    return {k: (r.status, r.best_epoch, r.best_metrics.get("kappa_quadratic"))
            for k, r in state.fold_results.items()}


async def dashboard(pilot) -> DashboardScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), what="dashboard")
    return pilot.app.screen


async def confirm(pilot, expected: str) -> str:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirmation")
    question = pilot.app.screen.question
    assert expected in question
    await pilot.press("y")
    return question


@pytest.fixture(scope="module")
def finished_cv(tmp_path_factory) -> tuple[Path, dict]:
    """A 3-fold CV launched from the wizard on the demo dataset, and what its dashboard showed."""
    import asyncio

    runs = tmp_path_factory.mktemp("cv-runs")

    async def launch() -> dict:
        app = MammoApp("wizard", runs_root=str(runs), demo_size=0.05, config=tiny_config(),
                       run_name="cv-run")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await to_config_screen(pilot, app)
            screen.query_one("#cv-folds", Select).value = 3
            await pilot.press("f5")
            dash = await dashboard(pilot)
            await wait_until(pilot, lambda: "fold 2/3" in dash.sub_title, timeout=180, what="fold 2")
            await wait_until(pilot, lambda: "Fold 2/3 · Epoch" in screen_text(app), what="fold 2 progress")
            mid = {"text": screen_text(app), "sub_title": dash.sub_title}
            await wait_until(pilot, lambda: dash.state.cv_finished is not None, timeout=300, what="the CV")
            await wait_until(pilot, lambda: not dash.engine_running, timeout=30, what="worker exit")
            # a capture can catch a partial repaint: wait for the finished screen, then read it
            await wait_until(pilot, lambda: "3/3 folds" in screen_text(app), timeout=10, what="the CV summary")
            return {"mid": mid, "text": screen_text(app), "rows": fold_rows(dash.state),
                    "exit_code": dash.result.exit_code, "panel": dash.query_one(FoldsPanel).display}

    return runs, asyncio.run(launch())


@pytest.mark.slow
def test_a_cv_launched_from_the_wizard_trains_every_fold_and_shows_the_summary(finished_cv):
    runs, seen = finished_cv
    cv_dir = runs / "cv-run"
    summary = json.loads((cv_dir / CV_SUMMARY_FILE).read_text())
    assert seen["panel"] and "fold 2/3" in seen["mid"]["sub_title"]
    assert "Fold 2/3 · Epoch" in seen["mid"]["text"] and "pending" in seen["mid"]["text"]
    # the panel shows what cv_summary.json says, fold by fold
    assert seen["rows"] == {row["fold"]: (row["status"], row["best_epoch"],
                                          row["best_metrics"]["kappa_quadratic"])
                            for row in summary["per_fold"]}
    mean = summary["aggregate"]["kappa_quadratic"]
    text = seen["text"]
    assert "3/3 folds" in text and f"κq {mean['mean']:.3f} ± {mean['std']:.3f}" in text
    assert "cross-validation" in text and "mean" in text and "std" in text
    assert seen["exit_code"] == (3 if summary["collapsed_folds"] else 0)
    manifest = read_manifest(cv_dir)
    assert manifest["folds"] == 3 and manifest["status"] == "finished" and manifest["config"]["img_size"] == 32
    for fold in (1, 2, 3):  # every fold is an ordinary run directory
        assert (cv_dir / f"fold-{fold}" / "checkpoints" / "best.pt").is_file()


@async_test
async def test_watching_a_finished_cv_shows_the_same_folds(finished_cv):
    runs, seen = finished_cv
    app = MammoApp("watch", run_dir=str(runs / "cv-run"))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.cv_finished is not None, what="the replayed CV")
        await pilot.pause(0.3)
        assert dash.read_only and fold_rows(dash.state) == seen["rows"]
        await wait_until(pilot, lambda: "3/3 folds" in screen_text(app), timeout=10, what="the CV summary")


@async_test
async def test_runs_browser_lists_a_cv_with_its_folds_and_opens_it(finished_cv):
    runs, seen = finished_cv
    app = MammoApp("runs", runs_root=str(runs))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="runs screen")
        await wait_until(pilot, lambda: "3/3 folds" in screen_text(app), timeout=10, what="the CV row")
        text = screen_text(app)
        assert "cv-run  3-fold CV" in text and "3/3 folds" in text
        assert all(f"└ fold-{k}" in text for k in (1, 2, 3))
        summary = json.loads((runs / "cv-run" / CV_SUMMARY_FILE).read_text())
        assert f"{summary['aggregate']['kappa_quadratic']['mean']:.3f}" in text  # the mean, not a fold
        assert app.screen.query_one(DataTable).row_count == 4
        await pilot.press("enter")  # the CV row is first
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.cv_finished is not None, what="the CV")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")
        await pilot.press("down", "enter")  # fold 1 alone: an ordinary run
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.done, what="fold 1")
        assert not dash.state.is_cv and dash.state.run_name == "fold-1"


@pytest.mark.slow
@async_test
async def test_stop_keeps_finished_folds_and_resume_continues_the_cv(demo_dataset, tmp_path):
    from mammo_tui.data.sources import DatasetSpec

    spec = DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))
    job = TrainRequest(config=tiny_config(epochs=4), dataset=spec, outdir=str(tmp_path), run_name="cv",
                   preset="test", cv_folds=3)
    app = MammoApp(job=job)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.fold == 2 and dash.state.epochs, timeout=180, what="fold 2")
        assert dash.resume_hint().endswith(f"mammo-tui cv --resume {tmp_path / 'cv'}")
        await pilot.press("s")
        question = await confirm(pilot, "Stop training?")
        assert "finished folds are kept" in question and "cv --resume" in question
        await wait_until(pilot, lambda: not dash.engine_running, timeout=60, what="the stop")
        await pilot.pause(0.3)
        assert dash.result.exit_code == 130 and dash.state.cv_stopped
        assert list(dash.state.fold_results) == [1]
        await wait_until(pilot, lambda: "stopped" in screen_text(app), timeout=10, what="fold 2 stopped")
    assert read_manifest(tmp_path / "cv")["status"] == "interrupted"

    fields, folds = resume_fields(tmp_path / "cv")  # what `mammo-tui cv --resume DIR` runs
    app = MammoApp(job=TrainRequest(**fields, cv_folds=folds))
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.cv_finished is not None, timeout=300, what="the CV")
        assert dash.state.fold_results[1].kept and not dash.state.fold_results[2].kept
        assert sorted(dash.state.fold_results) == [1, 2, 3]
    assert json.loads((tmp_path / "cv" / CV_SUMMARY_FILE).read_text())["folds"] == 3


@pytest.mark.slow
@async_test
async def test_applying_a_fix_during_a_cv_starts_a_new_cv_with_it(demo_dataset, tmp_path):
    from mammo_tui.data.sources import DatasetSpec

    spec = DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))
    job = TrainRequest(config=collapse_config(epochs=30), dataset=spec, outdir=str(tmp_path), run_name="bad",
                   preset="test", cv_folds=2)
    app = MammoApp(job=job)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.suggestions(), timeout=180, what="a suggestion")
        fix = dash.state.suggestions()[0]
        await pilot.press("a")
        await confirm(pilot, "a new cross-validation starts")
        await wait_until(pilot, lambda: Path(dash.state.cv_dir).name not in ("bad", ".") and dash.state.batch,
                         timeout=180, what="the new CV")
        new_dir = Path(dash.state.cv_dir)
        assert not dash.state.fold_results and dash.state.fold == 1  # the old folds are gone
        await pilot.press("s")
        await confirm(pilot, "Stop training?")
        await wait_until(pilot, lambda: not dash.engine_running, timeout=60, what="the stop")
    old, new = read_manifest(tmp_path / "bad"), read_manifest(new_dir)
    assert old["config"][fix["key"]] != fix["value"] and new["config"][fix["key"]] == fix["value"]
    assert old["status"] == "interrupted" and new["folds"] == 2 and new_dir.parent == tmp_path
    assert (tmp_path / "bad" / "fold-1" / "config.toml").is_file()  # the stopped CV is kept, resumable
