"""The wizard through the real app: dataset -> fingerprint -> decision flow -> config -> launch."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, Select

from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.configure import ConfigScreen
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.tui.decision import DecisionScreen
from mammo_tui.tui.fingerprint_view import FingerprintScreen
from tui_helpers import async_test, screen_text, tiny_config, to_config_screen, wait_until
from mammo_tui.tui.widgets import CollapseBanner
from mammo_tui.tui.wizard import DatasetScreen


def on(app, screen_type):
    return lambda: isinstance(app.screen, screen_type)


@async_test
async def test_config_screen_validates_and_warns_inline(tmp_path):
    app = MammoApp("wizard", runs_root=str(tmp_path), demo_size=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await to_config_screen(pilot, app)
        launch = screen.query_one("#launch", Button)
        assert not launch.disabled
        screen.query_one("#f-class_weights", Select).value = "balanced"  # sampler is weighted
        await pilot.pause()
        text = screen_text(app)
        assert "balances the classes twice" in text and launch.disabled
        screen.query_one("#f-class_weights", Select).value = "none"
        screen.query_one("#f-sampler", Select).value = "none"
        await pilot.pause()
        text = screen_text(app)
        assert "no sampler, no class weights" in text and not launch.disabled
        # no pretrained weights on this box: said before launch, and a frozen backbone is refused
        assert "from scratch" in screen.query_one("#weights-status").render().plain
        screen.query_one("#f-freeze", Select).value = "last_block"
        await pilot.pause()
        assert "freezes a randomly initialised backbone" in screen_text(app) and launch.disabled
        screen.query_one("#f-pretrained").value = True
        await pilot.pause()
        assert "✖ no ImageNet weights for" in screen.query_one("#weights-status").render().plain
        assert "launch will fail" in screen_text(app)
        screen.query_one("#f-pretrained").value = False
        screen.query_one("#f-freeze", Select).value = "none"
        await pilot.pause()
        assert not launch.disabled
        screen.query_one("#f-lr", Input).value = "0"
        await pilot.pause()
        assert "lr must be" in screen_text(app) and launch.disabled
        screen.query_one("#f-lr", Input).value = ""
        await pilot.pause()
        assert "lr: empty" in screen_text(app)
        await pilot.press("f5")  # refused while invalid
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen)


@async_test
async def test_save_as_a_new_preset(tmp_path):
    from mammo_tui.config import from_mapping, load_preset

    app = MammoApp("wizard", runs_root=str(tmp_path), demo_size=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await to_config_screen(pilot, app)
        screen.query_one("#f-epochs", Input).value = "3"
        screen.query_one("#preset-path", Input).value = str(tmp_path / "presets" / "mine")
        await pilot.press("f2")
        target = tmp_path / "presets" / "mine.toml"
        await wait_until(pilot, target.exists, what="preset file")
        saved = from_mapping(load_preset(str(target)))
        assert saved.epochs == 3 and saved == screen.validate()
        await pilot.press("f2")  # exists now: asks before overwriting
        await pilot.pause()
        assert "Overwrite" in screen_text(app)
        await pilot.press("n")


@pytest.mark.slow
@async_test
async def test_wizard_from_the_demo_dataset_to_a_finished_run(tmp_path):
    """The story: demo dataset -> fingerprint -> decision -> config -> launch; every panel fills."""
    from mammo_tui.rundir import read_summary

    runs = tmp_path / "runs"
    app = MammoApp("wizard", runs_root=str(runs), demo_size=0.05,
                   config=tiny_config(epochs=2, max_batches_per_epoch=3), run_name="wizard-run")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_config_screen(pilot, app)
        assert "From your --preset / flags" in screen_text(app)
        await pilot.press("f5")
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        assert len(app.screen_stack) == 2  # the wizard screens are gone
        await wait_until(pilot, lambda: dash.state.epochs, timeout=180, what="first epoch")
        await wait_until(pilot, lambda: dash.state.done, timeout=180, what="the end of the run")
        await wait_until(pilot, lambda: not dash.engine_running, timeout=30, what="worker exit")
        await pilot.pause(0.3)
        state = dash.state
        assert state.batch is not None and state.batch.n_batches == 3  # progress panel fed
        assert [m.epoch for m in state.epochs] == [1, 2]
        assert len(state.series("val_loss")[0]) == 2 and len(state.series("kappa_quadratic")[0]) == 2
        text = screen_text(app)
        for expected in ("FINISHED", "2/2 epochs", "wizard-run", "true\\pred", "recall",
                         "predicted", "run finished", "next: mammo-tui "):  # the log ends with what to do next
            assert expected in text, expected
        assert any(dash.query_one(CollapseBanner).has_class(f"-{s}") for s in
                   ("healthy", "warning", "collapsed"))
        summary = read_summary(runs / "wizard-run")
        assert summary["status"] in ("healthy", "warning", "collapsed")
        assert summary["epochs_completed"] == 2
        assert (runs / "wizard-run" / "checkpoints" / "best.pt").is_file()


@async_test
async def test_browse_fills_the_focused_path_field(tmp_path):
    from mammo_tui.tui.wizard import BrowseScreen

    (tmp_path / "images" / "A").mkdir(parents=True)
    app = MammoApp("wizard", runs_root=str(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        field = app.screen.query_one("#first", Input)
        field.value = str(tmp_path / "images")
        await pilot.press("ctrl+o")
        await wait_until(pilot, on(app, BrowseScreen), what="browser")
        await pilot.pause()
        assert "A" in screen_text(app)
        await pilot.press("backspace")  # up to tmp_path
        await pilot.pause()
        await pilot.press("s")  # pick the folder under the cursor: the root
        await wait_until(pilot, on(app, DatasetScreen), what="back to the form")
        assert field.value == str(tmp_path)
        assert field.has_focus


@async_test
async def test_a_dataset_from_the_command_line_is_scanned_at_once(tmp_path, demo_dataset):
    from mammo_tui.data.sources import DatasetSpec

    spec = DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))
    app = MammoApp("wizard", dataset=spec, runs_root=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, on(app, FingerprintScreen), timeout=60, what="fingerprint")
        await pilot.pause()  # let the new screen finish mounting: exiting mid-mount races Header's title
        fp = app.screen.wizard.fingerprint
        assert fp.n_images == sum(fp.class_counts) > 0 and not app.screen.wizard.demo


@async_test
async def test_the_back_button_of_each_step_returns_to_the_previous_screen():
    from samples import sample_wizard_state

    app = MammoApp("wizard")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        for step in (FingerprintScreen, DecisionScreen):
            await app.push_screen(step(sample_wizard_state()))
            await pilot.pause()
            await pilot.click("#back")
            await wait_until(pilot, on(app, DatasetScreen), what=f"back from {step.__name__}")


@async_test
async def test_the_demo_opens_with_the_plans_config_and_no_warnings(tmp_path):
    # the demo's defaults are what the plan picks for it on this box (no weights: from scratch),
    # so the config step opens without collapse-risk warnings and with pretrained off
    app = MammoApp("wizard", runs_root=str(tmp_path), demo_size=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await to_config_screen(pilot, app)
        assert screen.query_one("#config-warnings").render().plain.strip() == ""
        assert screen.query_one("#config-errors").render().plain.strip() == ""
        assert screen.query_one("#f-pretrained").value is False
        assert "from scratch" in screen.query_one("#weights-status").render().plain
        assert screen.validate() == screen.wizard.plan.config  # as `plan --demo` (test_decision_paths)
