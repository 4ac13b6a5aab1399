"""Live training under the dashboard with the real engine (tiny: resnet18, 32 px, 2 batches/epoch)."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from mammo_tui.rundir import read_summary
from mammo_tui.runlog import read_events
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.app import TrainRequest
from mammo_tui.tui.dialogs import ConfirmScreen
from tui_helpers import async_test, collapse_config, screen_text, tiny_config, wait_until
from mammo_tui.tui.widgets import CollapseBanner, SuggestionList


@pytest.fixture
def spec(demo_dataset):
    from mammo_tui.data.sources import DatasetSpec

    return DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))


def job(spec, outdir: Path, name: str, config) -> TrainRequest:
    return TrainRequest(config=config, dataset=spec, outdir=str(outdir), run_name=name, preset="test")


async def dashboard(pilot) -> DashboardScreen:
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
    return app.screen


async def confirm(pilot, expected: str) -> None:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirmation")
    await wait_until(pilot, lambda: expected in screen_text(pilot.app), timeout=10, what=expected)
    await pilot.press("y")


@pytest.mark.slow
@async_test
async def test_forced_collapse_shows_the_red_banner_and_applying_a_fix_starts_a_new_run(spec, tmp_path):
    app = MammoApp(job=job(spec, tmp_path, "collapse", collapse_config()))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="the run")
        await pilot.pause(0.3)
        assert dash.state.collapse.status == "collapsed"
        assert dash.query_one(CollapseBanner).has_class("-collapsed")
        text = screen_text(app)
        assert "COLLAPSED" in text and "100 % of predictions" in text
        suggestions = dash.query_one(SuggestionList)
        assert suggestions.option_count >= 1 and suggestions.display
        # lr 0.1 is far too high even from scratch: the first fix; then the sampler
        assert [s["key"] for s in dash.state.suggestions()][:2] == ["lr", "sampler"]
        assert "lr = 0.001" in text and "sampler = weighted" in text
        assert dash.result.exit_code == 3  # collapsed

        # The run finished: applying the highlighted fix starts a new run with it.
        await pilot.press("a")
        await confirm(pilot, "a new run starts with the changed")
        await wait_until(pilot, lambda: dash.state.run_name not in ("", "collapse"), what="new run")
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="new run end")
        assert dash.state.config["lr"] == 0.001 and dash.state.config["sampler"] == "none"
        assert read_summary(tmp_path / "collapse")["config"]["lr"] == 0.1  # untouched
        new_run = Path(dash.state.run_dir)
        assert read_summary(new_run)["parent_run"] == str(tmp_path / "collapse")
        from mammo_tui.runread import list_runs

        assert {r.name: r.parent for r in list_runs(tmp_path)}[new_run.name] == "collapse"


@async_test
async def test_stop_mid_run_leaves_a_resumable_run(spec, tmp_path):
    app = MammoApp(job=job(spec, tmp_path, "stopped", tiny_config(epochs=30)))
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.epochs, what="first epoch")
        await pilot.press("s")
        await confirm(pilot, "Stop training?")
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="stop")
        await pilot.pause(0.2)
        assert dash.state.finished.interrupted
        assert "INTERRUPTED" in screen_text(app)
    run_dir = tmp_path / "stopped"
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and summary["status"] == "interrupted"
    assert 1 <= summary["epochs_completed"] < 30
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "config.toml").is_file() and (run_dir / "splits.csv").is_file()


@async_test
async def test_quit_while_training_stops_the_engine_before_exiting(spec, tmp_path):
    app = MammoApp(job=job(spec, tmp_path, "quit", tiny_config(epochs=30)))
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.epochs, what="first epoch")
        await pilot.press("q")
        await confirm(pilot, "Stop it and quit?")
        for _ in range(1200):  # the app exits once the worker has returned
            if not app.is_running:
                break
            await asyncio.sleep(0.05)
        assert not app.is_running
        assert not dash.engine_running  # never a training thread left behind
    summary = read_summary(tmp_path / "quit")
    assert summary["interrupted"] is True
    assert app.exit_code == 130  # the run's exit code: interrupted


@pytest.mark.slow
@async_test
async def test_apply_while_running_restarts_from_the_best_healthy_weights_with_the_changed_config(spec, tmp_path):
    app = MammoApp(job=job(spec, tmp_path, "resumed", collapse_config(epochs=30)))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.suggestions(), what="a suggestion")
        top = dash.state.suggestions()[0]
        assert (top["key"], top["value"]) == ("lr", 0.001)
        # the dialog, the help and the log name the same restart point
        point = dash.state.restart_point()
        assert point in ("the initial weights (no epoch was healthy)",
                         f"its best healthy checkpoint (epoch {dash.state.best_healthy_epoch})")
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert f"The run stops and restarts from {point} with the changed config" in app.screen.question
        await pilot.press("y")
        # the applied suggestion leaves the list (as soon as the engine has stopped to restart)
        await wait_until(pilot, lambda: all(s["key"] != "lr" for s in dash.state.suggestions()),
                         what="the applied suggestion to leave the list")
        await wait_until(pilot, lambda: dash.state.config.get("lr") == 0.001
                         and dash.engine_running, what="the resumed run")
        resumed_at = len(dash.state.epochs) + 1
        await wait_until(pilot, lambda: dash.state.last and dash.state.last.epoch >= resumed_at,
                         what="an epoch after the resume")
        await pilot.press("s")
        await confirm(pilot, "Stop training?")
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="stop")
    run_dir = tmp_path / "resumed"
    starts = [e for e in read_events(run_dir) if e.type == "run_started"]
    assert len(starts) == 2 and starts[1].start_epoch > 1
    assert starts[1].config["lr"] == 0.001
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["lr"] == 0.001
    events = read_events(run_dir)
    restart = point.removeprefix("its ")
    assert any(f"restarting at epoch {starts[1].start_epoch} from {restart}" in getattr(e, "message", "")
               for e in events)
    changed = [e for e in events if e.type == "config_changed"]
    assert changed and changed[0].changes["lr"] == [0.1, 0.001]
    assert changed[0].reason == f"fix applied in the dashboard; restarted from {restart}"
    assert read_summary(run_dir)["config_history"][1]["epochs"][0] == starts[1].start_epoch


@async_test
async def test_an_error_before_the_run_starts_is_shown_not_swallowed(tmp_path):
    from mammo_tui.data.sources import DatasetSpec

    bad = DatasetSpec(csv=str(tmp_path / "nowhere.csv"), dicom_root=str(tmp_path))
    app = MammoApp(job=job(bad, tmp_path, "never", tiny_config()))
    async with app.run_test(size=(100, 30)) as pilot:
        dash = await dashboard(pilot)
        await wait_until(pilot, lambda: dash.state.failed and not dash.engine_running, what="failure")
        assert "nowhere.csv" in dash.state.failed.error
        await wait_until(pilot, lambda: "FAILED" in screen_text(app), timeout=10, what="FAILED")
        assert "engine stopped" in screen_text(app)
    assert not (tmp_path / "never").exists()  # no half-made run directory
