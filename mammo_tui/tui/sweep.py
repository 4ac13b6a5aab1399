"""The sweep screen: a live leaderboard for `mammo-tui sweep SPEC` and `mammo-tui watch SWEEP_DIR`.

What it shows is read from the sweep folder about once a second (drivers.leaderboard: sweep.json
and each member's summary.json, in a thread worker), live and under `watch` alike, so every number
on it equals the runs' own files and the `--no-ui` table. A live sweep runs
drivers.sweep.run_sweep in a thread worker; its events give the log lines. Under `watch` the same
events are rebuilt from what changed between two reads of the folder (`folder_events`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker

from mammo_tui.events import (
    DataProgress,
    Event,
    LogMessage,
    RunFailed,
    SweepFinished,
    SweepRunFinished,
    SweepRunStarted,
    dispatch,
    handles,
)
from mammo_tui.tui.dialogs import HelpScreen
from mammo_tui.tui.messages import EngineDone, EngineEvent, SweepRead, stop_and_wait
from mammo_tui.tui.render import STATUS_STYLE
from mammo_tui.tui.state import LogLine, fmt, fmt_pm
from mammo_tui.tui.widgets import EventLog

REFRESH_S = 1.0  # the leaderboard is re-read from disk this often
# The live sweep's events that reach the UI thread: the sweep's own, and what a user must see
# from a member run (its failure, warnings); batches and epochs show through the files.
SWEEP_EVENTS = (SweepRunStarted, SweepRunFinished, SweepFinished)
FORWARDED = (*SWEEP_EVENTS, RunFailed, LogMessage, DataProgress)
COLUMNS = (("rank", "#"), ("config", "config"), ("status", "status"), ("seeds", "seeds"),
           ("kappa", "κq"), ("bal", "bal-acc-adj"), ("recall", "lowest recall"))
ENDED = ("finished", "interrupted", "failed")  # sweep.json statuses of a sweep that no longer trains


# -- what one read of the folder says (no textual) --------------------------------------------------
@dataclass
class SweepView:
    """One read of a sweep folder."""

    sweep_dir: Path
    manifest: dict[str, Any]
    entries: list[Any]  # drivers.leaderboard.Entry, best first
    members: list[dict[str, Any]]  # sweep.json's queue: run, config_id, seed
    states: dict[str, str]  # run -> pending | running | interrupted | failed | healthy | warning | collapsed
    summaries: dict[str, dict[str, Any]]  # run -> its summary.json (the runs that have one)
    live: bool | None = None  # a process holds the sweep folder (None: unknown, or not asked)

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @property
    def planned(self) -> int:
        planned = self.manifest.get("planned")
        return planned if isinstance(planned, int) else len(self.members)

    @property
    def done(self) -> int:
        return sum(entry.seeds_done for entry in self.entries)


def member_state(run_dir: Path, summary: dict[str, Any] | None) -> str:
    """As the leaderboard counts it: summary.json's status, else running once the log exists."""
    from mammo_tui.runlog import EVENTS_FILE

    if summary:
        return str(summary.get("status") or "running")
    return "running" if (run_dir / EVENTS_FILE).is_file() else "pending"


def read_sweep(sweep_dir: str | Path) -> SweepView:
    """Everything the screen shows, from the folder (cheap: small JSON files)."""
    from mammo_tui.drivers.leaderboard import leaderboard
    from mammo_tui.rundir import lock_held, read_group_manifest, read_summary

    sweep_dir = Path(sweep_dir)
    manifest = read_group_manifest(sweep_dir, "sweep")
    members = [m for m in manifest.get("members") or [] if isinstance(m, dict) and isinstance(m.get("run"), str)]
    summaries: dict[str, dict[str, Any]] = {}
    states: dict[str, str] = {}
    for member in members:
        run = member["run"]
        summary = read_summary(sweep_dir / run)
        if summary:
            summaries[run] = summary
        states[run] = member_state(sweep_dir / run, summary)
    live = lock_held(sweep_dir) if manifest.get("status") == "running" else None
    return SweepView(sweep_dir, manifest, leaderboard(sweep_dir, manifest), members, states, summaries, live)


def folder_events(before: SweepView | None, now: SweepView) -> list[Event]:
    """The sweep events that explain the change from one read to the next (`watch`); from the
    first read, what already happened: runs that finished before (kept), the run training now."""
    events: list[Event] = []
    total, where = now.planned, str(now.sweep_dir)
    old_states = before.states if before is not None else {}
    for index, member in enumerate(now.members, 1):
        run = member["run"]
        state, old = now.states.get(run, "pending"), old_states.get(run, "pending")
        if state == old:
            continue
        who = dict(index=index, total=total, run=run, config_id=str(member.get("config_id") or run),
                   seed=member.get("seed") or 0)
        if state == "running":
            events.append(SweepRunStarted(**who, run_dir=str(now.sweep_dir / run), sweep_dir=where))
        elif state != "pending" and not (before is None and state == "interrupted"):
            summary = now.summaries.get(run) or {}
            events.append(SweepRunFinished(**who, status=state, best_metrics=summary.get("best_metrics") or {},
                                           kept=before is None, best_epoch=summary.get("best_epoch"),
                                           sweep_dir=where))
    if now.status in ENDED and (before is None or before.status != now.status):
        best = now.entries[0] if now.entries and now.entries[0].rank == 1 else None
        events.append(SweepFinished(sweep_dir=where, exit_code=0, status=now.status,
                                    best_config_id=best.config_id if best else "",
                                    best_status=best.status if best else "",
                                    headline=best.means() if best else {}))
    return events


def best_run(entry: Any, view: SweepView) -> Path | None:
    """The run of a configuration to open: its best finished seed (the selection score that ranks
    the leaderboard), else the one training, else the first that has started; None before that."""
    from mammo_tui.metrics import selection_score
    from mammo_tui.rundir import FINISHED_STATUSES

    finished = [run for run in entry.runs if view.states.get(run) in FINISHED_STATUSES]
    if finished:  # max keeps the first of equal scores: queue order, as the leaderboard
        best = max(finished, key=lambda run: selection_score(view.summaries[run].get("best_metrics") or {}))
        return view.sweep_dir / best
    started = [run for run in entry.runs if view.states.get(run, "pending") != "pending"]
    running = [run for run in started if view.states[run] == "running"]
    chosen = (running or started or [None])[0]
    return view.sweep_dir / chosen if chosen else None


# -- the screen's state (no textual) -----------------------------------------------------------------
def _scores(metrics: dict[str, Any]) -> str:
    if metrics.get("kappa_quadratic") is None:
        return ""
    bal = fmt(metrics.get("balanced_accuracy_adjusted"))
    return f" · κq {fmt(metrics.get('kappa_quadratic'))} · bal-acc-adj {bal}"


@dataclass
class SweepState:
    view: SweepView | None = None
    sweep_dir: str = ""
    starting: str = ""  # live: what happens before the next run trains (planning, preparing images)
    current: str = ""  # live: the member run training now (names its failure in the log)
    error: str = ""  # live: run_sweep raised (a bad spec or dataset, a full disk)
    new_log: list[LogLine] = field(default_factory=list)  # drained by the log panel

    def note(self, level: str, text: str) -> None:
        self.new_log.append(LogLine(level, text))

    def apply(self, event: Event) -> None:
        """A sweep event (live, or rebuilt from the folder) -> the log, and what runs now."""
        dispatch(self, event)

    @handles(SweepRunStarted)
    def _on_sweep_run_started(self, event: SweepRunStarted) -> None:
        self.sweep_dir = self.sweep_dir or event.sweep_dir
        self.starting = ""
        if not event.kept:
            self.current = event.run
            self.note("info", f"run {event.index}/{event.total} started: {event.config_id}, seed {event.seed}")

    @handles(SweepRunFinished)
    def _on_sweep_run_finished(self, event: SweepRunFinished) -> None:
        self.current = "" if event.run == self.current else self.current
        level = {"collapsed": "warning", "warning": "warning", "failed": "error"}.get(event.status, "info")
        kept = " (earlier)" if event.kept else ""  # finished before this session or this watch
        self.note(level, f"run {event.index}/{event.total} {event.config_id}, seed {event.seed}: "
                         f"{event.status}{_scores(event.best_metrics)}{kept}")

    @handles(SweepFinished)
    def _on_sweep_finished(self, event: SweepFinished) -> None:
        self.starting, self.current = "", ""
        self.sweep_dir = self.sweep_dir or event.sweep_dir
        best = (f": best {event.best_config_id} ({event.best_status}){_scores(event.headline)}"
                if event.best_config_id else "")
        level = "info" if event.status == "finished" else "warning"
        self.note(level, f"sweep {event.status}{best}")

    @handles(RunFailed)
    def _on_failed(self, event: RunFailed) -> None:
        self.note("error", f"{self.current or 'the run'} failed: {event.error}")

    @handles(LogMessage)
    def _on_log(self, event: LogMessage) -> None:
        if event.level in ("warning", "error"):
            self.note(event.level, event.message)

    @handles(DataProgress)
    def _on_data_progress(self, event: DataProgress) -> None:  # shown until the images are ready, then the epochs
        self.starting = f"{event.stage}: {event.done}/{event.total}" if event.done < event.total else ""

    def running_lines(self) -> list[Text]:
        """One line per member run training now: which configuration and seed, epoch k/N, and
        its collapse status after its last epoch."""
        view = self.view
        if view is None:
            return []
        lines = []
        for index, member in enumerate(view.members, 1):
            run = member["run"]
            if view.states.get(run) != "running":
                continue
            summary = view.summaries.get(run) or {}
            entry = next((e for e in view.entries if e.running_run == run), None)
            epochs = summary.get("epochs") or (entry.epochs if entry else None)
            epoch = int(summary.get("epochs_completed") or 0)
            collapse = summary.get("last_status") or "–"
            line = Text.assemble(("▶ ", "bold cyan"), f"run {index}/{view.planned} · ",
                                 (str(member.get("config_id") or run), "bold"),
                                 f" · seed {member.get('seed')} · epoch {epoch}/{epochs or '?'} · ",
                                 (collapse, STATUS_STYLE.get(collapse, "")))
            if not epoch and self.starting:
                line.append(f" · {self.starting}", style="dim")
            lines.append(line)
        return lines

    def progress_text(self, live_session: bool) -> Text:
        """The run(s) in progress, or where the sweep stands."""
        lines = self.running_lines()
        if lines:
            return Text("\n").join(lines)
        view = self.view
        if self.error:
            return Text(f"the sweep stopped: {self.error}", style="bold red")
        if view is None or not view.manifest:
            what = self.starting or ("planning the sweep…" if live_session else "reading the sweep…")
            return Text(what, style="dim")
        best = view.entries[0] if view.entries and view.entries[0].rank == 1 else None
        # "finished" says the queue is done, not how well: the best configuration's status says that
        style = "bold" if view.status == "finished" else STATUS_STYLE.get(view.status, "bold")
        text = Text.assemble((f"sweep {view.status}", style),
                             f" · {view.done}/{view.planned} runs finished")
        if best is not None:
            text.append(" · best ")
            text.append(best.config_id, style="bold")
            text.append(f" ({best.status})", style=STATUS_STYLE.get(best.status, ""))
        if view.status == "running" and view.live is False and not live_session:
            text.append("\nno process runs it (stopped or killed); continue it with "
                        f"mammo-tui sweep --resume {view.sweep_dir}", style="yellow")
        elif view.status == "running":
            text.append(f" · {self.starting or 'starting the next run…'}", style="dim")
        elif view.status == "interrupted":
            text.append(f"\ncontinue it with: mammo-tui sweep --resume {view.sweep_dir}", style="dim")
        return text


def leaderboard_cells(entry: Any) -> tuple[Any, ...]:
    """One row of the table: the leaderboard entry's values as `format_leaderboard` gives them."""
    return (str(entry.rank) if entry.rank is not None else "–", entry.config_id,
            Text(entry.status, style=STATUS_STYLE.get(entry.status, "")),
            f"{entry.seeds_done}/{entry.seeds_planned}", fmt_pm(entry.kappa_quadratic),
            fmt_pm(entry.balanced_accuracy_adjusted), fmt_pm(entry.lowest_recall))


# -- the screen --------------------------------------------------------------------------------------
class SweepScreen(Screen):
    HELP_TITLE = "sweep leaderboard"
    HELP_TEXT = ("One row per configuration, best first: ranked by the mean over its finished seeds of "
                 "balanced accuracy adjusted, then quadratic κ, then AUC (the key that picks a run's best "
                 "epoch); each value is mean ± std over the seeds. Status: the worst over its finished "
                 "seeds. The table is re-read from the sweep folder every second. enter opens the "
                 "configuration's best run in the dashboard (esc comes back). q stops a live sweep (asks "
                 "first): the run training is saved as interrupted, and `mammo-tui sweep --resume` "
                 "continues the sweep.")
    WATCH_HELP = (" Watch mode (read-only): this screen follows the sweep folder and changes nothing; "
                  "the sweep is stopped where it runs.")
    BINDINGS = [
        Binding("enter", "open", "Open run", tooltip="the highlighted configuration's best run, in the dashboard"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "back", "Back", show=False, tooltip="back to the previous screen"),
    ]

    def __init__(self, *, job: Any = None, sweep_dir: str | None = None) -> None:
        """job: a drivers.sweep.SweepJob to run now; sweep_dir alone: watch that folder."""
        super().__init__()
        self.job = job
        self.read_only = job is None
        self.state = SweepState(sweep_dir=str(sweep_dir or ""))
        if job is not None and job.resume:
            self.state.sweep_dir = str(job.resume)
        self.cancel = threading.Event()
        self.engine_idle = threading.Event()
        self.engine_idle.set()
        self.worker: Worker | None = None
        self.result: Any = None
        self._rows: list[tuple[Any, ...]] = []
        self._reading = False
        if self.read_only:
            self.HELP_TEXT = self.HELP_TEXT + self.WATCH_HELP

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.state.progress_text(not self.read_only), id="sweep-progress")
        table = DataTable(id="leaderboard", cursor_type="row", zebra_stripes=True)
        table.border_title = "leaderboard"
        yield table
        log = EventLog(id="sweep-log", max_lines=500, wrap=True, markup=False)
        log.border_title = "sweep events"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        getattr(self.app, "register_dashboard", lambda screen: None)(self)  # quit / hangup wait for it
        self.title = "mammo-tui"
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self._set_sub_title()
        if self.job is not None:
            self.start_sweep(self.job)
        self.set_interval(REFRESH_S, self.refresh_from_disk)
        self.refresh_from_disk()

    # -- reading the folder ------------------------------------------------------------------------
    def refresh_from_disk(self) -> None:
        if self.state.sweep_dir and not self._reading:
            self._reading = True
            self._read(self.state.sweep_dir)

    @work(thread=True, group="sweep-read", exit_on_error=False)
    def _read(self, sweep_dir: str) -> None:
        try:
            self.post_message(SweepRead(view=read_sweep(sweep_dir)))
        except Exception as exc:  # noqa: BLE001 - a damaged folder: said once in the log, read again later
            self.post_message(SweepRead(error=exc))

    @on(SweepRead)
    def _on_read(self, message: SweepRead) -> None:
        self._reading = False
        if message.error is not None:
            self.state.note("error", f"cannot read {self.state.sweep_dir}: {message.error}")
            self._repaint()
            return
        if self.read_only:  # under watch the log comes from the folder's changes
            for event in folder_events(self.state.view, message.view):
                self.state.apply(event)
        self.state.view = message.view
        self._repaint()

    # -- painting ----------------------------------------------------------------------------------
    def _repaint(self) -> None:
        self.query_one("#sweep-progress", Static).update(self.state.progress_text(not self.read_only))
        self.query_one(EventLog).drain(self.state)
        view = self.state.view
        rows = [leaderboard_cells(entry) for entry in view.entries] if view is not None else []
        if rows != self._rows:
            self._fill_table(rows)
        self._set_sub_title()

    def _fill_table(self, rows: list[tuple[Any, ...]]) -> None:
        """Re-fill the table, keeping the cursor on the same configuration as it moves up or down."""
        table = self.query_one(DataTable)
        keep = self._cursor_config()
        table.clear()
        for cells in rows:
            table.add_row(*cells, key=cells[1])
        self._rows = rows
        configs = [cells[1] for cells in rows]
        if keep in configs:
            table.move_cursor(row=configs.index(keep), animate=False)

    def _set_sub_title(self) -> None:
        view = self.state.view
        parts = ["watch (read-only)" if self.read_only else "sweep"]
        if self.state.sweep_dir:
            parts.append(Path(self.state.sweep_dir).name)
        if view is not None and view.manifest:
            parts += [view.status, f"{view.done}/{view.planned} runs"]
        self.sub_title = " · ".join(parts)

    def _cursor_config(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._rows or table.cursor_row is None:
            return None
        return self._rows[min(table.cursor_row, len(self._rows) - 1)][1]

    # -- the live sweep ----------------------------------------------------------------------------
    @property
    def engine_running(self) -> bool:
        return not self.engine_idle.is_set()

    def start_sweep(self, job: Any) -> None:
        self.cancel = threading.Event()
        self.engine_idle.clear()
        self.worker = self.run_worker(partial(self._sweep_thread, job, self.cancel), thread=True,
                                      group="engine", name="sweep", exit_on_error=False)

    def _sweep_thread(self, job: Any, cancel: threading.Event) -> None:
        # The worker thread: torch is imported here (by the engine), never at UI start-up.
        try:
            from mammo_tui.app.launch import run_sweep

            self.post_message(EngineDone(result=run_sweep(job, self._sink, cancel)))
        except BaseException as exc:  # noqa: BLE001 - shown on the screen, never a silent thread death
            self.post_message(EngineDone(error=exc))
        finally:
            self.engine_idle.set()

    def _sink(self, event: Event) -> None:
        if isinstance(event, FORWARDED):
            self.post_message(EngineEvent(event))

    @on(EngineEvent)
    def _on_event(self, message: EngineEvent) -> None:
        self.state.apply(message.event)
        if isinstance(message.event, SWEEP_EVENTS):
            self.refresh_from_disk()  # the standings change now, not at the next tick
        self._repaint()

    @on(EngineDone)
    def _on_done(self, message: EngineDone) -> None:
        self.result = message.result
        if message.result is not None:
            self.state.sweep_dir = str(message.result.sweep_dir)
        if message.error is not None:
            text = str(message.error) or type(message.error).__name__
            self.state.error = text.splitlines()[0]
            self.state.note("error", f"sweep stopped: {text}")
            self.notify(text, title="sweep stopped", severity="error", timeout=10)
        self._reading = False  # the last read, whatever a pending one says
        self.refresh_from_disk()
        self._repaint()

    async def stop_engine(self) -> None:
        await stop_and_wait(self.cancel, self.worker)

    def resume_hint(self) -> str:
        where = self.state.sweep_dir or "SWEEP_DIR"
        return ("The run training now is saved as interrupted, and so is the sweep; finished runs are kept. "
                f"Continue it with: mammo-tui sweep --resume {where}")

    def exit_summary(self) -> str:
        """What the CLI prints after the app exits (nextsteps.sweep_summary), or why there is none."""
        from mammo_tui.app.nextsteps import sweep_summary

        text = sweep_summary(self.state.sweep_dir) if self.state.sweep_dir else ""
        if self.state.error:
            text = "\n".join(filter(None, [text, f"mammo-tui: the sweep stopped: {self.state.error}"]))
        return text

    def on_unmount(self) -> None:
        self.cancel.set()  # never leave a sweep running behind a closed screen

    # -- actions -----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "back":
            return len(self.app.screen_stack) > 2
        return True

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        view, config = self.state.view, self._cursor_config()
        entry = next((e for e in view.entries if e.config_id == config), None) if view else None
        if entry is None:
            return
        run_dir = best_run(entry, view)
        if run_dir is None or not run_dir.is_dir():
            self.notify(f"no run of {entry.config_id} has started yet", timeout=4)
            return
        self.app.open_run(str(run_dir))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # a live sweep is the first screen: it is left with q
            self.app.pop_screen()
