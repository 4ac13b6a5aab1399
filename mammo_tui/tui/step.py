"""WizardStep: the base of the wizard's screens (back and help keys).

Its own module so the steps (wizard.py, fingerprint_view.py, decision.py, configure.py) import it
without importing each other: each step imports only the step after it.
"""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Button

from mammo_tui.tui.dialogs import HelpScreen
from mammo_tui.tui.job import WizardState


class WizardStep(Screen):
    """Common keys of the wizard screens."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, wizard: WizardState) -> None:
        super().__init__()
        self.wizard = wizard

    def on_mount(self) -> None:
        # Focusing the bottom button scrolls a short terminal to the end; start at the top.
        self.call_after_refresh(self._scroll_top)

    def _scroll_top(self) -> None:
        for body in self.query("#wizard-body"):
            body.scroll_home(animate=False)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The first screen has nowhere to go back to: hide the key rather than ignore it.
        if action == "back" and self.app.screen_stack[:2] == [self.app.screen_stack[0], self]:
            return False
        return True

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self))
