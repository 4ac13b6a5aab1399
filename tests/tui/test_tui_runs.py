"""`watch RUN_DIR` (finished and live) and the runs browser, on real run directories."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mammo_tui.runlog import RunLogWriter
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.tui.runs import CompareScreen, RunsScreen
from samples import sample_events
from tui_helpers import async_test, screen_text, tiny_config, wait_until
from mammo_tui.tui.widgets import CollapseBanner


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, demo_dataset) -> Path:
    """Two finished runs made by the real engine without any UI (as `train --no-ui` would)."""
    from mammo_tui.data.sources import DatasetSpec
    from mammo_tui.app import TrainRequest, train

    root = tmp_path_factory.mktemp("runs")
    spec = DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))
    for name, overrides in (("run-a", dict(sampler="none")), ("run-b", dict(sampler="weighted"))):
        result = train(TrainRequest(config=tiny_config(**overrides), dataset=spec, outdir=str(root),
                                    run_name=name, preset="demo"))
        assert result.run_dir.is_dir()
    return root


@pytest.mark.slow
@async_test
async def test_watch_a_finished_run_renders_its_final_panels(runs_root):
    from mammo_tui.rundir import read_summary

    run_dir = runs_root / "run-a"
    summary = read_summary(run_dir)
    app = MammoApp("watch", run_dir=str(run_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        screen = app.screen
        assert screen.replay is not None and not screen.follow  # replayed, not followed
        await wait_until(pilot, lambda: screen.state.done and not screen.state.new_log, what="replay")
        await pilot.pause(0.1)
        assert screen.state.best_epoch == summary["best_epoch"]
        assert len(screen.state.epochs) == summary["epochs_completed"]
        status = screen.state.collapse.status
        assert screen.query_one(CollapseBanner).has_class(f"-{status}")
        text = screen_text(app)
        assert "FINISHED" in text and "run-a" in text and "true\\pred" in text
        assert "run finished" in text


@async_test
async def test_watch_follows_a_live_log_until_it_finishes(tmp_path):
    events = sample_events()
    run_dir = tmp_path / "live"
    writer = RunLogWriter(run_dir / "events.jsonl")
    for event in events[:6]:
        writer(event)

    def write_the_rest() -> None:
        for event in events[6:]:
            time.sleep(0.02)
            writer(event)
        writer.close()

    app = MammoApp("watch", run_dir=str(run_dir))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        screen = app.screen
        assert screen.follow and screen.engine_running  # the follower thread
        await wait_until(pilot, lambda: screen.state.run_name == "sample-healthy", what="first events")
        assert not screen.state.done
        thread = threading.Thread(target=write_the_rest)
        thread.start()
        await wait_until(pilot, lambda: screen.state.done, timeout=30, what="finished event")
        thread.join()
        await wait_until(pilot, lambda: not screen.engine_running, timeout=10, what="follower exit")
        assert [m.epoch for m in screen.state.epochs] == [1, 2, 3, 4]


@async_test
async def test_quitting_watch_stops_the_follower(tmp_path):
    run_dir = tmp_path / "silent"
    writer = RunLogWriter(run_dir / "events.jsonl")
    writer(sample_events()[0])  # started, then nothing: a run that is still training elsewhere
    app = MammoApp("watch", run_dir=str(run_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        screen = app.screen
        await wait_until(pilot, lambda: screen.state.run_name != "", what="first event")
        await pilot.press("q")
        await wait_until(pilot, lambda: not screen.engine_running, timeout=10, what="follower exit")
    writer.close()


@pytest.mark.slow
@async_test
async def test_runs_browser_lists_opens_and_compares(runs_root):
    app = MammoApp("runs", runs_root=str(runs_root))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="runs screen")
        text = screen_text(app)
        assert "run-a" in text and "run-b" in text and "2 runs under" in text
        screen = app.screen
        # mark the first run, move to the second and compare
        await pilot.press("space", "down", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        text = screen_text(app)
        assert "config differences" in text and "sampler" in text and "weighted" in text
        assert "bal-acc-adj" in text and "Δ" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back to runs")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="open")
        dashboard = app.screen
        await wait_until(pilot, lambda: dashboard.state.done, what="replay")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back from the dashboard")


@async_test
async def test_runs_browser_with_no_runs_says_how_to_start(tmp_path):
    app = MammoApp("runs", runs_root=str(tmp_path / "nothing"))
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="runs screen")
        await pilot.pause()
        assert "No runs under" in screen_text(app)
        await pilot.press("c")  # nothing to compare: a hint, no crash
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
