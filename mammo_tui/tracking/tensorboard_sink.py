"""The TensorBoard tracker: event files under DIR/<run> (a CV's fold: DIR/<cv>/fold-N).

Scalars per epoch (the same keys as MLflow's metrics, step = epoch, wall time = the event's), the
collapse code, and text: the config as a Markdown table, each epoch's collapse status with reasons
and suggestions, config changes, the final status and the report. Each session opens a new event
file; a resumed one purges steps from its first epoch on (an epoch a killed session logged and the
resume trained again), as TensorBoard's purge_step does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammo_tui.config import NOT_TRAINING_KEYS
from mammo_tui.events import (CollapseStatus, ConfigChanged, EpochMetrics, Event, RunFailed, RunFinished,
                              RunStarted, handler_for, handles)
from mammo_tui.tracking.common import (COLLAPSE_CODES, HEADLINE, collapse_markdown, epoch_scalars, finite,
                                       markdown_table, record_tracking, report_text, run_facts, run_label)
from mammo_tui.tracking.spec import TrackSpec, TrackingError

EVENT_FILE_GLOB = "events.out.tfevents.*"


class TensorBoardTracker:
    kind = "tensorboard"

    def __init__(self, spec: TrackSpec, export: bool = False):
        self.spec, self.export = spec, export
        self.root = Path(spec.target).expanduser().absolute()
        self.writer: Any = None
        self.run_dir: Path | None = None
        self.log_dir: Path | None = None
        self.class_names: list[str] = []
        self.last_epoch = 0
        self.artifacts = True  # False: an export replaying a session end that a resume followed
        self.location: Path | None = None  # an export: where the run is now (events say where it ran)

    @property
    def where(self) -> str:
        return str(self.log_dir or self.root)

    def log_dir_for(self, run_dir: str | Path) -> Path:
        return self.root / run_label(run_dir)

    def preflight(self, run_dir: str | Path) -> None:
        """An export refuses a folder that already holds this run's events: TensorBoard would show
        every point twice (live tracking of a resumed run appends, which is what it should do)."""
        log_dir = self.log_dir_for(run_dir)
        if any(log_dir.glob(EVENT_FILE_GLOB)):
            raise TrackingError(f"{log_dir} already holds TensorBoard events of {Path(run_dir).name} (exported or "
                                "tracked before); remove that folder to export again, or pick another --dir")

    def __call__(self, event: Event) -> None:
        handler = handler_for(self, event)
        if handler is not None and (self.writer is not None or isinstance(event, RunStarted)):
            handler(event)

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()

    def _text(self, tag: str, text: str, step: int, time_s: float) -> None:
        self.writer.add_text(tag, text, global_step=step, walltime=time_s)

    def _scalars(self, values: dict[str, float], step: int, time_s: float) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step, walltime=time_s)

    @handles(RunStarted)
    def _on_run_started(self, event: RunStarted) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.close()  # an export replaying a resumed run: one event file per session, as live
        self.run_dir = self.location or Path(event.run_dir).absolute()
        self.class_names = list(event.class_names)
        self.log_dir = self.log_dir_for(self.run_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir),
                                    purge_step=event.start_epoch if event.start_epoch > 1 else None)
        record_tracking(self.run_dir, f"tensorboard:{self.root}", {"log_dir": str(self.log_dir)})
        values = {k: v for k, v in event.config.items() if k not in NOT_TRAINING_KEYS}
        table = markdown_table({**run_facts(event, self.run_dir), **values})
        self._text("config", table, event.start_epoch, event.time)
        self.writer.flush()

    @handles(EpochMetrics)
    def _on_epoch(self, event: EpochMetrics) -> None:
        self.last_epoch = max(self.last_epoch, event.epoch)
        self._scalars(epoch_scalars(event, self.class_names), event.epoch, event.time)

    @handles(CollapseStatus)
    def _on_collapse(self, event: CollapseStatus) -> None:
        self._scalars({"collapse": float(COLLAPSE_CODES.get(event.status, 2))}, event.epoch, event.time)
        self._text("collapse", collapse_markdown(event), event.epoch, event.time)
        self.writer.flush()  # once per epoch: `tensorboard --logdir` shows it while training

    @handles(ConfigChanged)
    def _on_config_changed(self, event: ConfigChanged) -> None:
        changes = ", ".join(f"`{k}` {a!r} -> {b!r}" for k, (a, b) in event.changes.items())
        self._text("config_changes", f"{changes} ({event.reason})", event.epoch, event.time)

    @handles(RunFinished)
    def _on_finished(self, event: RunFinished) -> None:
        step = event.epochs_completed or self.last_epoch
        if event.best_epoch is not None:
            best = {f"best_{k}": event.best_metrics.get(k) for k in HEADLINE}
            self._scalars({k: float(v) for k, v in best.items() if finite(v)}, event.best_epoch, event.time)
        self._text("status", f"**{event.status}**; best epoch {event.best_epoch} "
                             f"({event.epochs_completed} epochs completed)", step, event.time)
        self._end(step, event.time)

    @handles(RunFailed)
    def _on_failed(self, event: RunFailed) -> None:
        step = event.epoch or self.last_epoch
        self._text("status", f"**failed**: {event.error}", step, event.time)
        self._end(step, event.time)

    def _end(self, step: int, time_s: float) -> None:
        if self.artifacts:
            self._text("report", report_text(self.run_dir), step, time_s)
        self.close()

    def finish_incomplete(self) -> None:
        self.close()
