"""The training dashboard: live training in a thread worker, or `watch` of a run's event log.

Threads: train() / follow_events() run in a Textual thread worker and reach the UI only through
`post_message`. The UI folds events into DashboardState and repaints changed panels on a short
timer, so a burst of events (attaching to a long log, fast batches) costs one repaint.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker

from mammo_tui.app.fixes import resume_command
from mammo_tui.events import DataProgress, Event, RunFailed
from mammo_tui.tui.dashboard_engine import EngineThreads
from mammo_tui.tui.dashboard_fixes import EDIT_HINT, FixActions
from mammo_tui.tui.dialogs import ConfirmScreen, HelpScreen
from mammo_tui.tui.job import VALIDATION_CHOICES, WizardState
from mammo_tui.tui.messages import EngineDone, EngineEvent
from mammo_tui.tui.state import COLLAPSE, EPOCH, FOLDS, LOG, PROGRESS, STATUS, DashboardState
from mammo_tui.tui.widgets import (
    ClassesPanel,
    CollapseBanner,
    ConfusionPanel,
    CurvePlot,
    EventLog,
    FoldsPanel,
    MetricsPanel,
    ProgressPanel,
    SuggestionList,
)

REPAINT_DELAY_S = 0.1  # coalesce bursts of events into one repaint

# Toggleable panels: key -> (widget id, label)
PANELS = {
    "1": ("curves", "loss and metric curves"),
    "2": ("classes", "per-class recall / predicted vs true"),
    "3": ("confusion", "confusion matrix"),
    "4": ("metrics", "latest / best metrics"),
    "5": ("suggestions", "suggestions"),
    "6": ("log", "event log"),
}

READ_ONLY_MSG = ("read-only: this dashboard follows the run's events.jsonl. Stop the run where it "
                 "runs (Ctrl+C in its terminal, or kill -INT its process); it saves a checkpoint.")


class DashboardScreen(EngineThreads, FixActions, Screen):
    HELP_TITLE = "training dashboard"
    HELP_TEXT = ("Stop keeps a resumable run. Apply takes the highlighted suggestion (up/down "
                 "in the list; space marks several to apply together) and restarts the run with it "
                 "from its best healthy checkpoint (never a collapsed or warning epoch), or from the "
                 "initial weights when no epoch was healthy: a fresh optimizer, warmup and LR "
                 "schedule for the remaining epochs. An applied "
                 "suggestion leaves the list. After a finished run, a new run starts with the change "
                 "and records the run it came from. 1-6 hide / show panels. "
                 "In a cross-validation the panels show the current fold and the fold table every "
                 "fold; stop keeps the finished folds (cv --resume continues), and apply starts a "
                 "new cross-validation, since all folds must train the same way. When the run has "
                 "ended (failed, stopped or finished), esc or e goes back to its configuration with "
                 "every field kept; r writes report.md into the run directory.")
    WATCH_HELP = ("Watch mode (read-only): this dashboard follows the run's events.jsonl and changes "
                  "nothing; the run is stopped where it runs (Ctrl+C in its terminal). a prints the "
                  "command that applies the highlighted suggestion there (train --resume RUN --set "
                  "key=value --force). 1-6 hide / show panels.")
    # The footer and help list only what works now (check_action): no Stop once the run is over
    # or in watch mode, no Apply without a suggestion. Hidden fallbacks say why a key does nothing.
    BINDINGS = [
        Binding("s", "stop", "Stop", tooltip="stop training (asks first); a checkpoint is saved"),
        Binding("s", "read_only_note", show=False),
        Binding("a", "apply", "Apply fix",
                tooltip="apply the highlighted suggestion and restart from the best healthy checkpoint; "
                        "in watch mode: print the equivalent command"),
        Binding("a", "apply_note", show=False),
        Binding("space", "mark", "Mark fix", show=False,
                tooltip="mark the highlighted suggestion; a applies every marked one at once"),
        Binding("e", "edit", "Edit config",
                tooltip="back to the configuration (every field kept) to change it and launch again"),
        Binding("1", "toggle('1')", "Panels", key_display="1-6",
                tooltip="show / hide: 1 curves, 2 classes, 3 confusion, 4 metrics, 5 suggestions, 6 log"),
        # one per panel for the help and the command palette (key 1 runs the binding above)
        *(Binding(key, f"toggle('{key}')", f"show / hide {label}", show=False)
          for key, (_, label) in PANELS.items()),
        Binding("r", "report", "Write report", show=False,
                tooltip="write report.md in the run directory (what `mammo-tui report RUN` writes)"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "back", "Back", show=False, tooltip="back to the previous screen"),
    ]

    def __init__(self, *, request: Any = None, run_dir: str | None = None,
                 events: Iterable[Event] | None = None, follow: bool = False, wizard: Any = None) -> None:
        """request: start a live training run; run_dir + follow: tail a live log;
        events: replay fixed events (a finished run, or tests);
        wizard: the WizardState the request came from (edit config returns to it)."""
        super().__init__()
        self.wizard = wizard
        self.fix_note = ""  # the applied fix and the run it came from, for the header
        self.state = DashboardState()
        self.request = request
        self.run_dir = run_dir
        self.replay = list(events) if events is not None else None
        self.follow = follow
        self.read_only = request is None
        if self.read_only:
            self.HELP_TEXT = self.WATCH_HELP
        self.cancel = threading.Event()
        self.engine_idle = threading.Event()
        self.engine_idle.set()
        self.worker: Worker | None = None
        self.result: Any = None
        self._dirty: set[str] = set()
        self._repaint_pending = False
        self._last_event_time = 0.0

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        s = self.state
        yield Header()
        yield CollapseBanner(s, id="banner")
        yield ProgressPanel(s, id="progress")
        with Horizontal(id="body"):
            with Vertical(id="curves"):
                yield CurvePlot(s, [("train_loss", "train", "cyan"), ("val_loss", "val", "magenta")],
                                title="loss", id="loss-plot")
                yield CurvePlot(s, [("kappa_quadratic", "κ quadratic", "green"),
                                    ("balanced_accuracy_adjusted", "bal-acc-adj", "yellow")],
                                title="val", ylim=(0.0, 1.0), id="metric-plot")
            with Vertical(id="side"):
                yield FoldsPanel(s, title="cross-validation", id="folds", classes="-empty")
                yield ClassesPanel(s, title="recall · predicted vs true", id="classes")
                yield ConfusionPanel(s, title="confusion (rows = true)", id="confusion")
                yield MetricsPanel(s, title="metrics", id="metrics")
                suggestions = SuggestionList(id="suggestions", classes="-empty")
                suggestions.border_title = "suggestions"
                yield suggestions
        log = EventLog(id="log", max_lines=2000, wrap=True, markup=False)
        log.border_title = "events"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        getattr(self.app, "register_dashboard", lambda screen: None)(self)
        self.title = "mammo-tui"
        self.sub_title = "watch (read-only)" if self.read_only else "training"
        if self.request is not None:
            self._replay_history(self.request)
            self.start_training(self.request)
        elif self.replay is not None:
            for event in self.replay:
                self._dirty |= self.state.apply(event)
            # After the first layout, so the log wraps at its real width.
            self.call_after_refresh(self._repaint)
        elif self.run_dir:
            self._start_follow(self.run_dir)

    # -- event intake ----------------------------------------------------------------------------
    @on(EngineEvent)
    def _on_engine_event(self, message: EngineEvent) -> None:
        self._last_event_time = max(self._last_event_time, message.event.time)
        if self.state.stale:  # it spoke again: alive after all
            self.state.stale = ""
            self._dirty |= {COLLAPSE, STATUS}
        self._dirty |= self.state.apply(message.event)
        if isinstance(message.event, DataProgress) and not self.state.done:  # the start-up panel shows it
            from mammo_tui.console import format_duration

            e = message.event
            rate = f", {e.images_per_s:.1f} img/s, ETA {format_duration(e.eta_s)}" if e.done else ""
            self.state.starting = f"{e.stage}: {e.done}/{e.total}{rate}"
            self._dirty.add(PROGRESS)
        if not self._repaint_pending:
            self._repaint_pending = True
            self.set_timer(REPAINT_DELAY_S, self._repaint)

    def _repaint(self) -> None:
        self._repaint_pending = False
        dirty, self._dirty = self._dirty, set()
        if PROGRESS in dirty or STATUS in dirty:
            self.query_one(ProgressPanel).refresh(layout=True)
        if EPOCH in dirty:  # heavy panels: at most once per epoch
            for plot in self.query(CurvePlot):
                plot.refresh()
            for panel in (ClassesPanel, ConfusionPanel, MetricsPanel):
                self.query_one(panel).refresh(layout=True)
        if COLLAPSE in dirty or EPOCH in dirty:
            self.query_one(CollapseBanner).refresh(layout=True)
        if COLLAPSE in dirty:
            panel = self.query_one(SuggestionList)
            panel.show(self.state.suggestions())
            source = self.state.suggesting_fold
            panel.border_title = f"suggestions from fold {source.fold}" if source else "suggestions"
        if FOLDS in dirty or STATUS in dirty:  # a fold's end (stopped, failed) shows in its row
            self.set_class(self.state.is_cv, "-cv")
            folds = self.query_one(FoldsPanel)
            folds.set_class(not self.state.is_cv, "-empty")
            folds.refresh(layout=True)
        if LOG in dirty:
            self.query_one(EventLog).drain(self.state)
        if dirty & {STATUS, COLLAPSE, PROGRESS}:
            self.refresh_bindings()  # Stop / Apply / Edit come and go with the run's state
        if STATUS in dirty or PROGRESS in dirty:
            s = self.state
            parts = ["watch" if self.read_only else "training"]
            if s.is_cv:
                parts.append(f"cross-validation {Path(s.cv_dir).name}")
                if not s.cv_finished:
                    parts.append(f"fold {s.fold}/{s.folds_total}")
            elif s.run_name:
                parts.append(s.run_name)
            if len(parts) > 1:
                parts.append(s.status_word)
            if self.fix_note:
                parts.append(self.fix_note)
            self.sub_title = " · ".join(parts)

    # -- live training ---------------------------------------------------------------------------
    @on(EngineDone)
    def _on_engine_done(self, message: EngineDone) -> None:
        self.result = message.result
        if message.error is not None:
            text = str(message.error) or type(message.error).__name__
            if not self.state.done:  # raised before the run started (data, config, weights)
                self.state.failed = RunFailed(error=text.splitlines()[0])
            self._say("error", f"engine stopped: {text}")
            self.notify(text, title="training stopped", severity="error", timeout=10)
        self.state.starting = ""
        if self.edit_wizard() is not None:  # a failed or finished run is not a dead end
            self.state.hint = EDIT_HINT
            if self.state.failed is not None:
                self._say("warning", EDIT_HINT)
        self._dirty |= {STATUS, PROGRESS, COLLAPSE}
        self._repaint()

    def on_unmount(self) -> None:
        self.cancel.set()  # never leave a follower or trainer running behind a closed screen

    # -- actions ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "stop":
            return self.engine_running and not self.read_only
        if action == "read_only_note":
            return self.read_only
        if action == "apply":
            return bool(self.state.suggestions())
        if action == "mark":
            return bool(self.state.suggestions())
        if action == "apply_note":
            return True
        if action == "edit":
            return not self.read_only and not self.engine_running and self.edit_wizard() is not None
        if action == "report":
            return bool(self.state.cv_dir or self.state.run_dir) and not self.engine_running
        return True

    def action_report(self) -> None:
        self._write_report(self.state.cv_dir or self.state.run_dir)

    @work(thread=True, group="report", exclusive=True, exit_on_error=False)
    def _write_report(self, run_dir: str) -> None:
        from mammo_tui.errors import MammoError
        from mammo_tui.report import write_report

        try:
            path = write_report(run_dir)
        except (MammoError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="no report", severity="error", timeout=8)
            return
        self.app.call_from_thread(self.notify, f"report written: {path}", timeout=8)

    def action_read_only_note(self) -> None:
        self.notify(READ_ONLY_MSG, severity="warning", timeout=6)

    def edit_wizard(self) -> Any:
        """The wizard state the config step reopens with, or None when this run did not come from
        a config that can be launched again (a watch, a resume without a dataset)."""
        if self.wizard is not None:
            return self.wizard
        job = self.request
        config = getattr(job, "config", None)
        if config is None or getattr(job, "resume", None) or not (job.demo or job.dataset):
            return None
        self.wizard = WizardState(spec=job.dataset, demo=job.demo, demo_size=job.demo_size,
                                  user_config=config, skip_bad_rows=job.skip_bad_rows)
        self.wizard.edits["run-name"] = job.run_name or ""
        if job.cv_folds in {folds for _, folds in VALIDATION_CHOICES}:  # a CV comes back as a CV
            self.wizard.edits["cv-folds"] = job.cv_folds
        return self.wizard

    def action_edit(self) -> None:
        from mammo_tui.tui.configure import ConfigScreen

        wizard = self.edit_wizard()
        used = self.state.run_dir and Path(self.state.run_dir).is_dir()
        if used and wizard.edits.get("run-name") == Path(self.state.run_dir).name:
            wizard.edits["run-name"] = ""  # taken by this run: the next launch gets a new name
        self.app.push_screen(ConfigScreen(wizard))

    def action_stop(self) -> None:
        if not self.engine_running:
            self.notify("training is not running", timeout=3)
            return

        def answered(yes: bool | None) -> None:
            if yes and self.engine_running:
                self.cancel.set()
                self._say("warning", "stop requested: the run stops after this batch")

        self.app.push_screen(ConfirmScreen(f"Stop training? {self.resume_hint()}", yes="Stop"), answered)

    def resume_hint(self) -> str:
        """How to continue this run (or cross-validation) after a stop."""
        s = self.state
        if s.is_cv:
            return ("The engine saves a checkpoint; finished folds are kept and the cross-validation "
                    f"continues with: {resume_command(None, s.cv_dir)}")
        return f"The engine saves a checkpoint; the run stays resumable: {resume_command(s.run_dir)}"

    def _say(self, level: str, text: str) -> None:
        self.state.note(level, text)
        self._dirty.add(LOG)
        self._repaint()

    def action_toggle(self, key: str) -> None:
        """-hidden hides; -pinned overrides the small-terminal rule that hides a panel for room."""
        panel_id, label = PANELS[key]
        panel = self.query_one(f"#{panel_id}")
        hide = not panel.has_class("-hidden") and (panel.display or panel.has_class("-empty"))
        panel.set_class(hide, "-hidden")
        panel.set_class(not hide, "-pinned")
        self.notify(f"{label}: {'hidden' if hide else 'shown'}", timeout=2)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self))

    async def action_back(self) -> None:
        if self.check_action("edit", ()):  # a failed or finished run: back to its config step
            self.action_edit()
            return
        if len(self.app.screen_stack) <= 2 or self.engine_running and not self.read_only:
            return  # the dashboard of a live run is left with q (which stops it safely)
        await self.stop_engine()
        self.app.pop_screen()

