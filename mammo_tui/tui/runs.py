"""The runs browser: every run under the runs root; open one (watch), compare two side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mammo_tui.tui.dialogs import HelpScreen
from mammo_tui.tui.render import METRIC_NAMES, STATUS_STYLE
from mammo_tui.tui.state import fmt

# What a user scans for first (status, best κ, when) before the details: at 80 columns the
# columns on the right are the ones cut.
COLUMNS = ("run", "status", "κq", "started", "bal-acc-adj", "best", "epochs", "preset", "arch")
MARK = Text("●", style="bold cyan")


def started_text(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "–"


def run_details(path: Path) -> dict[str, Any]:
    """summary.json, or what the event log says so far for a run that has none yet;
    for a cross-validation, the means over its finished folds (runread's details())."""
    from mammo_tui.rundir import is_cv_dir
    from mammo_tui.runread import CVRecord, RunRecord

    return (CVRecord(path) if is_cv_dir(path) else RunRecord(path)).details()


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """config.diff on TrainConfigs when both parse; a plain dict diff otherwise (older runs)."""
    from mammo_tui.config import KEYS, diff, from_mapping
    from mammo_tui.errors import ConfigError

    try:
        return diff(from_mapping({k: v for k, v in a.items() if k in KEYS}),
                    from_mapping({k: v for k, v in b.items() if k in KEYS}))
    except (ConfigError, TypeError):
        keys = [k for k in KEYS if k in a or k in b] + sorted(set(a) | set(b) - set(KEYS))
        return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def compare_tables(a: dict[str, Any], b: dict[str, Any]) -> tuple[Table, Table]:
    """(metrics side by side, config differences) for two runs' details."""
    names = (a.get("run_name", "A"), b.get("run_name", "B"))
    metrics = Table(box=None, padding=(0, 1), pad_edge=False)
    metrics.add_column("", style="bold", no_wrap=True)
    metrics.add_column(names[0], justify="right", no_wrap=True)
    metrics.add_column(names[1], justify="right", no_wrap=True)
    metrics.add_column("Δ", justify="right", no_wrap=True)

    def status(d: dict) -> Text:
        word = d.get("status", "?")
        return Text(word, style=STATUS_STYLE.get(word, ""))

    metrics.add_row("status", status(a), status(b), "")
    metrics.add_row("best epoch", str(a.get("best_epoch") or "–"), str(b.get("best_epoch") or "–"), "")
    metrics.add_row("epochs", str(a.get("epochs_completed", "–")), str(b.get("epochs_completed", "–")), "")
    ma, mb = a.get("best_metrics") or {}, b.get("best_metrics") or {}
    for key, label in METRIC_NAMES:
        va, vb = ma.get(key), mb.get(key)
        delta = ""
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            change = vb - va
            delta = Text(f"{change:+.3f}", style="green" if change > 0.0005 else
                         ("red" if change < -0.0005 else "dim"))
        metrics.add_row(label, fmt(va), fmt(vb), delta)
    ra, rb = ma.get("recall_per_class") or [], mb.get("recall_per_class") or []
    for i, name in enumerate("ABCD"):
        if i < len(ra) or i < len(rb):
            metrics.add_row(f"recall {name}", fmt(ra[i] if i < len(ra) else None),
                            fmt(rb[i] if i < len(rb) else None), "")

    changes = config_diff(a.get("config") or {}, b.get("config") or {})
    config = Table(box=None, padding=(0, 1), pad_edge=False)
    config.add_column("config", style="bold", no_wrap=True)
    config.add_column(names[0], no_wrap=True)
    config.add_column(names[1], no_wrap=True)
    if not changes:
        config.add_row(Text("same config", style="dim"), "", "")
    for key, (va, vb) in changes.items():
        config.add_row(key, str(va), Text(str(vb), style="bold yellow"))
    return metrics, config


class RunsScreen(Screen):
    HELP_TITLE = "runs browser"
    HELP_TEXT = ("Runs under the runs root, newest first. A cross-validation is one row (κq and "
                 "bal-acc-adj: the mean over its finished folds) with its folds below it; a sweep is one "
                 "row (its best configuration's means) with its runs below it. enter opens "
                 "the dashboard of a run or CV, or a sweep's leaderboard (a "
                 "replay when it is finished, live when it is still running). space marks runs; c "
                 "compares the two marked runs (or the marked one with the one under the cursor).")
    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("r", "refresh", "Refresh"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self, root: str | Path = "runs") -> None:
        super().__init__()
        self.root = Path(root)
        self.paths: list[Path] = []
        self.marked: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-hint", classes="hint")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"runs in {self.root}"
        table = self.query_one(DataTable)
        table.add_column(" ", width=1, key="mark")  # fixed width: an empty column would stay 0 wide
        table.add_columns(*COLUMNS)
        self.action_refresh()
        table.focus()

    def action_refresh(self) -> None:
        from mammo_tui.runread import list_runs

        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        runs = list_runs(self.root)
        self.paths = [r.path for r in runs]
        self.marked = [p for p in self.marked if p in self.paths]
        for run in runs:
            table.add_row(*self._cells(run), key=str(run.path))
        hint = self.query_one("#runs-hint", Static)
        if not runs:
            hint.update(f"No runs under {self.root} yet. Start one with `mammo-tui` (the wizard) "
                        "or `mammo-tui train --no-ui --demo`.")
        else:
            hint.update(f"{len(runs)} runs under {self.root} · enter open · space mark · c compare")
        if runs:
            table.move_cursor(row=min(keep, len(runs) - 1))

    def _cells(self, run) -> list[Any]:
        mark = MARK if run.path in self.marked else ""
        name: Any = run.name
        epochs = str(run.epochs_completed)
        if run.kind == "cv":
            name = Text.assemble(run.name, (f"  {run.folds}-fold CV", "bold"))
            epochs = f"{run.folds_done}/{run.folds} folds"
        elif run.kind == "sweep":
            name = Text.assemble(run.name, (f"  {run.folds}-run sweep", "bold"))
            epochs = f"{run.folds_done}/{run.folds} runs"
        elif run.kind in ("fold", "member"):
            name = Text(f"  └ {run.name}", style="dim")
        elif run.parent:  # started by applying a fix to a finished run
            name = Text.assemble(run.name, (f"  ← fix of {run.parent}", "dim"))
        return [mark, name, Text(run.status, style=STATUS_STYLE.get(run.status, "")),
                fmt(run.kappa_quadratic), started_text(run.started), fmt(run.bal_acc_adj),
                str(run.best_epoch) if run.best_epoch is not None else "–", epochs,
                run.preset or "–", run.arch or "–"]

    def _cursor_path(self) -> Path | None:
        table = self.query_one(DataTable)
        if not self.paths or table.cursor_row is None:
            return None
        return self.paths[min(table.cursor_row, len(self.paths) - 1)]

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        path = self._cursor_path()
        if path is not None:
            self.app.open_run(str(path))

    def action_mark(self) -> None:
        path = self._cursor_path()
        if path is None:
            return
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked = (self.marked + [path])[-2:]  # the two most recent marks
        table = self.query_one(DataTable)
        for p in self.paths:
            table.update_cell(str(p), "mark", MARK if p in self.marked else "")

    def action_compare(self) -> None:
        pair = list(self.marked)
        current = self._cursor_path()
        if len(pair) == 1 and current is not None and current not in pair:
            pair.append(current)
        if len(pair) != 2:
            self.notify("mark two runs with space (or one, and put the cursor on the other)", timeout=4)
            return
        self.app.push_screen(CompareScreen(pair[0], pair[1]))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


class CompareScreen(Screen):
    HELP_TITLE = "compare runs"
    HELP_TEXT = "Best-epoch metrics side by side (Δ = right minus left) and the config keys that differ."
    BINDINGS = [Binding("escape", "back", "Back"), Binding("question_mark", "help", "Help")]

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.a, self.b = Path(a), Path(b)

    def compose(self) -> ComposeResult:
        from mammo_tui.rundir import is_cv_dir

        metrics, config = compare_tables(run_details(self.a), run_details(self.b))
        yield Header()
        with VerticalScroll(id="compare-body"):
            with Horizontal(id="compare-columns"):
                left = Static(metrics, id="compare-metrics", classes="panel")
                left.border_title = "best epoch metrics" + (
                    " (a CV: mean over its folds)" if any(map(is_cv_dir, (self.a, self.b))) else "")
                yield left
                right = Static(config, id="compare-config", classes="panel")
                right.border_title = "config differences"
                yield right
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"compare {self.a.name} · {self.b.name}"

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self))
