"""The dashboard driven by fixed events (no engine): panels, keys, layout rules, coalesced repaints."""

from __future__ import annotations

import pytest

from mammo_tui.events import BatchProgress
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.dashboard import READ_ONLY_MSG, DashboardScreen
from mammo_tui.tui.dialogs import HelpScreen
from mammo_tui.tui.messages import EngineEvent
from samples import sample_events
from tui_helpers import async_test, screen_text, wait_until
from mammo_tui.tui.widgets import CollapseBanner, CurvePlot, SuggestionList


async def replayed(pilot) -> DashboardScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), what="dashboard")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: not screen.state.new_log, what="first repaint")
    await pilot.pause(0.1)  # the log renders its lines on the next frame
    return screen


@async_test
async def test_replay_of_a_healthy_run_fills_every_panel():
    app = MammoApp("watch", events=sample_events())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await replayed(pilot)
        banner = screen.query_one(CollapseBanner)
        assert banner.has_class("-healthy")
        assert screen.query_one(SuggestionList).has_class("-empty")
        text = screen_text(app)
        for expected in ("HEALTHY", "FINISHED", "best epoch 4", "recall", "true\\pred", "131",
                         "━ train", "κ quadratic", "run finished", "bal-acc-adj"):
            assert expected in text, expected
        assert "watch · sample-healthy · finished" in text


@async_test
async def test_collapsed_run_shows_red_banner_and_suggestions_at_80x24():
    app = MammoApp("watch", events=sample_events(collapsed=True))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await replayed(pilot)
        assert screen.query_one(CollapseBanner).has_class("-collapsed")
        suggestions = screen.query_one(SuggestionList)
        assert suggestions.option_count >= 2 and suggestions.display
        # 80x24: the confusion matrix and metrics table make room for the suggestions...
        assert not screen.query_one("#confusion").display
        assert not screen.query_one("#metrics").display
        text = screen_text(app)
        assert "COLLAPSED" in text and "sampler = weighted" in text
        # ...until the user asks for it.
        await pilot.press("3")
        await pilot.pause()
        assert screen.query_one("#confusion").display


@async_test
async def test_panel_toggles_hide_and_show():
    app = MammoApp("watch", events=sample_events())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await replayed(pilot)
        for key, panel in (("1", "#curves"), ("2", "#classes"), ("6", "#log")):
            await pilot.press(key)
            await pilot.pause()
            assert not screen.query_one(panel).display, panel
            await pilot.press(key)
            await pilot.pause()
            assert screen.query_one(panel).display, panel


@async_test
async def test_help_screen_lists_every_key_that_works_here():
    app = MammoApp("watch", events=sample_events(collapsed=True))
    async with app.run_test(size=(100, 40)) as pilot:
        await replayed(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        for expected in ("Apply fix", "print the equivalent command", "show / hide confusion matrix",
                         "show / hide event log", "Quit", "Help"):
            assert expected in text, expected
        # read-only: nothing to stop here, and no config to go back to
        assert "stop training (asks first)" not in text and "Edit config" not in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="help closed")


@async_test
async def test_watch_is_read_only():
    app = MammoApp("watch", events=sample_events(collapsed=True))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await replayed(pilot)
        await wait_until(pilot, lambda: "Quit" in screen_text(app), timeout=10, what="the footer")
        footer = next(line for line in screen_text(app).splitlines() if "Quit" in line)
        assert "Stop" not in footer and "Apply fix" in footer  # only what works read-only
        for key in ("s", "a"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)  # no confirmation dialog
        messages = [n.message for n in app._notifications]
        assert messages.count(READ_ONLY_MSG) == 1  # s says why it does nothing here
        # a prints the command that applies the highlighted fix where the run lives; the sample run
        # trained all its 2 epochs, so the command trains 5 more with the fix (a change with no epoch
        # left to train is refused)
        assert messages[-1] == ("mammo-tui train --resume runs/sample-collapsed --set lr=0.0001 --set epochs=7 "
                                "--force")
        assert not screen.engine_running


@async_test
async def test_batch_events_repaint_progress_only_and_bursts_coalesce(monkeypatch):
    app = MammoApp("watch", events=sample_events(finished=False)[:1])
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await replayed(pilot)
        plot_refreshes = []
        repaints = []
        original = screen._repaint
        monkeypatch.setattr(CurvePlot, "refresh", lambda self, *a, **k: plot_refreshes.append(1))
        monkeypatch.setattr(screen, "_repaint", lambda: (repaints.append(1), original()))
        for batch in range(1, 51):
            screen.post_message(EngineEvent(BatchProgress(epoch=1, batch=batch, n_batches=50,
                                                          loss=1.0, images_per_s=100.0, eta_s=9.0)))
        await wait_until(pilot, lambda: screen.state.batch and screen.state.batch.batch == 50,
                         what="batches")
        await pilot.pause(0.3)
        assert plot_refreshes == []
        assert 1 <= len(repaints) <= 5  # 50 events, a handful of repaints
        assert "Batch  50/50" in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@async_test
async def test_no_panel_is_cut_to_nothing(size):
    app = MammoApp("watch", events=sample_events())
    async with app.run_test(size=size) as pilot:
        screen = await replayed(pilot)
        assert screen.query_one("#banner").region.height >= 1
        for selector in ("#progress", "#loss-plot", "#metric-plot", "#classes", "#log"):
            widget = screen.query_one(selector)
            assert widget.region.height >= 2, selector
            assert widget.region.width >= 30, selector
