"""What the dashboard knows about a run, folded from engine events (pure: no textual, no torch).

Live training, `watch` on a growing log and replay of a finished log all feed the same events into
`DashboardState.apply`, so the panels are identical whichever way the events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mammo_tui.events import (
    BatchProgress,
    CheckpointSaved,
    CollapseStatus,
    ConfigChanged,
    CVFinished,
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
from mammo_tui.stats import SEVERITY, format_mean_std, mean_std

# Panel names returned by `apply` so the screen refreshes only what changed.
PROGRESS, EPOCH, COLLAPSE, LOG, STATUS, FOLDS = "progress", "epoch", "collapse", "log", "status", "folds"


@dataclass
class LogLine:
    level: str  # info | warning | error
    text: str


@dataclass
class DashboardState:
    run_name: str = ""
    run_dir: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    n_train: int = 0
    n_val: int = 0
    steps_per_epoch: int = 0
    device: str = ""
    epochs_total: int = 0
    batch: BatchProgress | None = None
    epochs: list[EpochMetrics] = field(default_factory=list)
    collapse: CollapseStatus | None = None
    best_epoch: int | None = None
    best_healthy_epoch: int | None = None  # what applying a fix restarts from (healthy.pt)
    finished: RunFinished | None = None
    failed: RunFailed | None = None
    starting: str = ""  # before RunStarted: what the engine is doing (reading data, building the model)
    resumed_at: int | None = None  # the epoch a resumed run went on from
    hint: str = ""  # what the user can do now (set by the screen: e.g. back to the config step)
    log_tail: str = ""  # the last log line: the start-up progress line shows it
    stale: str = ""  # watch: why a run that says "running" looks dead (watchcheck.stale_note)
    new_log: list[LogLine] = field(default_factory=list)  # drained by the log panel
    # cross-validation: the panels above show the current fold; these hold every fold
    cv_dir: str = ""
    folds_total: int = 0
    fold: int = 0  # the current fold, 1-based
    fold_results: dict[int, FoldFinished] = field(default_factory=dict)
    cv_finished: CVFinished | None = None

    # -- folding ---------------------------------------------------------------------------------
    def apply(self, event: Event) -> set[str]:
        """Fold one event in; return the names of the panels it changes."""
        return dispatch(self, event, set())

    @handles(RunStarted)
    def _on_run_started(self, e: RunStarted) -> set[str]:
        # a new run on this dashboard starts over; a resumed one (start_epoch > 1) keeps the epochs
        # before it, even when its directory is spelt another way (relative / absolute)
        if self.run_dir and e.run_dir != self.run_dir and e.start_epoch <= 1:
            self.epochs, self.collapse, self.best_epoch, self.best_healthy_epoch = [], None, None, None
        self.run_name, self.run_dir, self.config = e.run_name, e.run_dir, dict(e.config)
        self.class_names = list(e.class_names) or list(CLASS_NAMES)
        self.n_train, self.n_val, self.steps_per_epoch = e.n_train, e.n_val, e.steps_per_epoch
        self.device = e.device
        self.starting = ""
        self.resumed_at = e.start_epoch if e.start_epoch > 1 else None
        self.epochs_total = int(e.config.get("epochs", 0) or 0)
        # A resumed run replays from start_epoch: drop the epochs it will redo.
        self.epochs = [m for m in self.epochs if m.epoch < e.start_epoch]
        self.batch, self.finished, self.failed = None, None, None
        verb = "resumed at epoch %d" % e.start_epoch if e.start_epoch > 1 else "started"
        self.note("info", f"{e.run_name} {verb}: {e.n_train} train / {e.n_val} val images "
                          f"on {e.device}")
        for note in e.notes:
            self.note("info", note)
        return {PROGRESS, EPOCH, COLLAPSE, LOG, STATUS}

    @handles(BatchProgress)
    def _on_batch(self, e: BatchProgress) -> set[str]:
        self.batch = e
        return {PROGRESS}

    @handles(EpochMetrics)
    def _on_epoch(self, e: EpochMetrics) -> set[str]:
        self.epochs = [m for m in self.epochs if m.epoch < e.epoch] + [e]
        self.epochs_total = e.epochs or self.epochs_total
        m = e.metrics
        self.note("info", f"epoch {e.epoch}/{e.epochs}  loss {fmt(e.train_loss)} / {fmt(e.val_loss)}  "
                          f"κq {fmt(m.get('kappa_quadratic'))}  "
                          f"bal-acc-adj {fmt(m.get('balanced_accuracy_adjusted'))}  {e.trainable}")
        return {PROGRESS, EPOCH, LOG}

    @handles(CollapseStatus)
    def _on_collapse(self, e: CollapseStatus) -> set[str]:
        self.collapse = e
        if e.status != "healthy":
            level = "error" if e.status == "collapsed" else "warning"
            self.note(level, f"epoch {e.epoch}: {e.status}: " + "; ".join(e.reasons))
        return {COLLAPSE, LOG}

    @handles(CheckpointSaved)
    def _on_checkpoint(self, e: CheckpointSaved) -> set[str]:
        if e.kind == "best":
            self.best_epoch = e.epoch
            # the best so far may itself be collapsed: never let that read as good news
            check = self.collapse if self.collapse and self.collapse.epoch == e.epoch else None
            if check is not None and check.status == "collapsed":
                self.note("error", f"epoch {e.epoch}: new best checkpoint, but this epoch is COLLAPSED: "
                                   "the best so far is not a usable model")
            elif check is not None and check.status == "warning":
                self.note("warning", f"epoch {e.epoch}: new best checkpoint (with a collapse WARNING)")
            else:
                self.note("info", f"epoch {e.epoch}: new best checkpoint")
            return {LOG, EPOCH}
        if e.kind == "healthy":
            self.best_healthy_epoch = e.epoch
        return set()  # "last" is saved every epoch; not news

    @handles(ConfigChanged)
    def _on_config_changed(self, e: ConfigChanged) -> set[str]:
        # the engine reports each change as [old, new]
        self.config.update({key: new for key, (_old, new) in e.changes.items()})
        changes = ", ".join(f"{k}={new}" for k, (_old, new) in e.changes.items())
        self.note("warning", f"epoch {e.epoch}: config changed ({changes}): {e.reason}")
        return {LOG, STATUS}

    @handles(LogMessage)
    def _on_log(self, e: LogMessage) -> set[str]:
        prefix = f"epoch {e.epoch}: " if e.epoch is not None else ""
        self.note(e.level, prefix + e.message)
        return {LOG}

    @handles(RunFinished)
    def _on_finished(self, e: RunFinished) -> set[str]:
        self.finished = e
        self.best_epoch = e.best_epoch if e.best_epoch is not None else self.best_epoch
        what = "interrupted (resumable)" if e.interrupted else f"finished: {e.status}"
        best = f", best epoch {e.best_epoch}" if e.best_epoch else ""
        if not self.is_cv:  # before the outcome, so the log's last line says how the run ended
            self._note_next(self.run_dir, "interrupted" if e.interrupted else e.status, e.epochs_completed)
        self.note("warning" if e.interrupted else "info",
                  f"run {what} after {e.epochs_completed} epochs{best}")
        return {PROGRESS, LOG, STATUS, EPOCH}

    def _note_next(self, run_dir: str, status: str, epochs: int, is_cv: bool = False) -> None:
        """Where the run is and the commands to paste next (the same lines the shell gets on exit)."""
        from mammo_tui.app.nextsteps import dashboard_lines

        if not run_dir:
            return
        for line in dashboard_lines(run_dir, status, is_cv=is_cv, epochs_completed=epochs):
            self.note("info", line)

    @handles(RunFailed)
    def _on_failed(self, e: RunFailed) -> set[str]:
        self.failed = e
        self.starting = ""
        if not self.is_cv:
            self._note_next(self.run_dir, "failed", len(self.epochs))
        self.note("error", f"run failed: {e.error}")
        return {PROGRESS, LOG, STATUS}

    @handles(FoldStarted)
    def _on_fold_started(self, e: FoldStarted) -> set[str]:
        if e.cv_dir != self.cv_dir:  # another cross-validation on this dashboard (apply a fix)
            self.fold_results, self.cv_finished = {}, None
        self.cv_dir, self.folds_total, self.fold = e.cv_dir, e.folds, e.fold
        # the fold panels start empty: a fold that is kept, not retrained, sends no run events
        self.epochs, self.collapse, self.best_epoch = [], None, None
        self.batch, self.finished, self.failed = None, None, None
        self.note("info", f"── fold {e.fold}/{e.folds} ──")
        return {PROGRESS, EPOCH, COLLAPSE, LOG, STATUS, FOLDS}

    @handles(FoldFinished)
    def _on_fold_finished(self, e: FoldFinished) -> set[str]:
        self.fold_results[e.fold] = e
        kappa = fmt(e.best_metrics.get("kappa_quadratic"))
        how = "kept from an earlier session" if e.kept else f"best epoch {e.best_epoch}, κq {kappa}"
        self.note("error" if e.status == "collapsed" else "info",
                  f"fold {e.fold}/{e.folds}: {e.status} ({how})")
        return {FOLDS, LOG, STATUS}

    @handles(CVFinished)
    def _on_cv_finished(self, e: CVFinished) -> set[str]:
        self.cv_finished = e
        agg = e.summary.get("aggregate", {})
        self._note_next(e.cv_dir, e.summary.get("status", "finished"), int(e.summary.get("folds") or 0),
                        is_cv=True)
        self.note("info", f"cross-validation finished: {e.summary.get('status', '')}; "
                          f"κq {fmt_pm(agg.get('kappa_quadratic'))}, "
                          f"bal-acc-adj {fmt_pm(agg.get('balanced_accuracy_adjusted'))} over {e.summary.get('folds')} folds")
        collapsed = e.summary.get("collapsed_folds") or []
        if collapsed:
            self.note("error", f"collapsed folds: {', '.join(map(str, collapsed))}: this configuration "
                               "is not reliable on this data")
        return {FOLDS, LOG, STATUS, PROGRESS, COLLAPSE}

    def note(self, level: str, text: str) -> None:
        """A line for the event log (also used by the screen for its own messages)."""
        self.new_log.append(LogLine(level, text))
        self.log_tail = text


    # -- views -----------------------------------------------------------------------------------
    @property
    def last(self) -> EpochMetrics | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def done(self) -> bool:
        return self.finished is not None or self.failed is not None

    @property
    def is_cv(self) -> bool:
        return self.folds_total > 0

    @property
    def cv_stopped(self) -> bool:
        """The cross-validation ended without a summary (a fold interrupted or failed)."""
        return self.is_cv and self.cv_finished is None and (
            self.failed is not None or (self.finished is not None and self.finished.interrupted))

    def fold_mean_std(self, key: str) -> dict[str, Any]:
        """stats.mean_std of a best-epoch metric over the folds finished so far (the live summary row)."""
        return mean_std([r.best_metrics.get(key) for r in self.fold_results.values()])

    @property
    def status_word(self) -> str:
        if self.cv_finished:
            return "finished"
        if self.failed:
            return "failed"
        if self.finished:
            return "interrupted" if self.finished.interrupted else "finished"
        if self.stale:
            return "stale?"
        return "running" if self.run_name else "waiting"

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) for a curve; `train_loss`/`val_loss` or a metrics key; None skipped."""
        xs, ys = [], []
        for m in self.epochs:
            value = getattr(m, key) if key in ("train_loss", "val_loss") else m.metrics.get(key)
            if isinstance(value, (int, float)) and value == value:  # drop None / NaN
                xs.append(m.epoch)
                ys.append(float(value))
        return xs, ys

    @property
    def best_metrics(self) -> dict[str, Any]:
        best = next((m for m in self.epochs if m.epoch == self.best_epoch), None)
        if best is not None:
            return best.metrics
        return dict(self.finished.best_metrics) if self.finished else {}

    def suggestions(self) -> list[dict[str, Any]]:
        """The current collapse check's; once a CV has finished, its worst fold's (the fix a new
        CV should try), else the last fold's. A suggestion the run's config already holds (it was
        applied, by the user or by on_collapse = recover) is not listed."""
        worst = self.suggesting_fold
        if worst is not None:
            return list(worst.suggestions)
        listed = list(self.collapse.suggestions) if self.collapse else []
        return [s for s in listed if not self.holds(s)]

    def holds(self, suggestion: dict[str, Any]) -> bool:
        from mammo_tui.collapse import suggestion_changes

        changes = suggestion_changes(suggestion)
        return bool(self.config) and all(self.config.get(k) == v for k, v in changes.items())

    def restart_point(self) -> str:
        """What applying a fix restarts from: the engine's rule (trainer.Trainer._restart), said
        the same way in the dialog, the help and the log."""
        if self.best_healthy_epoch is not None:
            return f"its best healthy checkpoint (epoch {self.best_healthy_epoch})"
        return "the initial weights (no epoch was healthy)"

    @property
    def suggesting_fold(self) -> FoldFinished | None:
        """After a CV: the worst fold that has suggestions (ties: the first), if any."""
        if not self.cv_finished:
            return None
        flagged = [r for r in self.fold_results.values() if r.suggestions]
        return max(flagged, key=lambda r: (SEVERITY.get(r.status, -1), -r.fold)) if flagged else None


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"
    return str(value)


def fmt_pm(stat: dict[str, Any] | None) -> str:
    """A cv_summary mean ± std entry ("–" when there is none, like fmt)."""
    return format_mean_std(stat, missing="–")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
