"""The TUI on its recovery paths (issue 13): a failed launch, resume, leaving, and the keyboard
conventions. Fast: the engine is replaced where the test is about the screens, not training."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Button, Input, Select

from mammo_tui.events import (
    BatchProgress,
    CheckpointSaved,
    CollapseStatus,
    EpochMetrics,
    RunFailed,
    RunFinished,
    RunStarted,
)
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.configure import ConfigScreen
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.app import TrainRequest
from mammo_tui.tui.dialogs import ConfirmScreen
from mammo_tui.tui.messages import EngineDone, EngineEvent
from samples import sample_events, sample_wizard_state
from mammo_tui.tui.state import DashboardState
from tui_helpers import async_test, screen_text, tiny_config, wait_until
from mammo_tui.tui.wizard import DatasetScreen, spec_from_inputs


def on(app, screen_type):
    return lambda: isinstance(app.screen, screen_type)


def replay_as_engine(monkeypatch, events) -> None:
    """Replace the engine thread by one that posts these events: a "live" run that finishes at once."""
    def replay(self, request, cancel):
        for event in events:
            self.post_message(EngineEvent(event))
        self.post_message(EngineDone())
        self.engine_idle.set()

    monkeypatch.setattr(DashboardScreen, "_train_thread", replay)


def idle_engine(monkeypatch) -> None:
    """Replace the engine thread by one that says nothing until cancelled: a run still starting."""
    monkeypatch.setattr(DashboardScreen, "_train_thread",
                        lambda self, request, cancel: (cancel.wait(30), self.engine_idle.set()))


def fail_at_start(monkeypatch, error: str = "no ImageNet weights for resnet18: not cached") -> list:
    """Replace the engine thread by one that fails the way a missing download does."""
    launched = []

    def thread(self, request, cancel):
        launched.append(request)
        try:
            self.post_message(EngineEvent(RunFailed(error=error)))
            self.post_message(EngineDone(error=RuntimeError(error)))
        finally:
            self.engine_idle.set()

    monkeypatch.setattr(DashboardScreen, "_train_thread", thread)
    return launched


async def config_step(pilot, wizard=None) -> ConfigScreen:
    app = pilot.app
    await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
    await app.push_screen(ConfigScreen(wizard or sample_wizard_state()))
    await pilot.pause()
    return app.screen


# -- a failed launch is not a dead end ----------------------------------------------------------
def test_the_demo_layout_dicom_folder_is_found_beside_the_csv(demo_dataset):
    spec = spec_from_inputs("reference", str(demo_dataset.csv), "")
    assert Path(spec.dicom_root) == demo_dataset.dicom_root


@async_test
async def test_a_failed_launch_goes_back_to_the_config_step_with_every_field_kept(monkeypatch, tmp_path):
    launched = fail_at_start(monkeypatch)
    app = MammoApp("wizard", runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = await config_step(pilot)
        screen.query_one("#f-epochs", Input).value = "7"
        screen.query_one("#run-name", Input).value = "second-try"
        await pilot.pause()
        await pilot.press("f5")
        if isinstance(app.screen, ConfirmScreen):  # the weights question, answered elsewhere
            await pilot.press("y")
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        await wait_until(pilot, lambda: dash.state.failed and not dash.engine_running, what="failure")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "FAILED" in text and "esc" in text.lower()  # the way back is said
        await pilot.press("a")  # not "no suggestions: healthy"
        await pilot.pause()
        assert not any("healthy" in n.message for n in app._notifications)
        await pilot.press("escape")
        await wait_until(pilot, on(app, ConfigScreen), what="back at the config step")
        again = app.screen
        assert again.query_one("#f-epochs", Input).value == "7"
        assert again.query_one("#run-name", Input).value == "second-try"
        again.query_one("#f-epochs", Input).value = "8"
        await pilot.pause()
        await pilot.press("f5")
        if isinstance(app.screen, ConfirmScreen):
            await pilot.press("y")
        await wait_until(pilot, lambda: len(launched) == 2, what="the second launch")
        assert launched[1].config.epochs == 8 and launched[1].run_name == "second-try"


@async_test
async def test_escape_on_the_config_step_keeps_the_edits(tmp_path):
    app = MammoApp("wizard", runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        wizard = sample_wizard_state()
        screen = await config_step(pilot, wizard)
        screen.query_one("#f-epochs", Input).value = "11"
        screen.query_one("#f-sampler", Select).value = "none"
        screen.query_one("#cv-folds", Select).value = 3
        await pilot.pause()
        await pilot.press("escape")
        await wait_until(pilot, on(app, DatasetScreen), what="back")
        await app.push_screen(ConfigScreen(wizard))
        await pilot.pause()
        again = app.screen
        assert again.query_one("#f-epochs", Input).value == "11"
        assert again.query_one("#f-sampler", Select).value == "none"
        assert again.query_one("#cv-folds", Select).value == 3


@async_test
async def test_launching_without_the_pretrained_weights_asks_first(monkeypatch, tmp_path):
    launched = fail_at_start(monkeypatch)
    app = MammoApp("wizard", runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        wizard = sample_wizard_state()
        screen = await config_step(pilot, wizard)
        screen.query_one("#f-arch", Select).value = "resnet34"  # not in this box's cache
        screen.query_one("#f-pretrained").value = True
        await pilot.pause()
        assert "✖" in screen.query_one("#weights-status").render().plain
        await pilot.press("f5")
        await wait_until(pilot, on(app, ConfirmScreen), what="the weights question")
        assert "pretrained weights" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen) and not launched


# -- resume and start-up -------------------------------------------------------------------------
@async_test
async def test_resume_replays_the_run_history_and_says_where_it_resumed(monkeypatch, tmp_path):
    from mammo_tui.runlog import RunLogWriter

    run_dir = tmp_path / "sample-healthy"
    events = sample_events(finished=False)
    two = max(i for i, e in enumerate(events) if e.type == "epoch" and e.epoch == 2)
    writer = RunLogWriter(run_dir / "events.jsonl")
    for event in events[:two + 1]:
        writer(event)
    writer(RunFinished(status="interrupted", best_epoch=2, best_metrics={}, epochs_completed=2,
                       interrupted=True, exit_code=130))
    writer.close()
    started = []
    monkeypatch.setattr(DashboardScreen, "_train_thread",
                        lambda self, request, cancel: (started.append(request), cancel.wait(30),
                                                       self.engine_idle.set()))
    app = MammoApp(job=TrainRequest(resume=str(run_dir)), runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        await wait_until(pilot, lambda: started, what="the engine")
        await pilot.pause(0.3)
        assert [m.epoch for m in dash.state.epochs] == [1, 2]  # the history, before the engine speaks
        text = screen_text(app)
        assert "Epoch   0/0" not in text and "INTERRUPTED" not in text
        assert "resuming" in text.lower()
        first = events[0]
        dash.post_message(EngineEvent(RunStarted(run_dir=str(run_dir), run_name=first.run_name,
                                                 config=first.config, class_names=first.class_names,
                                                 n_train=first.n_train, n_val=first.n_val,
                                                 train_counts=first.train_counts,
                                                 val_counts=first.val_counts,
                                                 steps_per_epoch=first.steps_per_epoch, start_epoch=3)))
        await pilot.pause(0.3)
        assert [m.epoch for m in dash.state.epochs] == [1, 2]
        assert "resumed at epoch 3" in screen_text(app)
        dash.cancel.set()


@async_test
async def test_start_up_shows_progress_not_epoch_zero(monkeypatch, tmp_path):
    idle_engine(monkeypatch)
    app = MammoApp(job=TrainRequest(config=tiny_config(), demo=True, outdir=str(tmp_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "0/0" not in text
        assert "starting" in text.lower()
        app.screen.cancel.set()


# -- leaving and coming back -----------------------------------------------------------------------
def test_exit_summary_names_the_run_and_the_next_commands(tmp_path):
    from mammo_tui.runlog import RunLogWriter
    from mammo_tui.app.nextsteps import exit_summary

    assert exit_summary(None) == "" and exit_summary(tmp_path / "nowhere") == ""
    run_dir = tmp_path / "stopped"
    writer = RunLogWriter(run_dir / "events.jsonl")
    for event in sample_events(finished=False):
        writer(event)
    writer(RunFinished(status="interrupted", best_epoch=2, best_metrics={}, epochs_completed=3,
                       interrupted=True, exit_code=130))
    writer.close()
    text = exit_summary(run_dir)
    assert f"run directory: {run_dir}" in text and "status: interrupted" in text
    for command in (f"mammo-tui train --resume {run_dir}", f"mammo-tui report {run_dir}",
                    f"mammo-tui eval {run_dir} --csv", f"mammo-tui watch {run_dir}"):
        assert command in text, command


@async_test
async def test_the_finished_dashboard_says_where_the_run_is_and_offers_no_stop(monkeypatch, tmp_path):
    events = sample_events()

    replay_as_engine(monkeypatch, events)
    app = MammoApp(job=TrainRequest(config=tiny_config(), demo=True, outdir=str(tmp_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="the end")
        await wait_until(pilot, lambda: "Edit config" in screen_text(app) and "next:" in screen_text(app),
                         timeout=10, what="the footer and the log")
        text = screen_text(app)
        run_dir = events[0].run_dir
        assert f"run directory: {run_dir}" in text
        assert f"next: mammo-tui report {run_dir}" in text and f"mammo-tui watch {run_dir}" in text
        footer = next(line for line in text.splitlines() if "Quit" in line)
        assert "Stop" not in footer and "Apply fix" not in footer  # healthy and over
        assert "Edit config" in footer


# -- keyboard and screen conventions ---------------------------------------------------------------
@async_test
async def test_ctrl_c_quits_with_the_same_question_as_q(monkeypatch, tmp_path):
    idle_engine(monkeypatch)
    app = MammoApp(job=TrainRequest(config=tiny_config(), demo=True, outdir=str(tmp_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        await pilot.press("ctrl+c")
        await wait_until(pilot, on(app, ConfirmScreen), what="the quit question")
        assert "Stop it and quit?" in app.screen.question
        await pilot.press("ctrl+c")  # again: still one question, not a stack of them
        await pilot.pause()
        assert sum(isinstance(s, ConfirmScreen) for s in app.screen_stack) == 1
        await pilot.press("n")
        app.screen.cancel.set()


@async_test
async def test_ctrl_c_in_the_wizard_quits_even_from_a_text_field(tmp_path):
    app = MammoApp("wizard", runs_root=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        assert isinstance(app.focused, Input)
        await pilot.press("ctrl+c")
        await pilot.pause(0.2)
        assert not app.is_running


def _distance(a, b) -> int:
    return abs(a.r - b.r) + abs(a.g - b.g) + abs(a.b - b.b)


@async_test
async def test_the_focused_field_stands_out(tmp_path):
    app = MammoApp("wizard", runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await config_step(pilot)
        epochs, lr = screen.query_one("#f-epochs", Input), screen.query_one("#f-lr", Input)
        epochs.focus()
        await pilot.pause(0.2)
        assert _distance(epochs.styles.background, lr.styles.background) >= 90
        launch, save = screen.query_one("#launch", Button), screen.query_one("#save", Button)
        save.focus()
        await pilot.pause(0.2)
        focused_style, other_style = save.rich_style, screen.query_one("#back" if screen.query("#back")
                                                                       else "#launch", Button).rich_style
        assert focused_style != other_style
        assert save.rich_style.underline or save.rich_style.reverse or \
            _distance(save.styles.background, launch.styles.background) >= 90


@async_test
async def test_decision_step_button_is_visible_at_80x24():
    from mammo_tui.tui.decision import DecisionScreen

    app = MammoApp("wizard")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        await app.push_screen(DecisionScreen(sample_wizard_state()))
        await pilot.pause(0.3)
        assert "Edit config (enter)" in screen_text(app)


def _fake_runs(root: Path, names) -> None:
    from mammo_tui.runlog import RunLogWriter

    for name in names:
        writer = RunLogWriter(root / name / "events.jsonl")
        for event in sample_events():
            writer(event)
        writer.close()


@async_test
async def test_runs_browser_marks_show_and_compare_uses_them(tmp_path):
    from mammo_tui.tui.runs import CompareScreen, RunsScreen

    _fake_runs(tmp_path, ("alpha", "beta", "gamma"))
    app = MammoApp("runs", runs_root=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, on(app, RunsScreen), what="runs screen")
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app).splitlines() if "alpha" in line)
        # 80 columns: status, best κ and the whole date come before the rest
        import re

        date = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)
        assert date and row.index("healthy") < row.index("0.318") < date.start(), row
        await pilot.press("space")
        await pilot.pause(0.2)
        assert "●" in screen_text(app)
        await pilot.press("down", "down", "space", "up", "c")  # the cursor is on neither mark
        await wait_until(pilot, on(app, CompareScreen), what="compare")
        names = {app.screen.a.name, app.screen.b.name}
        marked = {p.name for p in app.screen_stack[-2].marked}
        assert len(names) == 2 and names == marked


def test_the_palette_lists_the_app_actions():
    app = MammoApp("watch", events=sample_events(collapsed=True))

    async def run() -> list[str]:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
            await pilot.pause(0.3)
            return [c.title for c in app.get_system_commands(app.screen)]

    import asyncio

    titles = asyncio.run(run())
    assert "Apply fix" in titles and "Show / hide confusion matrix" in titles
    assert "Write report" in titles


def test_warning_and_interrupted_have_different_colours():
    from mammo_tui.tui.render import STATUS_STYLE

    assert STATUS_STYLE["warning"] != STATUS_STYLE["interrupted"]


# -- panels that stay readable ---------------------------------------------------------------------
def _epoch(epoch: int, val_loss: float = 1.0, shares=(0.25, 0.25, 0.25, 0.25)) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, epochs=5, train_loss=1.0, val_loss=val_loss,
                        metrics={"kappa_quadratic": 0.1, "balanced_accuracy_adjusted": 0.05,
                                 "prediction_distribution": list(shares)},
                        lr=1e-3, trainable="head", epoch_time_s=1.0, images_per_s=10.0)


def test_a_near_collapse_warning_names_the_dominant_class():
    from mammo_tui.tui.render import banner_text

    state = DashboardState()
    state.apply(_epoch(1, shares=(0.01, 0.01, 0.01, 0.97)))
    state.apply(CollapseStatus(epoch=1, status="warning", reasons=["κ quadratic 0.10 < 0.2"],
                               suggestions=[]))
    _, text = banner_text(state)
    assert "97 % of predictions on D" in text.plain


def test_a_collapsed_best_checkpoint_is_not_logged_as_good_news():
    state = DashboardState()
    state.apply(_epoch(1, shares=(0, 0, 1.0, 0)))
    state.apply(CollapseStatus(epoch=1, status="collapsed", reasons=["C takes 100 %"], suggestions=[]))
    state.new_log.clear()
    state.apply(CheckpointSaved(epoch=1, kind="best", path="best.pt"))
    line = state.new_log[-1]
    assert "COLLAPSED" in line.text and line.level == "error"


def test_the_eta_of_a_head_only_warmup_epoch_is_marked_rough():
    from mammo_tui.tui.render import progress_text

    state = DashboardState(config={"warmup_epochs": 2, "freeze": "last_block"}, epochs_total=10,
                           run_name="r")
    state.apply(BatchProgress(epoch=1, batch=3, n_batches=10, loss=1.0, images_per_s=50.0, eta_s=22.0))
    assert "ETA ~22s" in progress_text(state, 120).plain and "rough" in progress_text(state, 120).plain
    state.config["warmup_epochs"] = 0
    assert "rough" not in progress_text(state, 120).plain


@async_test
async def test_one_loss_spike_does_not_flatten_the_loss_plot():
    from dataclasses import replace

    from mammo_tui.tui.widgets import CurvePlot

    events = [replace(e, val_loss=25.5) if e.type == "epoch" and e.epoch == 2 else e
              for e in sample_events()]
    app = MammoApp("watch", events=events)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        await wait_until(pilot, lambda: not app.screen.state.new_log, what="repaint")
        await pilot.pause(0.3)
        plot = app.screen.query_one("#loss-plot", CurvePlot)
        assert "clipped" in str(plot.border_title) and "25.5" in str(plot.border_title)
        import re

        ticks = [float(t) for t in re.findall(r"([\d.]+)┤", screen_text(app).split("─val")[0])]
        assert ticks and max(ticks) < 5  # the other epochs' losses keep the scale


# -- apply ----------------------------------------------------------------------------------------
@async_test
async def test_several_suggestions_apply_at_once_and_the_header_names_the_fix(monkeypatch, tmp_path):
    from tui_helpers import collapse_config
    from mammo_tui.tui.widgets import SuggestionList

    events = sample_events(collapsed=True)
    requests = []

    def engine(self, request, cancel):
        requests.append(request)
        if len(requests) == 1:  # the first run collapses and finishes; the second one waits
            for event in events:
                self.post_message(EngineEvent(event))
            self.post_message(EngineDone())
        else:
            cancel.wait(30)
        self.engine_idle.set()

    monkeypatch.setattr(DashboardScreen, "_train_thread", engine)
    app = MammoApp(job=TrainRequest(config=collapse_config(), demo=True, outdir=str(tmp_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        await wait_until(pilot, lambda: dash.state.done and not dash.engine_running, what="the end")
        await pilot.pause(0.3)
        first, second = dash.state.suggestions()[:2]
        await pilot.press("space", "down", "space")  # mark the first two
        await pilot.pause()
        assert str(dash.query_one(SuggestionList).get_option_at_index(0).prompt).startswith("✔")
        await pilot.press("a")
        await wait_until(pilot, on(app, ConfirmScreen), what="confirmation")
        question = app.screen.question
        for s in (first, second):
            assert f"{s['key']} = {s['value']}" in question
        await pilot.press("y")
        await wait_until(pilot, lambda: len(requests) == 2, what="the new run")
        config = requests[1].config
        assert getattr(config, first["key"]) == first["value"]
        assert getattr(config, second["key"]) == second["value"]
        await pilot.pause(0.3)
        header = screen_text(app).splitlines()[0]
        assert "fix of sample-collapsed" in header and f"{first['key']} = {first['value']}" in header
        dash.cancel.set()


# -- watch ------------------------------------------------------------------------------------------
def test_watch_on_a_folder_without_a_run_says_where_the_runs_are(tmp_path):
    from mammo_tui.tui.watchcheck import watch_problem

    _fake_runs(tmp_path / "runs", ("alpha", "beta"))
    problem = watch_problem(tmp_path / "runs")
    assert "holds no run itself but 2 runs (alpha, beta)" in problem
    assert f"mammo-tui watch {tmp_path / 'runs' / 'alpha'}" in problem
    assert "holds no run" in watch_problem(tmp_path)  # nothing at all
    assert "not a directory" in watch_problem(tmp_path / "nowhere")
    assert watch_problem(tmp_path / "runs" / "alpha") is None


@async_test
async def test_watch_of_a_dead_run_says_it_looks_stale(tmp_path):
    from mammo_tui.runlog import RunLogWriter

    run_dir = tmp_path / "killed"
    writer = RunLogWriter(run_dir / "events.jsonl")
    for event in sample_events(finished=False)[:8]:  # 2023 timestamps: long silent
        writer(event)
    writer.close()
    (run_dir / ".lock").write_text("{}")  # the trainer's lock file, held by nobody (kill -9)
    app = MammoApp("watch", run_dir=str(run_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        dash = app.screen
        await wait_until(pilot, lambda: dash._last_event_time, what="the log")
        dash.check_stale()
        # the check runs in a worker: wait for the screen to say so (a fixed pause was flaky on a busy box)
        await wait_until(pilot, lambda: "STALE?" in screen_text(app)
                         and "stale?" in screen_text(app).splitlines()[0], what="the stale banner and title")
        text = screen_text(app)
        assert "no process holds the run" in text
        assert f"mammo-tui train --resume {run_dir}" in dash.state.stale  # wrapped on screen
        assert "stale?" in text.splitlines()[0]


def test_a_run_whose_trainer_holds_the_lock_is_not_stale(tmp_path):
    from mammo_tui.rundir import lock_run_dir
    from mammo_tui.tui.watchcheck import stale_note

    lock = lock_run_dir(tmp_path)
    try:
        assert stale_note(tmp_path, last_event_time=0.0) is None  # silent, but alive
    finally:
        lock.release()
    assert "looks stale" in stale_note(tmp_path, last_event_time=0.0)


# -- consistency -------------------------------------------------------------------------------------
@async_test
async def test_run_name_and_preset_from_the_command_line_prefill_the_wizard(monkeypatch, tmp_path):
    launched = fail_at_start(monkeypatch)
    app = MammoApp("wizard", runs_root=str(tmp_path), config=tiny_config(), run_name="from-cli",
                   preset="last_block")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        wizard = app.screen.wizard
        assert wizard.user_preset == "last_block"
        plan = sample_wizard_state()
        wizard.report, wizard.fingerprint, wizard.plan = plan.report, plan.fingerprint, plan.plan
        screen = await config_step(pilot, wizard)
        assert screen.query_one("#run-name", Input).value == "from-cli"
        await pilot.press("f5")
        await wait_until(pilot, lambda: launched, what="launch")
        assert launched[0].run_name == "from-cli" and launched[0].preset == "last_block"


@async_test
async def test_on_exit_the_app_has_the_run_summary_for_the_shell(monkeypatch, tmp_path):
    from dataclasses import replace

    from mammo_tui.runlog import RunLogWriter

    run_dir = tmp_path / "done"
    events = [replace(e, run_dir=str(run_dir)) if e.type == "run_started" else e for e in sample_events()]
    writer = RunLogWriter(run_dir / "events.jsonl")
    for event in events:
        writer(event)
    writer.close()

    replay_as_engine(monkeypatch, events)
    app = MammoApp(job=TrainRequest(config=tiny_config(), demo=True, outdir=str(tmp_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, on(app, DashboardScreen), what="dashboard")
        await wait_until(pilot, lambda: app.screen.state.done, what="the end")
        await pilot.press("q")
    text = app.exit_summary()
    assert f"run directory: {run_dir}" in text and "status: healthy" in text
    assert f"mammo-tui report {run_dir}" in text and "best: epoch 4" in text


@async_test
async def test_cv_folds_from_the_command_line_prefill_the_validation_choice(monkeypatch, tmp_path):
    # `cv --folds 4` in a terminal opens the wizard like `train`, with 4-fold CV selected
    launched = fail_at_start(monkeypatch)
    app = MammoApp("wizard", runs_root=str(tmp_path), config=tiny_config(), run_name="cv-cli", cv_folds=4)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, on(app, DatasetScreen), what="dataset screen")
        wizard = app.screen.wizard
        plan = sample_wizard_state()
        wizard.report, wizard.fingerprint, wizard.plan = plan.report, plan.fingerprint, plan.plan
        screen = await config_step(pilot, wizard)
        assert screen.query_one("#cv-folds", Select).value == 4
        await pilot.press("f5")
        await wait_until(pilot, lambda: launched, what="launch")
        assert launched[0].cv_folds == 4 and launched[0].run_name == "cv-cli"


def test_train_and_cv_in_a_terminal_both_open_the_wizard_with_the_flags(monkeypatch, tmp_path):
    # the CLI's routing only: what run_app is asked to show (the app itself is tested above)
    from mammo_tui import cli
    from mammo_tui.tui import app as app_module

    calls = []
    monkeypatch.setattr(app_module, "run_app", lambda *a, **k: calls.append((a, k)) or 0)
    monkeypatch.setattr(cli, "_wants_ui", lambda args: True)
    for argv in (["train", "--demo", "--run-name", "x", "--preset", "demo"],
                 ["cv", "--demo", "--run-name", "x", "--preset", "demo", "--folds", "3"]):
        assert cli.main(argv) == 0
    (train_args, train_kw), (cv_args, cv_kw) = calls
    assert train_args == cv_args == ("wizard",)
    assert train_kw["run_name"] == cv_kw["run_name"] == "x" and train_kw["preset"] == cv_kw["preset"] == "demo"
    assert cv_kw["cv_folds"] == 3 and train_kw.get("cv_folds", 0) == 0
