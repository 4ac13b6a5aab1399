"""The Textual app: wizard -> dashboard, `watch RUN_DIR`, the runs browser, and a sweep's leaderboard.

`run_app` / `run_sweep_app` are what the CLI calls; `MammoApp` is what tests drive with `run_test()`.
torch is never imported here: the engine is imported inside the training worker thread.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, Iterable

from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from mammo_tui.events import RUN_ENDS, Event
from mammo_tui.exitcodes import EXIT_INTERRUPTED  # a signal (SIGHUP, SIGTERM) ended the session
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.tui.dialogs import ConfirmScreen

MODES = ("wizard", "watch", "runs")
SHUTDOWN_WAIT_S = 120.0  # a checkpoint of a big model on a slow disk takes a while


class MammoApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "mammo-tui"
    # Screens get -narrow/-wide and -short/-tall classes; app.tcss lays panels out by them.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit; a running training run is stopped and saved first"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        # as in htop, lazygit and k9s (Textual's default only says "press ctrl+q"); priority:
        # a focused text field would take it as copy
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("f1", "help_screen", "Help", show=False, tooltip="this list of keys, on any screen"),
    ]

    def __init__(self, mode: str = "wizard", *, demo: bool = False, dataset: Any = None,
                 run_dir: str | None = None, runs_root: str = "runs", config: Any = None,
                 overrides: dict | None = None,
                 demo_size: float | None = None, events: Iterable[Event] | None = None,
                 run_name: str | None = None, job: Any = None, preset: str = "", cv_folds: int = 0,
                 sweep: Any = None) -> None:
        """events: replay these instead of reading run_dir (previews and snapshot tests).
        demo_size / run_name: passed to the demo dataset and the launched run; run_name and
        preset (the --preset name behind config) pre-fill the wizard's config step, and so does
        cv_folds (`cv --folds K`: K-fold cross-validation selected under validation).
        job: a TrainRequest to train at once, skipping the wizard.
        sweep: a drivers.sweep.SweepJob to run at once, on the sweep leaderboard screen."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        super().__init__()
        self.mode = mode
        self.demo = demo
        self.dataset = dataset
        self.run_dir = run_dir
        self.runs_root = runs_root
        self.config = config  # a TrainConfig from --preset (+ flags): used instead of the plan
        self.overrides = dict(overrides or {})  # flags without --preset: applied on top of the plan
        self.demo_size = demo_size
        self.events = list(events) if events is not None else None
        self.run_name = run_name
        self.job = job
        self.preset = preset
        self.cv_folds = int(cv_folds or 0)
        self.sweep = sweep
        self.exit_code = 0
        # the screens that run an engine thread (DashboardScreen, SweepScreen): quit and hangup
        # stop them and wait for them
        self._dashboards: list[Any] = []

    # -- start-up --------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._install_hangup_handler()
        if self.job is not None:
            self.launch(self.job)
        elif self.sweep is not None:
            from mammo_tui.tui.sweep import SweepScreen

            self.push_screen(SweepScreen(job=self.sweep))
        elif self.mode == "watch" or self.events is not None:
            self.push_screen(watch_screen(self.run_dir, self.events))
        elif self.mode == "runs":
            from mammo_tui.tui.runs import RunsScreen

            self.push_screen(RunsScreen(self.runs_root))
        else:
            from mammo_tui.tui.wizard import DatasetScreen

            self.push_screen(DatasetScreen(demo=self.demo, dataset=self.dataset, user_config=self.config,
                                           user_overrides=self.overrides, demo_size=self.demo_size,
                                           user_preset=self.preset))

    def _install_hangup_handler(self) -> None:
        # A dropped SSH connection sends SIGHUP, `kill` and schedulers SIGTERM: stop training
        # cleanly (checkpoint, resumable run) and give the terminal back, instead of dying mid-write
        # or raising inside the event loop.
        if sys.platform == "win32" or not hasattr(signal, "SIGHUP"):
            return
        for signum in (signal.SIGHUP, signal.SIGTERM):
            try:
                asyncio.get_running_loop().add_signal_handler(signum, self._on_hangup)
            except (RuntimeError, ValueError, NotImplementedError):
                pass  # not the main thread (tests) or no signal support

    def _on_hangup(self) -> None:
        for screen in self.dashboards():
            screen.cancel.set()  # run_app waits for the threads: the run is saved, resumable
        self.exit_code = EXIT_INTERRUPTED
        self.exit(self.exit_code)

    # -- navigation ------------------------------------------------------------------------------
    def register_dashboard(self, screen: Any) -> None:
        self._dashboards.append(screen)

    def dashboards(self) -> list[Any]:
        """Every dashboard still on the stack or whose thread still runs (it must be waited for)."""
        return [s for s in self._dashboards if s in self.screen_stack or s.engine_running]

    def launch(self, request: Any, wizard: Any = None) -> DashboardScreen:
        """Leave the wizard and train: the wizard screens are closed, the dashboard takes over.
        wizard: the WizardState it came from, so a failed or finished run can return to its
        config step with every field kept."""
        while len(self.screen_stack) > 1:
            self.pop_screen()
        screen = DashboardScreen(request=request, wizard=wizard)
        self.push_screen(screen)
        return screen

    def open_run(self, run_dir: str) -> None:
        self.push_screen(watch_screen(run_dir))

    def action_help_screen(self) -> None:
        from mammo_tui.tui.dialogs import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen) -> Iterable[SystemCommand]:
        """The command palette: this screen's own actions first, then Textual's."""
        from mammo_tui.tui.dialogs import screen_bindings

        for binding in screen_bindings(screen):
            if binding.key_display:  # a group's footer entry ("1-6 Panels"); its members are listed
                continue
            title = binding.description[:1].upper() + binding.description[1:]
            yield SystemCommand(title, binding.tooltip or binding.description,
                                partial(self.run_action, binding.action, screen))
        yield from super().get_system_commands(screen)

    # -- quitting --------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        live = [s for s in self.dashboards() if s.engine_running and not s.read_only]
        if not live:
            await self._shutdown_engines()
            self.exit(self.exit_code)
            return

        if isinstance(self.screen, ConfirmScreen) and self.screen.id == "quit-question":
            return  # q / ctrl+c again while asked: the question stays, answered once

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._stop_and_exit(), group="quit", exclusive=True)

        self.push_screen(ConfirmScreen(
            f"Training is running. Stop it and quit?\n\n{live[0].resume_hint()}",
            yes="Stop and quit", id="quit-question"), answered)

    async def _stop_and_exit(self) -> None:
        self.notify("stopping: saving a checkpoint…", timeout=SHUTDOWN_WAIT_S)
        await self._shutdown_engines()
        self.exit(self.exit_code)

    async def _shutdown_engines(self) -> None:
        """Set every cancel flag, then wait for the threads (a run dir is never left half-written)."""
        screens = self.dashboards()
        for screen in screens:
            screen.cancel.set()
        for screen in screens:
            try:
                await asyncio.wait_for(screen.stop_engine(), SHUTDOWN_WAIT_S)
            except asyncio.TimeoutError:
                pass
            result = screen.result
            if result is not None and getattr(result, "exit_code", None) is not None:
                self.exit_code = result.exit_code

    def on_unmount(self) -> None:
        for screen in self.dashboards():  # last resort (e.g. exit() from elsewhere)
            screen.cancel.set()

    def exit_summary(self) -> str:
        """What to print to the shell after the app exits: the last training run's directory,
        status and next commands (nextsteps.exit_summary); "" when nothing was trained."""
        from mammo_tui.app.nextsteps import exit_summary

        trained = [s for s in self._dashboards if not s.read_only]
        if not trained:
            return ""
        if hasattr(trained[-1], "exit_summary"):  # a sweep: its leaderboard and best configuration
            return trained[-1].exit_summary()
        state = trained[-1].state
        text = exit_summary(state.cv_dir or state.run_dir)
        if not text and state.failed is not None:
            return f"mammo-tui: the run failed before it started: {state.failed.error}"
        return text


def watch_screen(run_dir: str | None, events: Iterable[Event] | None = None) -> Screen:
    """A finished run (or fixed events) is replayed at once; a live one is followed.
    A cross-validation is always followed: its stream is rebuilt fold by fold from the folders.
    A sweep opens its leaderboard, read from its folder."""
    if events is not None:
        return DashboardScreen(events=events, run_dir=run_dir)
    from mammo_tui.rundir import is_cv_dir
    from mammo_tui.rundir import group_kind
    from mammo_tui.runlog import EVENTS_FILE, read_events

    path = Path(run_dir or ".")
    if group_kind(path) == "sweep":
        from mammo_tui.tui.sweep import SweepScreen

        return SweepScreen(sweep_dir=str(path))
    if is_cv_dir(path):
        return DashboardScreen(run_dir=str(path), follow=True)
    events_path = path / EVENTS_FILE
    if events_path.is_file():
        replay = read_events(events_path)
        if any(isinstance(e, RUN_ENDS) for e in replay):
            return DashboardScreen(events=replay, run_dir=str(path))
    return DashboardScreen(run_dir=str(path), follow=True)


def run_app(mode: str = "wizard", *, demo: bool = False, dataset: Any = None,
            run_dir: str | None = None, runs_root: str = "runs", config: Any = None,
            overrides: dict | None = None, job: Any = None, run_name: str | None = None,
            preset: str = "", cv_folds: int = 0, sweep: Any = None) -> int:
    """Run the app in the terminal; returns the exit code (the training run's when one ran).
    job: a TrainRequest to start at once (train --resume, cv), skipping the wizard.
    run_name / preset / cv_folds: --run-name, the --preset name and cv's --folds, shown
    pre-filled by the wizard (`train` and `cv` in a terminal both open it).
    sweep: a SweepJob to run on the leaderboard screen (run_sweep_app)."""
    app = MammoApp(mode, demo=demo, dataset=dataset, run_dir=run_dir, runs_root=runs_root,
                   config=config, overrides=overrides, job=job, run_name=run_name, preset=preset,
                   cv_folds=cv_folds, sweep=sweep)
    app.run()
    # Belt and braces: the app waits for its threads on quit; if it was torn down another way,
    # wait here so the run directory is complete before the process exits.
    for screen in app.dashboards():
        screen.cancel.set()
        if not screen.engine_idle.wait(SHUTDOWN_WAIT_S):
            print("mammo-tui: the training thread did not stop in time", file=sys.stderr)
    summary = app.exit_summary()  # the terminal is back: leave the user the run and what to do next
    if summary:
        try:
            print(summary, flush=True)
        except (BrokenPipeError, OSError):
            pass
    return app.exit_code


def run_sweep_app(job: Any) -> int:
    """`mammo-tui sweep` in a terminal: the sweep runs in a thread worker behind its leaderboard;
    q / ctrl+c ask, then stop it (the current run and the sweep are saved as interrupted). On exit
    the same summary as --no-ui: the leaderboard, the best configuration, what to run next."""
    return run_app(sweep=job)
