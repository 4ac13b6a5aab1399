"""Wizard step 2: the dataset's fingerprint and validation report; continue without bad rows or go back."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Static

from mammo_tui.labels import CLASS_NAMES
from mammo_tui.tui.render import count_bars
from mammo_tui.tui.job import WizardState
from mammo_tui.tui.step import WizardStep

MAX_EXAMPLES = 3  # problem messages shown per kind; the rest are counted


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "–"


def _size_text(fp: Any) -> str:
    if fp.width is None or fp.height is None:
        return "not read"
    w, h = fp.width, fp.height
    if w.min == w.max and h.min == h.max:
        return f"{w.min} × {h.min} px"
    return f"{w.min}–{w.max} × {h.min}–{h.max} px (median {w.median:g} × {h.median:g})"


def imbalance_text(ratio: float) -> Text:
    if not math.isfinite(ratio):
        return Text("infinite (a class has no images)", style="bold red")
    style = "bold yellow" if ratio > 10 else "green"
    word = "high, > 10" if ratio > 10 else "moderate, <= 10"
    return Text(f"{ratio:.1f} ({word})", style=style)


def patients_text(fp: Any) -> Text:
    """The patients count and where it came from; red when images are their own group."""
    text = Text(f"{fp.n_patients:,}")
    source = getattr(fp, "group_source", "")
    if source:
        style = "bold red" if getattr(fp, "group_warning", None) else "dim"
        text.append(f"  (from {source})", style=style)
    return text


def group_warning_text(fp: Any) -> Text | None:
    """The loud warnings about the split: no patient ids, identical images under two patients."""
    lines = []
    warning = getattr(fp, "group_warning", None)
    if warning:
        lines.append(warning.removeprefix("WARNING: "))
    lines += [note.removeprefix("WARNING: ") for note in getattr(fp, "group_notes", []) if note.startswith("WARNING")]
    leaks = getattr(fp, "leakage_risks", 0)
    if leaks:
        lines.append(f"leakage risk: {leaks} images have the same bytes as an image of another patient, so "
                     "one image can be on both sides of the split (duplicate_content below)")
    if not lines:
        return None
    text = Text()
    for line in lines:
        head, _, rest = line.partition(": ")
        text.append(f"⚠ {head}: ", style="bold red")
        text.append(rest + "\n", style="bold yellow")
    text.rstrip()
    return text


def facts_table(fp: Any) -> Table:
    table = Table(box=None, padding=(0, 1), show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    if getattr(fp, "layout", ""):
        table.add_row("Layout", fp.layout)
    table.add_row("Images", f"{fp.n_images:,}  ({fp.rows_usable:,} of {fp.rows_read:,} rows usable)")
    table.add_row("Patients", patients_text(fp))
    if getattr(fp, "n_test_images", 0):
        table.add_row("Test side", f"{fp.n_test_images:,} images held out (the dataset's official split)")
    if getattr(fp, "views", None):
        table.add_row("Views", _counts_text(fp.views))
    left_out = getattr(fp, "left_out", None)
    if left_out:
        table.add_row("Left out", f"{sum(left_out.values()):,} rows: " + "; ".join(f"{r} {n}" for r, n in left_out.items()))
    table.add_row("Imbalance", imbalance_text(fp.imbalance_ratio))
    table.add_row("Image size", _size_text(fp))
    table.add_row("Formats", _counts_text(fp.formats))
    if fp.photometric:
        table.add_row("Photometric", _counts_text(fp.photometric))
    if fp.transfer_syntaxes:
        table.add_row("Compression", _counts_text(fp.transfer_syntaxes))
    return table


def problems_text(report: Any) -> Text:
    counts = report.problem_counts()
    if not counts:
        return Text("No problems: every row is usable.", style="green")
    text = Text()
    for kind, n in counts.items():
        text.append(f"{kind}", style="bold yellow")
        text.append(f"  {n}\n")
        examples = [p for p in report.problems if p.kind == kind][:MAX_EXAMPLES]
        for problem in examples:
            text.append(f"  • {problem.message}\n", style="dim")
        if n > len(examples):
            text.append(f"  … and {n - len(examples)} more\n", style="dim")
    text.rstrip()
    return text


class FingerprintScreen(WizardStep):
    HELP_TITLE = "wizard 2/4: fingerprint"
    HELP_TEXT = ("What the scan found. Problems (missing files, unreadable images, unknown labels…) "
                 "remove only the rows they name; continue without them, or go back and fix them. "
                 "They are listed in the run's dataset.json.")
    BINDINGS = [
        Binding("enter", "next", "Continue"),
        *WizardStep.BINDINGS,
    ]
    # the split warning stands out from the other panels (red border); not a .panel, whose
    # app-wide border would win over this default
    DEFAULT_CSS = """
    #group-warning {
        border: round $error; border-title-color: $text-error; border-title-style: bold;
        background: $surface; padding: 0 1; height: auto;
    }
    """

    def compose(self) -> ComposeResult:
        w: WizardState = self.wizard
        fp, report = w.fingerprint, w.report
        yield Header()
        with VerticalScroll(id="wizard-body"):
            source = "built-in demo dataset" if w.demo else fp.source
            yield Static(Text("Step 2 of 4 · Fingerprint", style="bold"), classes="step-title")
            yield Static(Text(source, style="dim"), classes="hint")
            with Horizontal(id="fingerprint-columns"):
                yield Static(count_bars(CLASS_NAMES, fp.class_counts, 40), id="class-counts",
                             classes="panel")
                yield Static(facts_table(fp), id="facts", classes="panel")
            warning = group_warning_text(fp)
            if warning is not None:
                yield Static(warning, id="group-warning")
            problems = Static(problems_text(report), id="problems", classes="panel")
            problems.border_title = f"Validation report ({sum(report.problem_counts().values())} problems)"
            yield problems
            for note in getattr(report, "notes", []):
                yield Static(Text(f"note: {note}", style="dim"))
            with Horizontal(classes="buttons"):
                # rows removed by problems; an empty class or duplicate content removes nothing
                bad_rows = len(report.blocking_problems())
                if bad_rows:
                    label = f"Continue without {bad_rows} bad rows (enter)"
                else:
                    label = "Continue anyway (enter)" if report.problems else "Continue (enter)"
                yield Button(label, variant="primary", id="next", compact=True)
                yield Button("Back (esc)", id="back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run: fingerprint"
        self.query_one("#class-counts").border_title = "images per class"
        self.query_one("#facts").border_title = "dataset"
        for panel in self.query("#group-warning"):
            panel.border_title = "split warning"
        self.query_one("#next", Button).focus()

    @on(Button.Pressed, "#next")
    def action_next(self) -> None:
        w = self.wizard
        w.skip_bad_rows = bool(w.report.blocking_problems())  # the engine refuses a report with them otherwise
        if w.plan is None:  # planned with the scan (the weights check may wait on the network)
            from mammo_tui.app.planning import make_plan

            w.plan = make_plan(w.fingerprint, w.user_overrides, demo=w.demo, check_weights=False)
        from mammo_tui.tui.decision import DecisionScreen

        self.app.push_screen(DecisionScreen(w))
