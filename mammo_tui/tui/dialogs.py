"""Small modal screens: yes/no confirmation and the key help."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """y / enter confirms, n / escape cancels (keyboard first; buttons for the mouse)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No", id: str | None = None) -> None:
        super().__init__(id=id)
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="warning", id="yes")
                yield Button(f"{self.no} (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def _key_label(key: str) -> str:
    return ", ".join(k.replace("question_mark", "?").replace("escape", "esc") for k in key.split(","))


def screen_bindings(screen: Screen) -> list[Binding]:
    """The screen's and the app's own bindings that work now (check_action), hidden ones
    included: for the help and the command palette (the Footer shows a subset)."""
    def ours(cls) -> bool:  # not Textual's own (tab, copy, ...): those are standard
        return "BINDINGS" in cls.__dict__ and cls.__module__.startswith("mammo_tui")

    # Own bindings first, then inherited ones (Textual merges them along the MRO), then the app's.
    classes = [c for c in type(screen).__mro__ if ours(c)] + [c for c in type(screen.app).__mro__ if ours(c)]
    out = []
    for source in classes:
        for binding in source.__dict__["BINDINGS"]:
            if isinstance(binding, tuple):
                binding = Binding(*binding)
            action = binding.action.split("(")[0]
            # no description: a fallback that only explains why a key does nothing here
            if binding.description and screen.check_action(action, ()) is not False:
                out.append(binding)
    return out


def bindings_table(screen: Screen) -> Table:
    """One row per key that works on this screen, with what it does."""
    table = Table(box=None, padding=(0, 2), show_header=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    seen: set[str] = set()
    for binding in screen_bindings(screen):
        if binding.key in seen:
            continue
        seen.add(binding.key)
        help_text = getattr(binding, "tooltip", "") or ""
        about = Text(f"  {help_text}", style="dim") if help_text else Text()
        table.add_row(binding.key_display or _key_label(binding.key), Text(binding.description) + about)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.target = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            title = getattr(self.target, "HELP_TITLE", "") or self.target.__class__.__name__
            yield Static(Text(f"Keys: {title}", style="bold"))
            about = getattr(self.target, "HELP_TEXT", "")
            if about:
                yield Static(Text(about, style="dim"), classes="help-about")
            yield Static(bindings_table(self.target))
            yield Static(Text("esc closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
