"""The `--no-ui` printer: plain lines, one per epoch, plus throttled progress.

On a TTY the progress line is redrawn in place; otherwise (tmux logs, nohup, schedulers) there
are no cursor tricks at all, just an occasional plain progress line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mammo_tui.collapse import format_distribution
from mammo_tui.events import (
    BatchProgress,
    CheckpointSaved,
    CollapseStatus,
    ConfigChanged,
    DataProgress,
    EpochMetrics,
    Event,
    FoldFinished,
    FoldStarted,
    LogMessage,
    RunFailed,
    RunFinished,
    RunStarted,
    dispatch,
    handles,
)
from mammo_tui.labels import CLASS_NAMES

NON_TTY_PROGRESS_EVERY_S = 30.0


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_printer(stage: str, stream: TextIO | None = None):
    """A progress(done, total) callback printing count, rate and ETA (e.g. for `plan`'s scan)."""
    from mammo_tui.events import ProgressMeter

    return ProgressMeter(stage, ConsolePrinter(stream or sys.stderr))


class ConsolePrinter:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._progress_shown = False
        self._last_progress = 0.0

    def _write(self, text: str) -> None:
        # `... | head` or a closed terminal must not kill a training run: the run log has it all.
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.stream = None

    def _line(self, text: str) -> None:
        if self._progress_shown:
            self._write("\r\x1b[2K")
            self._progress_shown = False
        self._write(text + "\n")

    def __call__(self, event: Event) -> None:
        dispatch(self, event)

    @handles(RunStarted)
    def _on_run_started(self, e) -> None:
        cfg = e.config
        counts = " ".join(f"{n} {c}" for n, c in zip(e.class_names, e.train_counts))
        vcounts = " ".join(f"{n} {c}" for n, c in zip(e.class_names, e.val_counts))
        verb = f"resuming at epoch {e.start_epoch}" if e.start_epoch > 1 else "starting"
        self._line(f"run {e.run_name}: {verb} on {e.device}; {e.n_train} train ({counts}) / "
                   f"{e.n_val} val ({vcounts}) images")
        self._line(f"  {cfg['arch']} freeze={cfg['freeze']} warmup={cfg['warmup_epochs']} "
                   f"sampler={cfg['sampler']} class_weights={cfg['class_weights']} loss={cfg['loss']} "
                   f"lr={cfg['lr']:g} batch={cfg['batch_size']} img={cfg['img_size']} epochs={cfg['epochs']}")
        self._line(f"  run directory: {e.run_dir}")

    @handles(BatchProgress)
    def _on_batch(self, e) -> None:
        text = (f"epoch {e.epoch} batch {e.batch}/{e.n_batches} loss {e.loss:.4f} "
                f"{e.images_per_s:.0f} img/s ETA {format_duration(e.eta_s)}")
        if self.tty:
            self._write("\r\x1b[2K" + text)
            self._progress_shown = True
        elif time.monotonic() - self._last_progress >= NON_TTY_PROGRESS_EVERY_S:
            self._last_progress = time.monotonic()
            self._line(text)

    @handles(DataProgress)
    def _on_data_progress(self, e) -> None:
        # first contact with a dataset (decoding every image) must never be silent
        percent = 100 * e.done // max(e.total, 1)
        text = f"{e.stage} {e.done}/{e.total} ({percent}%)"
        if e.done:
            text += f" {e.images_per_s:.1f} img/s ETA {format_duration(e.eta_s)}"
        if self.tty:
            self._write("\r\x1b[2K" + text)
            self._progress_shown = True
            if e.done >= e.total:
                self._line(text)  # keep the finished count on screen
        elif e.done in (0, e.total) or time.monotonic() - self._last_progress >= NON_TTY_PROGRESS_EVERY_S:
            self._last_progress = time.monotonic()
            self._line(text)

    @handles(EpochMetrics)
    def _on_epoch(self, e) -> None:
        m = e.metrics
        recall = " ".join(f"{n} {r:.2f}" for n, r in zip(CLASS_NAMES, m["recall_per_class"]))
        self._line(
            f"epoch {e.epoch}/{e.epochs} [{e.trainable}] train_loss {_fmt(e.train_loss, 4)} "
            f"val_loss {_fmt(e.val_loss, 4)} kappa_q {_fmt(m['kappa_quadratic'])} "
            f"bal_acc_adj {_fmt(m['balanced_accuracy_adjusted'])} auc {_fmt(m.get('auc_macro'))} "
            f"recall {recall} pred {format_distribution(m['prediction_distribution'])} "
            f"{e.epoch_time_s:.1f} s {e.images_per_s:.0f} img/s"
        )

    @handles(CollapseStatus)
    def _on_collapse(self, e) -> None:
        if e.status == "healthy":
            return
        self._line(f"  {e.status.upper()}: " + "; ".join(e.reasons))
        for s in e.suggestions[:3]:
            self._line(f"    suggest --set {s['key']}={s['value']}: {s['reason']}")

    @handles(CheckpointSaved)
    def _on_checkpoint(self, e) -> None:
        if e.kind == "best":
            self._line(f"  new best (epoch {e.epoch}) -> {e.path}")

    @handles(ConfigChanged)
    def _on_config_changed(self, e) -> None:
        changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in e.changes.items())
        self._line(f"  config changed at epoch {e.epoch}: {changes} ({e.reason})")

    @handles(LogMessage)
    def _on_log(self, e) -> None:
        prefix = "" if e.level == "info" else f"{e.level}: "
        self._line(f"  {prefix}{e.message}")

    @handles(RunFinished)
    def _on_finished(self, e) -> None:
        m = e.best_metrics or {}
        if e.interrupted:
            self._line(f"interrupted after {e.epochs_completed} epochs; continue with --resume")
            return
        self._line(f"finished: {e.status}; best epoch {e.best_epoch}: kappa_q {_fmt(m.get('kappa_quadratic'))} "
                   f"bal_acc_adj {_fmt(m.get('balanced_accuracy_adjusted'))} "
                   f"auc {_fmt(m.get('auc_macro'))} pred {format_distribution(m.get('prediction_distribution', []))}")

    @handles(RunFailed)
    def _on_failed(self, e) -> None:
        self._line(f"FAILED: {e.error}")

    @handles(FoldStarted)
    def _on_fold_started(self, e) -> None:
        self._line(f"── fold {e.fold}/{e.folds} ({e.run_dir}) ──")

    @handles(FoldFinished)
    def _on_fold_finished(self, e) -> None:
        if e.kept:
            self._line(f"fold {e.fold}/{e.folds} already finished ({e.status}); kept")
            return
        m = e.best_metrics or {}
        self._line(f"fold {e.fold}/{e.folds}: {e.status}; best epoch {e.best_epoch}: "
                   f"kappa_q {_fmt(m.get('kappa_quadratic'))} "
                   f"bal_acc_adj {_fmt(m.get('balanced_accuracy_adjusted'))}")
