"""What a run records and writes: each epoch's outcome, the config changes and which config trained
which epochs (saved in last.pt under history, changes and segments; summary.json is made from it);
the checkpoints' common fields; the held-out test side; and where it all goes (RunOutput).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from mammo_tui.config import TrainConfig
from mammo_tui.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mammo_tui.engine.held_out import evaluate_held_out
from mammo_tui.engine.policies import Policy
from mammo_tui.engine.run_record import config_history, launch_segment, write_config_toml
from mammo_tui.errors import MammoError
from mammo_tui.events import Broadcast, CheckpointSaved, Event, EventSink, RunFailed
from mammo_tui.labels import CLASS_NAMES
from mammo_tui.preprocessing import Preprocessing
from mammo_tui.rundir import CHECKPOINT_DIR, SUMMARY_FILE, write_json
from mammo_tui.runlog import EVENTS_FILE, RunLogWriter


class Record(Policy):
    """A segment starts at launch, at each config change and at each restart (a fix applied:
    weights rolled back, warmup and LR schedule start over)."""

    TYPES = {"history": list, "changes": list, "segments": list}

    def __init__(self, cfg: TrainConfig, origin: str) -> None:
        self.origin = origin
        self.history: list[dict[str, Any]] = []  # per epoch: epoch, status, score, metrics, losses
        self.changes: list[dict[str, Any]] = []
        self.segments: list[dict[str, Any]] = [launch_segment(cfg, origin)]

    @property
    def segment_start(self) -> int:
        """First epoch since the last restart: warmup epochs and the LR schedule count from here."""
        return max(s["first_epoch"] for s in self.segments if s.get("restart"))

    def new_segment(self, after_epoch: int, cfg: TrainConfig, reason: str, restart: bool) -> None:
        self.segments.append({"first_epoch": after_epoch + 1, "config": cfg.to_dict(), "reason": reason,
                              "restart": restart})

    def add_change(self, epoch: int, changes: dict[str, tuple[Any, Any]], reason: str) -> dict[str, Any]:
        change = {"epoch": epoch, "changes": {k: [a, b] for k, (a, b) in changes.items()}, "reason": reason}
        self.changes.append(change)
        return change

    def entry(self, epoch: int | None) -> dict[str, Any] | None:
        return next((h for h in self.history if h["epoch"] == epoch), None)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "changes": self.changes, "segments": self.segments}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        super().load_state_dict(state, source)
        self.history = list(state.get("history") or [])
        self.changes = list(state.get("changes") or [])
        self.segments = list(state.get("segments") or [launch_segment(state["config"], self.origin)])

    def summary(self, status: str, interrupted: bool, error: str, *, run_name: str, best_epoch: int | None,
                best_healthy_epoch: int | None, cfg: TrainConfig, setup: Any, device: str, started: float,
                test_metrics: dict[str, Any] | None) -> dict[str, Any]:
        """summary.json's content."""
        best = self.entry(best_epoch)
        last = self.history[-1] if self.history else None
        epochs_completed = last["epoch"] if last else 0
        return {
            "run_name": run_name,
            "status": status,
            "interrupted": interrupted,
            "error": error,
            "best_epoch": best_epoch,
            "best_status": best["status"] if best else None,
            "best_metrics": best["metrics"] if best else {},
            "best_healthy_epoch": best_healthy_epoch,
            "last_status": last["status"] if last else None,
            "last_metrics": last["metrics"] if last else {},
            "epochs_completed": epochs_completed,
            "epochs": cfg.epochs,
            "history": [{k: h[k] for k in ("epoch", "status", "score", "train_loss", "val_loss")} for h in self.history],
            "collapse_events": [{"epoch": h["epoch"], "status": h["status"]} for h in self.history
                                if h["status"] != "healthy"],
            "changes": self.changes,
            "config_history": config_history(self.segments, epochs_completed),
            "preset": setup.preset,
            "origin": setup.origin,
            "parent_run": setup.parent_run,
            "config": cfg.to_dict(),
            "device": device,
            "started": started,
            "finished": time.time() if status not in ("running",) else None,
            # the official test side, touched once by the best checkpoint (None: the set has none)
            "test_metrics": test_metrics,
        }


def checkpoint_payload(model: torch.nn.Module, epoch: int, cfg: TrainConfig, metrics: dict[str, Any],
                       status: str) -> dict[str, Any]:
    """What every checkpoint holds (healthy.pt only this; best.pt and last.pt the policies' state too)."""
    return {
        "model": model.state_dict(),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "arch": cfg.arch,
        "class_names": list(CLASS_NAMES),
        **Preprocessing.of(cfg).checkpoint_fields(),  # eval / predict preprocess exactly as training did
        "metrics": metrics,
        "status": status,
    }


def held_out(model: torch.nn.Module, best: Path, data: Any, device: torch.device,
             batch_size: int) -> dict[str, Any]:
    """The official test side's metrics through the best checkpoint (`best`)."""
    model = model.module if hasattr(model, "module") else model
    load_weights(model, load_checkpoint(best)["model"], best)
    return evaluate_held_out(model, data.test_images, data.test_labels, data.test_groups, device, batch_size)


class _Silent:
    """The event sink and log writer of ranks other than 0."""

    sinks: list = []

    def __call__(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class RunOutput:
    """Where a run speaks and writes: its events to the run log (events.jsonl), the screen and the
    trackers; its checkpoints, summary.json and config.toml. Only rank 0 writes and speaks; the
    other ranks train silently."""

    def __init__(self, setup: Any, sink: EventSink, is_main: bool) -> None:
        self.run_dir, self.is_main = setup.run_dir, is_main
        self.writer = RunLogWriter(self.run_dir / EVENTS_FILE) if is_main else _Silent()
        if getattr(self.writer, "repaired", ""):  # a torn last line cut off: said at start
            setup.notes.append(self.writer.repaired)
        self.emit = Broadcast(self.writer, sink) if is_main else _Silent()
        if is_main and setup.track:  # after the run log and the screen; a failing tracker stops alone
            from mammo_tui.tracking.sinks import open_trackers

            self.emit.sinks += open_trackers(setup.track, log=self.writer, screen=sink)

    def checkpoint(self, kind: str, epoch: int, payload: Callable[[], dict[str, Any]], score: tuple) -> None:
        """checkpoints/<kind>.pt from `payload()` (made on rank 0 only), and CheckpointSaved."""
        if not self.is_main:
            return
        path = self.run_dir / CHECKPOINT_DIR / f"{kind}.pt"
        save_checkpoint(path, payload())
        self.emit(CheckpointSaved(epoch=epoch, kind=kind, path=str(path), score=list(score)))

    def summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        if self.is_main:
            write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def config(self, cfg: TrainConfig, segments: list[dict[str, Any]], reasons: list[str]) -> None:
        if self.is_main:
            write_config_toml(self.run_dir, cfg, segments, reasons)

    def failed(self, event: RunFailed, write_summary: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """RunFailed said and summary.json written (its content returned); the run log closed."""
        summary: dict[str, Any] = {}
        try:
            self.emit(event)
            summary = write_summary()
        except (OSError, MammoError):
            # the run dir itself is what failed (disk full, removed): the sink still hears it
            for other in self.emit.sinks[1:]:  # the screen, and the trackers
                other(event)
        self.writer.close()
        return summary
