"""Typed events emitted by the training engine.

The engine knows nothing about its consumers (the Textual app, the console printer, the JSONL run
log). Every event is a small dataclass with a `type` tag; `to_dict` / `from_dict` round-trip it
through JSON so that `watch` can rebuild exactly the same stream from `events.jsonl`.

Consumers tell events apart by class, never by the `type` string (that is only the JSON tag): a
filter uses `isinstance`, and a consumer with one method per kind of event marks each with
`@handles(EventClass, ...)` and routes an event with `dispatch(self, event)` (or `handler_for`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, TypeVar


@dataclass
class Event:
    type: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type
        return data


@dataclass
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_dir: str
    run_name: str
    config: dict[str, Any]
    class_names: list[str]
    n_train: int
    n_val: int
    train_counts: list[int]
    val_counts: list[int]
    steps_per_epoch: int
    start_epoch: int = 1  # > 1 when resumed
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchProgress(Event):
    """Throttled by the engine to a few per second."""

    type: ClassVar[str] = "batch"
    epoch: int
    batch: int
    n_batches: int
    loss: float
    images_per_s: float
    eta_s: float  # whole run


@dataclass
class EpochMetrics(Event):
    """Validation metrics for one finished epoch (see metrics.compute_metrics for the keys)."""

    type: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    metrics: dict[str, Any]
    lr: float
    trainable: str  # e.g. "head", "head+layer4"
    epoch_time_s: float
    images_per_s: float


@dataclass
class CollapseStatus(Event):
    type: ClassVar[str] = "collapse"
    epoch: int
    status: str  # healthy | warning | collapsed
    reasons: list[str]
    suggestions: list[dict[str, Any]]  # {"key", "value", "reason"}


@dataclass
class CheckpointSaved(Event):
    type: ClassVar[str] = "checkpoint"
    epoch: int
    kind: str  # best | last
    path: str
    score: list[float] = field(default_factory=list)


@dataclass
class ConfigChanged(Event):
    """`--on-collapse recover` or the UI changed the config mid-run."""

    type: ClassVar[str] = "config_changed"
    epoch: int
    changes: dict[str, Any]
    reason: str


@dataclass
class DataProgress(Event):
    """Before RunStarted: checking or preprocessing images (throttled). Not written to the run log."""

    type: ClassVar[str] = "data_progress"
    stage: str  # e.g. "checking images", "preprocessing images"
    done: int
    total: int
    images_per_s: float
    eta_s: float


@dataclass
class LogMessage(Event):
    type: ClassVar[str] = "log"
    level: str  # info | warning | error
    message: str
    epoch: int | None = None


@dataclass
class RunFinished(Event):
    type: ClassVar[str] = "finished"
    status: str  # healthy | warning | collapsed | interrupted
    best_epoch: int | None
    best_metrics: dict[str, Any]
    epochs_completed: int
    interrupted: bool = False
    exit_code: int = 0


@dataclass
class RunFailed(Event):
    type: ClassVar[str] = "failed"
    error: str
    epoch: int | None = None
    batch: int | None = None
    exit_code: int = 1


# -- cross-validation (cv.py): around each fold's own run events -----------------------------------


@dataclass
class FoldStarted(Event):
    type: ClassVar[str] = "fold_started"
    fold: int  # 1-based
    folds: int
    cv_dir: str
    run_dir: str  # the fold's own run directory (cv_dir/fold-N)


@dataclass
class FoldFinished(Event):
    type: ClassVar[str] = "fold_finished"
    fold: int
    folds: int
    status: str  # healthy | warning | collapsed
    best_epoch: int | None
    best_metrics: dict[str, Any]
    kept: bool = False  # finished in an earlier session of this cross-validation; not retrained
    suggestions: list[dict[str, Any]] = field(default_factory=list)  # its last collapse check's


@dataclass
class CVFinished(Event):
    type: ClassVar[str] = "cv_finished"
    cv_dir: str
    summary: dict[str, Any]  # what cv_summary.json holds
    exit_code: int = 0


# -- sweeps (drivers/sweep.py): around each member run's own events ----------------------------------


@dataclass
class SweepRunStarted(Event):
    type: ClassVar[str] = "sweep_run_started"
    index: int  # 1-based position in the sweep's queue (sweep.json "members")
    total: int  # runs planned (search trials included)
    run: str  # the member run's folder name
    config_id: str  # e.g. "focal+lr=0.0003"
    seed: int
    run_dir: str
    sweep_dir: str = ""
    kept: bool = False  # finished in an earlier session of this sweep; not retrained


@dataclass
class SweepRunFinished(Event):
    type: ClassVar[str] = "sweep_run_finished"
    index: int
    total: int
    run: str
    config_id: str
    seed: int
    status: str  # healthy | warning | collapsed | failed | interrupted | pruned (an Optuna trial stopped)
    best_metrics: dict[str, Any]
    kept: bool = False
    best_epoch: int | None = None
    sweep_dir: str = ""


@dataclass
class SweepFinished(Event):
    type: ClassVar[str] = "sweep_finished"
    sweep_dir: str
    exit_code: int
    status: str  # the sweep's: finished | interrupted | failed
    best_config_id: str = ""  # the leaderboard's first configuration ("" when none finished)
    best_status: str = ""  # its status (worst over its seeds)
    headline: dict[str, Any] = field(default_factory=dict)  # its mean kappa_quadratic, bal_acc_adj, ...


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, BatchProgress, EpochMetrics, CollapseStatus, CheckpointSaved,
                ConfigChanged, DataProgress, LogMessage, RunFinished, RunFailed, FoldStarted, FoldFinished,
                CVFinished, SweepRunStarted, SweepRunFinished, SweepFinished)
}

EventSink = Callable[[Event], None]

RUN_ENDS: tuple[type[Event], ...] = (RunFinished, RunFailed)  # a run's last event: `isinstance(e, RUN_ENDS)`


class ProgressMeter:
    """progress(done, total) callbacks -> DataProgress events with rate and ETA, a few per second
    (always the first and the last)."""

    def __init__(self, stage: str, sink: EventSink, interval_s: float = 0.3) -> None:
        self.stage, self.sink, self.interval_s = stage, sink, interval_s
        self.started = self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0 or not self.started:
            self.started = now
        elif done < total and now - self.last < self.interval_s:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        self.sink(DataProgress(stage=self.stage, done=done, total=total, images_per_s=rate,
                               eta_s=(total - done) / rate if rate > 0 else 0.0))


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; unknown keys (from newer versions) are ignored."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


# -- dispatch by class ------------------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])


def handles(*classes: type[Event]) -> Callable[[_F], _F]:
    """Mark a consumer's method as the handler of these event classes (and of their subclasses)."""
    if not classes or not all(isinstance(c, type) and issubclass(c, Event) for c in classes):
        raise TypeError(f"@handles takes Event classes, not {classes!r}")

    def mark(method: _F) -> _F:
        method.__handles__ = getattr(method, "__handles__", ()) + classes  # type: ignore[attr-defined]
        return method

    return mark


@functools.cache
def _handler_table(owner: type) -> dict[type[Event], str]:
    """Event class -> name of the @handles method, over the consumer class and its bases (the
    most derived one wins); built once per consumer class."""
    table: dict[type[Event], str] = {}
    for klass in reversed(owner.__mro__):
        for name, value in vars(klass).items():
            for cls in getattr(value, "__handles__", ()):
                table[cls] = name
    return table


def handler_for(consumer: object, event: Event) -> Callable[[Any], Any] | None:
    """The bound @handles method of `consumer` for `event`'s class (the nearest registered class in
    its MRO), or None when the consumer handles no such event."""
    table = _handler_table(type(consumer))
    for cls in type(event).__mro__:
        name = table.get(cls)
        if name is not None:
            return getattr(consumer, name)
    return None


def dispatch(consumer: object, event: Event, default: Any = None) -> Any:
    """Call `consumer`'s @handles method for `event` and return what it returns; an event it has no
    handler for is ignored (returns `default`)."""
    handler = handler_for(consumer, event)
    return default if handler is None else handler(event)


class Broadcast:
    """Fan one event out to several sinks, in order."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = list(sinks)

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)
