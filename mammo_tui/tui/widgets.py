"""Dashboard panels. Each one renders from the shared DashboardState when the screen refreshes it.

Panels render lazily (`render()` reads the state), so a burst of events costs one repaint, and a
resize re-lays out bars and plots without any event.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget
from textual.widgets import OptionList, RichLog
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from mammo_tui.tui import render
from mammo_tui.tui.state import DashboardState


class StatePanel(Widget):
    """A panel whose content is a pure function of the dashboard state and its own width."""

    DEFAULT_CSS = "StatePanel { height: auto; }"

    def __init__(self, state: DashboardState, *, title: str = "", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        if title:
            self.border_title = title


class ProgressPanel(StatePanel):
    def render(self):
        return render.progress_text(self.state, self.content_size.width or 80)


class CollapseBanner(StatePanel):
    """Healthy green / warning yellow / collapsed red, with the rules that fired."""

    def render(self):
        status, text = render.banner_text(self.state, compact=self.screen.has_class("-short"))
        for name in ("healthy", "warning", "collapsed", "waiting"):
            self.set_class(name == status, f"-{name}")
        return text


class ClassesPanel(StatePanel):
    def render(self):
        return render.classes_table(self.state, self.content_size.width or 40)


class ConfusionPanel(StatePanel):
    def render(self):
        return render.confusion_table(self.state)


class MetricsPanel(StatePanel):
    def render(self):
        return render.metrics_table(self.state)


class FoldsPanel(StatePanel):
    """Cross-validation only: every fold's result and the running mean / std."""

    def render(self):
        return render.folds_table(self.state, self.content_size.width or 48)


class CurvePlot(PlotextPlot):
    """Per-epoch curves; replotted from the state on each repaint (once per epoch at most)."""

    def __init__(self, state: DashboardState, series: list[tuple[str, str, str]], *, title: str,
                 ylim: tuple[float, float] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.series = series  # (state key, legend label, plotext colour)
        self.ylim = ylim
        # The legend lives in the border title: plotext's own legend box hides the curves.
        legend = "  ".join(f"[{colour}]━ {label}[/]" for _, label, colour in series)
        self.base_title = f"{title}  {legend}"
        self.border_title = self.base_title

    def render(self):
        data = [(self.state.series(key), label, colour) for key, label, colour in self.series]
        if not any(xs for (xs, _), _, _ in data):
            return Text("curves appear after the first epoch", style="dim")
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        epochs = max(max(xs) for (xs, _), _, _ in data if xs)
        # one spike (val loss 25.5 among values near 1) would flatten every other point: clip the
        # axis to the rest and say so in the title
        limit = None if self.ylim else render.spike_limit([y for (_, ys), _, _ in data for y in ys])
        self.border_title = self.base_title + (render.clip_note(limit, data) if limit else "")
        for (xs, ys), label, colour in data:
            if xs:
                plt.plot(xs, [min(y, limit) for y in ys] if limit else ys, color=colour, marker="braille")
        plt.xlim(1, max(epochs, 2))
        plt.xticks(_ticks(epochs))
        if self.ylim:
            low = min([self.ylim[0]] + [min(ys) for (xs, ys), _, _ in data if ys])
            low = self.ylim[0] if low > self.ylim[0] - 0.005 else low  # no "-0.00" axis for 0 - ε
            plt.ylim(low, self.ylim[1])
        return super().render()


def _ticks(epochs: int) -> list[int]:
    step = max(1, (epochs + 5) // 6)
    return list(range(1, epochs + 1, step))


class SuggestionList(OptionList):
    """Concrete config changes from the collapse detector; `a` applies the marked ones (space),
    or the highlighted one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marked: set[str] = set()  # change_text of the marked suggestions (stable across updates)
        self.suggestions: list[dict] = []

    def show(self, suggestions: list[dict]) -> None:
        keep = self.highlighted
        self.suggestions = list(suggestions)
        self.marked &= {render.change_text(s) for s in suggestions}
        self.clear_options()
        self.add_options(Option(self._prompt(i, s), id=str(i)) for i, s in enumerate(suggestions, start=1))
        self.set_class(not suggestions, "-empty")
        self.screen.set_class(bool(suggestions), "-has-suggestions")
        if suggestions:
            self.highlighted = min(keep or 0, len(suggestions) - 1)
            if not isinstance(self.screen.focused, OptionList):
                self.focus()  # up / down pick a suggestion without a click first

    def _prompt(self, index: int, s: dict) -> Text:
        mark = Text("✔ ", style="bold green") if render.change_text(s) in self.marked else Text("")
        return mark + render.suggestion_prompt(index, s)

    def toggle_mark(self) -> None:
        if not self.suggestions:
            return
        key = render.change_text(self.suggestions[min(self.highlighted or 0, len(self.suggestions) - 1)])
        self.marked ^= {key}
        self.show(self.suggestions)

    def chosen(self, suggestions: list[dict]) -> list[dict]:
        """The marked suggestions, in list order; else the highlighted one."""
        marked = [s for s in suggestions if render.change_text(s) in self.marked]
        if marked or not suggestions:
            return marked
        return [suggestions[min(self.highlighted or 0, len(suggestions) - 1)]]


class EventLog(RichLog):
    LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}

    def drain(self, state: DashboardState) -> None:
        for line in state.new_log:
            self.write(Text(line.text, style=self.LEVEL_STYLE.get(line.level, "")))
        state.new_log.clear()
