"""SVG snapshots of the wizard screens and the dashboard at 80x24 and 120x40.

Deterministic by construction: fixed events (sample.py, fixed timestamps), a made-up scanned
dataset, fixed run names, no clock, cursor blink off. Update with `pytest --snapshot-update`.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.configure import ConfigScreen
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.tui.decision import DecisionScreen
from mammo_tui.tui.fingerprint_view import FingerprintScreen
from samples import sample_cv_events, sample_events, sample_wizard_state
from tui_helpers import wait_until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


async def steady(pilot) -> None:
    """No blinking cursor, and every pending repaint done."""
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause(0.1)


def wizard_step(screen_factory):
    async def run_before(pilot) -> None:
        await pilot.app.push_screen(screen_factory(sample_wizard_state()))
        await steady(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_dataset_screen(snap_compare, size):
    async def run_before(pilot) -> None:
        await pilot.pause()
        await steady(pilot)

    assert snap_compare(MammoApp("wizard"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_fingerprint_screen(snap_compare, size):
    assert snap_compare(MammoApp("wizard"), terminal_size=size,
                        run_before=wizard_step(FingerprintScreen))


@pytest.mark.parametrize("size", SIZES)
def test_decision_screen(snap_compare, size):
    assert snap_compare(MammoApp("wizard"), terminal_size=size,
                        run_before=wizard_step(DecisionScreen))


@pytest.mark.parametrize("size", SIZES)
def test_config_screen(snap_compare, size):
    assert snap_compare(MammoApp("wizard"), terminal_size=size,
                        run_before=wizard_step(ConfigScreen))


def replayed(pilot):
    async def wait() -> None:
        app = pilot.app
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        await wait_until(pilot, lambda: not app.screen.state.new_log, what="repaint")
        await steady(pilot)
    return wait()


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_healthy(snap_compare, size):
    assert snap_compare(MammoApp("watch", events=sample_events()), terminal_size=size,
                        run_before=replayed)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_collapsed(snap_compare, size):
    assert snap_compare(MammoApp("watch", events=sample_events(collapsed=True)), terminal_size=size,
                        run_before=replayed)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_mid_run(snap_compare, size):
    """A live-looking run: mid-epoch batch progress, ETA, no end yet."""
    events = sample_events(finished=False)
    cut = max(i for i, e in enumerate(events) if e.type == "epoch" and e.epoch == 2) + 6
    assert snap_compare(MammoApp("watch", events=events[:cut]), terminal_size=size,
                        run_before=replayed)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_cross_validation_running(snap_compare, size):
    """Fold 3 of 5 in progress: the fold table with two results, the running mean, fold 3's panels."""
    assert snap_compare(MammoApp("watch", events=sample_cv_events(finished=False)), terminal_size=size,
                        run_before=replayed)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_cross_validation_finished(snap_compare, size):
    """Every fold done, one collapsed: the banner says which, the progress line has mean ± std."""
    assert snap_compare(MammoApp("watch", events=sample_cv_events()), terminal_size=size,
                        run_before=replayed)
