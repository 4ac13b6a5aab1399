"""Wizard step 3: the decision flow (size x imbalance -> risk -> preset), this dataset's branch lit."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Static

from mammo_tui.tui.step import WizardStep

RISK_STYLE = {"highest": "bold red", "medium": "bold yellow", "low": "bold green"}


def _short_action(action: str) -> str:
    return action.removeprefix("frozen + ")


def flow_text(plan, table=None, size_table=None) -> Text:
    """The decision table drawn as a tree; the rule that fired is bright, the others dim."""
    from mammo_tui.planner import DECISION_TABLE, FREEZE_TEXT, SIZE_TABLE, format_ratio, size_row

    table = table if table is not None else DECISION_TABLE
    size_table = size_table if size_table is not None else SIZE_TABLE
    text = Text(no_wrap=True, overflow="ellipsis")
    fired = next((row for row in table if row.rule == plan.rule), None)
    patients = f" from {plan.n_patients:,} patients" if plan.n_patients is not None else ""
    text.append(f"This dataset: {plan.n_images:,} images{patients}, imbalance {format_ratio(plan.imbalance)} "
                "(max/min)\n\n", style="bold")
    text.append(" images      max/min   risk       the table says\n", style="dim underline")
    previous_images = None
    for index, row in enumerate(table):
        lit = row is fired
        first_of_group = row.images != previous_images
        last_of_group = index + 1 == len(table) or table[index + 1].images != row.images
        previous_images = row.images
        group_lit = fired is not None and fired.images == row.images
        base = "" if lit else "dim"
        if first_of_group:
            text.append(f" {row.images:<7}", style="bold" if group_lit else "dim")
            text.append("─┬─" if not last_of_group else "───", style="bold cyan" if group_lit else "dim")
        else:
            text.append(" " * 8)
            text.append(" └─", style="bold cyan" if lit else "dim")
        text.append(f" {row.imbalance:<6}", style="bold" if lit else "dim")
        text.append(" ─▶ ", style="bold cyan" if lit else "dim")
        text.append(f"{row.risk:<7}", style=RISK_STYLE.get(row.risk, "bold") if lit else "dim")
        text.append(" ─▶ ", style="bold cyan" if lit else "dim")
        text.append(_short_action(row.action), style="bold" if lit else base)
        text.append(" ◀" if lit else "", style="bold cyan")
        text.append("\n")
    here = size_row(plan.samples)
    text.append("\n images      freezing depth by size\n", style="dim underline")
    for row in size_table:
        lit = row is here
        text.append(f" {row.images:<11} {FREEZE_TEXT[row.freeze]}", style="bold" if lit else "dim")
        text.append(" ◀\n" if lit else "\n", style="bold cyan")
    text.rstrip()
    return text


def result_text(plan) -> Text:
    text = Text()
    text.append("→ preset ", style="bold")
    text.append(plan.preset, style="bold cyan")
    text.append(f" (freeze = {plan.freeze}, {plan.risk} risk)", style="bold")
    if plan.overrides:
        text.append("  + " + ", ".join(f"{k} = {v}" for k, v in plan.overrides.items()), style="cyan")
    return text


def reasons_text(plan) -> Text:
    text = Text()
    for i, reason in enumerate(plan.reasons):
        text.append(("\n" if i else "") + f"• {reason}")
    return text


class DecisionScreen(WizardStep):
    HELP_TITLE = "wizard 3/4: decision flow"
    HELP_TEXT = ("The reference write-up's rules: dataset size and class imbalance give a collapse "
                 "risk, the risk gives how much of the network may train and how to balance the "
                 "classes. The lit row is the rule that fired for this dataset.")
    BINDINGS = [Binding("enter", "next", "Edit config"), *WizardStep.BINDINGS]

    def compose(self) -> ComposeResult:
        plan = self.wizard.plan
        yield Header()
        with VerticalScroll(id="wizard-body"):
            yield Static(Text("Step 3 of 4 · Decision flow: why this preset", style="bold"),
                         classes="step-title")
            flow = Static(flow_text(plan), id="flow", classes="panel")
            flow.border_title = "size × imbalance → risk → preset"
            yield flow
            yield Static(result_text(plan), id="result")
            reasons = Static(reasons_text(plan), id="reasons", classes="panel")
            reasons.border_title = "why"
            yield reasons
            if self.wizard.user_config is not None:
                yield Static(Text("Your --preset / flags are used instead of this plan; the next "
                                  "screen shows them.", style="yellow"))
        # outside the scroll: at 80x24 the flow fills the screen, and the way on must stay in view
        with Horizontal(classes="buttons", id="step-buttons"):
            yield Button("Edit config (enter)", variant="primary", id="next", compact=True)
            yield Button("Back (esc)", id="back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run: decision flow"
        self.query_one("#next", Button).focus()

    @on(Button.Pressed, "#next")
    def action_next(self) -> None:
        from mammo_tui.tui.configure import ConfigScreen

        self.app.push_screen(ConfigScreen(self.wizard))
