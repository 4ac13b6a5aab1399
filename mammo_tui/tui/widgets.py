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
        self.border_title = f"{title}  {legend}"

    def render(self):
        data = [(self.state.series(key), label, colour) for key, label, colour in self.series]
        if not any(xs for (xs, _), _, _ in data):
            return Text("curves appear after the first epoch", style="dim")
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        epochs = max(max(xs) for (xs, _), _, _ in data if xs)
        for (xs, ys), label, colour in data:
            if xs:
                plt.plot(xs, ys, color=colour, marker="braille")
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
    """Concrete config changes from the collapse detector; `a` applies the highlighted one."""

    def show(self, suggestions: list[dict]) -> None:
        keep = self.highlighted
        self.clear_options()
        self.add_options(Option(render.suggestion_prompt(i, s), id=str(i))
                         for i, s in enumerate(suggestions, start=1))
        self.set_class(not suggestions, "-empty")
        self.screen.set_class(bool(suggestions), "-has-suggestions")
        if suggestions:
            self.highlighted = min(keep or 0, len(suggestions) - 1)


class EventLog(RichLog):
    LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}

    def drain(self, state: DashboardState) -> None:
        for line in state.new_log:
            self.write(Text(line.text, style=self.LEVEL_STYLE.get(line.level, "")))
        state.new_log.clear()
