"""Trackers as the trainer's sinks, each guarded: a tracker that fails says so once and stops;
training never does. The engine imports this module only when a run tracks somewhere."""

from __future__ import annotations

from typing import Any, Iterable

from mammo_tui.events import RUN_ENDS, Event, EventSink, LogMessage
from mammo_tui.tracking.spec import TrackSpec


def make_tracker(spec: TrackSpec, export: bool = False) -> Any:
    """A tracker for one spec; its library is imported when the first run_started arrives."""
    if spec.kind == "mlflow":
        from mammo_tui.tracking.mlflow_sink import MlflowTracker

        return MlflowTracker(spec, export=export)
    from mammo_tui.tracking.tensorboard_sink import TensorBoardTracker

    return TensorBoardTracker(spec, export=export)


def export_command(run_dir: Any, spec: TrackSpec) -> str:
    option = "--uri" if spec.kind == "mlflow" else "--dir"
    return f"mammo-tui export {run_dir or 'RUN_DIR'} --to {spec.kind} {option} {spec.target}"


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


class Guarded:
    """Calls the tracker; its first exception is said as a warning (into the run log and on the
    screen) and the tracker is dropped. After the run's end event the warning goes to the screen
    only: a line after `finished` in events.jsonl would make `watch` wait for another end."""

    def __init__(self, tracker: Any, log: EventSink, screen: EventSink):
        self.tracker, self.log, self.screen = tracker, log, screen
        self.spec: TrackSpec = tracker.spec
        self.error = ""

    def __call__(self, event: Event) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        try:
            tracker(event)
        except Exception as exc:  # noqa: BLE001 - whatever the library raises, training goes on
            self.tracker, self.error = None, one_line(exc)
            try:
                tracker.close()
            except Exception:  # noqa: BLE001 - it already failed; its error is the one to say
                pass
            epoch = getattr(event, "epoch", None)
            message = LogMessage("warning", f"tracking to {self.spec.text} stopped: {self.error}; training goes on. "
                                 f"Export later with `{export_command(tracker.run_dir, self.spec)}`",
                                 epoch=epoch if isinstance(epoch, int) else None)
            if not isinstance(event, RUN_ENDS):
                self.log(message)
            self.screen(message)


def open_trackers(specs: Iterable[TrackSpec], log: EventSink, screen: EventSink) -> list[Guarded]:
    """The guarded trackers of a run, to put after the run log and the screen in its broadcast."""
    return [Guarded(make_tracker(spec), log=log, screen=screen) for spec in specs]
