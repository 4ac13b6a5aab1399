"""The training engine: one plain loop, five collapse defenses, typed events out.

It knows nothing about its consumers. Everything it has to say goes through `sink(event)`;
`events.jsonl` in the run directory receives the same stream, so `watch` can replay it.

The loop is here; the policies own their state (policies.py: best checkpoints, early stopping,
recovery, cRT; summary.py: the run's record), the epoch's steps are plain functions (steps.py),
the data and its loaders are in loaders.py, the loss/optimizer/schedule in optimisation.py.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any

import numpy as np
import torch

from mammo_tui import config as config_mod
from mammo_tui.collapse import DRIFT_WINDOW, apply_suggestion, detect_collapse, suggest
from mammo_tui.config import TrainConfig
from mammo_tui.app.requests import RunResult, TrainRequest
from mammo_tui.engine import distributed
from mammo_tui.engine.checkpoint import load_checkpoint, load_weights
from mammo_tui.engine.distributed import DistInfo
from mammo_tui.engine.held_out import describe_held_out
from mammo_tui.engine.loaders import FeatureCache, load_splits, steps_per_epoch, train_loader, val_loader
from mammo_tui.engine.models import Classifier, apply_train_mode, backbone_frozen, set_trainable
from mammo_tui.engine.optimisation import SCHEDULE_KEYS, Optimisation
from mammo_tui.engine.policies import (BestCheckpoints, ClassifierRetraining, EarlyStopping,
                                       Recovery, check_state, training_stage)
from mammo_tui.engine.run_setup import RunSetup
from mammo_tui.engine.steps import NonFiniteLoss, TrainForward, evaluate, train_one_epoch
from mammo_tui.engine.summary import Record, RunOutput, checkpoint_payload, held_out
from mammo_tui.errors import ConfigError, MammoError, WeightsUnavailableError
from mammo_tui.exitcodes import EXIT_COLLAPSED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from mammo_tui.events import (CollapseStatus, ConfigChanged, EpochMetrics, Event, EventSink, LogMessage, RunFailed,
                              RunFinished, RunStarted)
from mammo_tui.labels import CLASS_NAMES, NUM_CLASSES
from mammo_tui.metrics import selection_score
from mammo_tui.rundir import CHECKPOINT_DIR



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """The configured device; under torchrun with CUDA, this process's GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    return torch.device("cuda", dist.local_rank) if dist and device.type == "cuda" else device


# ---------------------------------------------------------------------------------------------
# the loop


class Trainer:
    """One run: the loop, its checkpoints and its decisions. `run()` reads as the steps it takes."""

    def __init__(self, setup: RunSetup, sink: EventSink, cancel: threading.Event):
        self.setup = setup
        self.cfg = setup.config
        self.run_dir = setup.run_dir
        self.cancel = cancel
        self.test_metrics: dict[str, Any] | None = None  # the official test side, after the last epoch
        self.dist: DistInfo | None = setup.dist
        self.is_main = self.dist is None or self.dist.is_main
        self.world = self.dist.world if self.dist else 1
        self.out = RunOutput(setup, sink, self.is_main)  # only rank 0 writes the run directory and speaks
        self.writer, self.emit = self.out.writer, self.out.emit
        self.sink = sink  # progress before RunStarted goes to the screen only, not the run log
        self.device = resolve_device(self.cfg.device, self.dist)
        self.forward = TrainForward(self.dist, self.device)  # the model, or its DDP wrapper under torchrun
        self.feature_cache = FeatureCache()
        # The policies, each owning its state in last.pt (the optimisation joins them in build()).
        self.record = Record(self.cfg, setup.origin)  # the epochs, the changes, which config trained which
        self.best = BestCheckpoints()
        self.early_stop = EarlyStopping()
        self.recovery = Recovery()
        self.crt = ClassifierRetraining()
        self.policies = (self.record, self.best, self.recovery, self.crt, self.early_stop)
        self.start_epoch = 1
        self.started = time.time()
        self.pending: list[Event] = []  # said before run_started could be emitted
        self.recent: list[dict[str, Any]] = []  # metrics since the last restart (the drift rules)
        self.suggestions: list[dict[str, Any]] = []  # the last collapse check's (what recover applies)

    # the policies' state, under the names it had on the Trainer
    history = property(lambda self: self.record.history)
    segments = property(lambda self: self.record.segments)
    segment_start = property(lambda self: self.record.segment_start, doc="First epoch since the last restart.")
    best_epoch = property(lambda self: self.best.epoch)
    best_healthy_state = property(lambda self: self.best.healthy_state,
                                  lambda self, state: setattr(self.best, "healthy_state", state))

    def load_data(self) -> None:
        self.data, notes = load_splits(self.setup, self.cfg, self.sink, self.is_main, self.world)
        self.pending += notes

    def build(self) -> None:
        self.model: Classifier = self.setup.model.to(self.device)
        self.pretrained_used = self.setup.pretrained_used
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.optimisation = Optimisation(self.model, self.data.train_labels, self.device)
        self.optimisation.build(self.cfg, self.segment_start)

    # -- checkpoints --------------------------------------------------------------------------
    def _payload(self, epoch: int, metrics: dict[str, Any], status: str, light: bool = False) -> dict[str, Any]:
        payload = checkpoint_payload(self.model, epoch, self.cfg, metrics, status)
        if not light:  # healthy.pt: only what a restart needs (a fresh optimizer follows it)
            for part in (self.optimisation, *self.policies):
                payload.update(part.state_dict())
        return payload

    def _save(self, kind: str, epoch: int, metrics: dict[str, Any], status: str, score: tuple) -> None:
        self.out.checkpoint(kind, epoch, lambda: self._payload(epoch, metrics, status, light=kind == "healthy"), score)

    def restore(self) -> None:
        """Continue a run from last.pt; after a fix was applied (request.restart), restart instead:
        the best healthy weights (or the initial ones), fresh optimizer, warmup and schedule."""
        for stale in (self.run_dir / CHECKPOINT_DIR).glob(".*.tmp"):  # a kill -9 during a save
            stale.unlink(missing_ok=True)
        last = self.run_dir / CHECKPOINT_DIR / "last.pt"
        if not last.is_file():
            return
        state = load_checkpoint(last)  # a mammo-tui checkpoint, or a CheckpointError naming the file
        check_state((self.optimisation, *self.policies), state, last)  # before anything is restored
        for policy in self.policies:
            policy.load_state_dict(state, last)
        epoch = int(state["epoch"])
        self.start_epoch = epoch + 1
        self.best.load_healthy(self.model, self.run_dir / CHECKPOINT_DIR / "healthy.pt")  # fits? said now
        if self.setup.request.restart:
            self._restart(epoch, self.cfg, "fix applied in the dashboard", announce=False)
        else:
            load_weights(self.model, state["model"], last)
            if self.crt.active(self.cfg, epoch):
                self.optimisation.crt(self.cfg)  # the saved optimizer state is the cRT head's
            self.optimisation.load_state_dict(state, last)
            if self.setup.changed:
                self.record.new_segment(epoch, self.cfg, "changed on resume", restart=False)
                if SCHEDULE_KEYS & set(self.setup.changed):
                    self.optimisation.change_schedule(self.cfg, epoch, self.setup.changed)
        if self.setup.changed:
            change = self.record.add_change(epoch, self.setup.changed, self.segments[-1]["reason"])
            self.pending.append(ConfigChanged(epoch=epoch, changes=change["changes"], reason=change["reason"]))
            self._write_config()
        self.recent = [h["metrics"] for h in self.history if h["epoch"] >= self.segment_start][-DRIFT_WINDOW:]

    def _restart(self, after_epoch: int, config: TrainConfig, why: str, announce: bool = True) -> str:
        """Roll back to the best healthy weights (never a collapsed or warning epoch), or to the
        initial weights when no epoch was healthy; train on from the next epoch with `config`, a
        fresh optimizer, warmup counted again and a cosine schedule over the remaining epochs."""
        old, self.cfg = self.cfg, config
        rollback = self.best.rollback(self.model, self.initial_state)
        reason = f"{why}; restarted from {rollback}"
        self.record.new_segment(after_epoch, self.cfg, reason, restart=True)
        self.optimisation.build(self.cfg, self.segment_start)
        self.recent = []
        self.feature_cache.clear()
        self.pending.append(LogMessage("info", f"restarting at epoch {after_epoch + 1} from {rollback} with a "
                                       "fresh optimizer; warmup and the LR schedule start over"))
        if announce:
            change = self.record.add_change(after_epoch, config_mod.diff(old, config), reason)
            self.emit(ConfigChanged(epoch=after_epoch, changes=change["changes"], reason=reason))
            self._write_config()
        return rollback

    def _write_config(self) -> None:
        self.out.config(self.cfg, self.segments, self.setup.plan_reasons)

    # -- main --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.load_data()
        self.build()
        self.restore()
        progress = self._announce()
        try:
            interrupted = self._train_epochs(progress)
        except NonFiniteLoss as exc:
            return self._fail_non_finite(exc)
        return self._finish(interrupted)

    def _announce(self) -> dict[str, Any]:
        """RunStarted and what was noted before it; the progress counters for the ETA."""
        cfg, data = self.cfg, self.data
        steps = steps_per_epoch(len(data.train_labels), self.world, cfg)
        notes = self.setup.facts + self.setup.notes
        self.emit(RunStarted(
            run_dir=str(self.run_dir), run_name=self.run_dir.name, config=cfg.to_dict(),
            class_names=list(CLASS_NAMES), n_train=len(data.train_labels), n_val=len(data.val_labels),
            train_counts=data.train_counts, val_counts=np.bincount(data.val_labels, minlength=NUM_CLASSES).tolist(),
            steps_per_epoch=steps, start_epoch=self.start_epoch, device=str(self.device), notes=notes))
        for note in self.setup.facts:
            self.emit(LogMessage("info", note))
        for note in self.setup.notes:
            self.emit(LogMessage("warning", note))
        self._flush_pending()
        return {"batches_done": 0, "batches_total": steps * (cfg.epochs - self.start_epoch + 1), "batch_time": 0.0}

    def _flush_pending(self) -> None:
        for event in self.pending:
            self.emit(event)
        self.pending = []

    def _train_epochs(self, progress: dict[str, Any]) -> bool:
        """Epoch after epoch until the last, an early stop or a stop on collapse; True when cancelled."""
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            self._prepare_epoch(epoch)
            outcome = self._train_and_validate(epoch, progress)
            if outcome is None:
                return True
            metrics, result, score = outcome
            self._keep_checkpoints(epoch, metrics, result.status, score)
            action = self._after_epoch(epoch, result)
            if action == "restarted":
                self.early_stop.reset()
            elif action == "stop":
                break
        return False

    def stage_for(self, epoch: int) -> str:
        return training_stage(self.cfg, epoch, self.segment_start, self.pretrained_used)

    def _prepare_epoch(self, epoch: int) -> None:
        """cRT start, the trainable stage, and the cached backbone features when nothing below the head trains."""
        if self.crt.starts(self.cfg, epoch):  # best backbone, fresh head, plain CE, class-balanced batches
            self.emit(self.crt.start(self.model, self.optimisation, self.cfg, epoch, self.best.epoch,
                                     self.run_dir / CHECKPOINT_DIR / "best.pt", distributed=bool(self.dist)))
            self.feature_cache.clear()
        previous_stage = self.stage_for(epoch - 1) if epoch > self.segment_start else None
        stage = self.stage_for(epoch)
        self.trainable = set_trainable(self.model, stage)
        if previous_stage == "head" and stage != "head":
            self.emit(LogMessage("info", f"warmup over: unfreezing {self.trainable}", epoch=epoch))
        self.use_cache = self.cfg.frozen_feature_cache and not self.cfg.augment and backbone_frozen(self.model)
        if self.use_cache and (took := self.feature_cache.update(self.model, stage, self.data, self.device,
                                                                  self.optimisation.autocast)) is not None:
            self.emit(LogMessage("info", f"backbone frozen and no augmentation: features computed once "
                                 f"({took:.1f} s); epochs train the head only", epoch=epoch))

    def _train_and_validate(self, epoch: int, progress: dict[str, Any]):
        """One epoch of training, then validation and the collapse check; None when cancelled."""
        seed_everything(self.cfg.seed * 1000 + epoch)
        t0 = time.perf_counter()
        train_loss = self.train_epoch(epoch, self.feature_cache.train if self.use_cache else None, progress)
        if train_loss is None:
            return None
        train_time = time.perf_counter() - t0
        metrics, val_loss = self.evaluate(self.feature_cache.val if self.use_cache else None)
        epoch_time = time.perf_counter() - t0
        lr = self.optimisation.lr
        score = selection_score(metrics)
        self.optimisation.step_schedule(self.cfg, score)
        self.emit(EpochMetrics(epoch=epoch, epochs=self.cfg.epochs, train_loss=train_loss, val_loss=val_loss,
                               metrics=metrics, lr=lr, trainable=self.trainable, epoch_time_s=epoch_time,
                               images_per_s=progress["images"] / max(train_time, 1e-9)))
        result = detect_collapse(metrics, self.recent, self.cfg)
        self.suggestions = [s.to_dict() for s in suggest(self.cfg, result, metrics, self.data.train_counts)]
        self.emit(CollapseStatus(epoch=epoch, status=result.status, reasons=result.reasons,
                                 suggestions=self.suggestions))
        self.recent = (self.recent + [metrics])[-DRIFT_WINDOW:]
        self.history.append({"epoch": epoch, "status": result.status, "score": list(score), "metrics": metrics,
                             "train_loss": train_loss, "val_loss": val_loss})
        return metrics, result, score

    def train_epoch(self, epoch: int, features: torch.Tensor | None, progress: dict) -> float | None:
        """The mean training loss of the epoch; None when cancelled."""
        apply_train_mode(self.model)
        forward = self.forward(self.model, features)
        loader = train_loader(self.cfg, self.data, epoch, features, self.crt.active(self.cfg, epoch), self.dist,
                              self.device)
        return train_one_epoch(self.model, forward, self.optimisation, loader, self.cfg, epoch=epoch,
                               cancel=self.cancel, dist=self.dist, progress=progress, emit=self.emit)

    def evaluate(self, features: torch.Tensor | None) -> tuple[dict[str, Any], float]:
        return evaluate(self.model, features, lambda: val_loader(self.cfg, self.data, features, self.device),
                        self.optimisation, self.dist)

    def _keep_checkpoints(self, epoch: int, metrics: dict[str, Any], status: str, score: tuple) -> bool:
        """best.pt (by selection score), healthy.pt (the best healthy epoch), last.pt (with the
        early-stop count after this epoch), summary.json. Returns whether the selection score improved."""
        improved = self.best.improve(epoch, score)
        self.early_stop.step(improved)
        if improved:
            self._save("best", epoch, metrics, status, score)
        if self.best.improve_healthy(epoch, status, score, self.model):
            self._save("healthy", epoch, metrics, status, score)
        self._save("last", epoch, metrics, status, score)
        self._write_summary("running", interrupted=False)
        return improved

    def _after_epoch(self, epoch: int, result) -> str:
        """"continue", "restarted" (a collapse recovered) or "stop" (on_collapse = stop, early stop)."""
        if result.status == "collapsed" and epoch < self.cfg.epochs:
            if self.cfg.on_collapse == "stop":
                self.emit(LogMessage("error", f"collapsed at epoch {epoch}; stopping (on_collapse = stop)",
                                     epoch=epoch))
                return "stop"
            if self.cfg.on_collapse == "recover" and self._recover(epoch, result.reasons):
                return "restarted"
        if self.early_stop.should_stop(self.cfg.early_stop_patience):
            self.emit(LogMessage("info", f"early stop: no better selection score for {self.early_stop.stale} "
                                 f"epochs (best epoch {self.best.epoch})", epoch=epoch))
            return "stop"
        return "continue"

    def _recover(self, epoch: int, reasons: list[str]) -> bool:
        """on_collapse = recover: apply the top suggestion and restart (see _restart)."""
        if not self.recovery.take(self.suggestions):
            self.emit(LogMessage("warning", "collapsed again, but no recovery left; continuing", epoch=epoch))
            return False
        top = self.suggestions[0]
        self._restart(epoch, apply_suggestion(self.cfg, top), f"collapse ({'; '.join(reasons)}): {top['reason']}")
        self._flush_pending()  # _restart queues its log line (at resume it comes before RunStarted)
        return True

    # -- the end -----------------------------------------------------------------------------
    def _fail_non_finite(self, exc: NonFiniteLoss) -> RunResult:
        return self._fail(f"non-finite loss ({exc.value}) at epoch {exc.epoch}, batch {exc.batch}. "
                          f"The last good checkpoint is kept. Lower the learning rate (lr = {self.cfg.lr:g}) "
                          "or enable gradient clipping (grad_clip).", exc.epoch, exc.batch, EXIT_FAILED)

    def _fail(self, message: str, epoch: int | None, batch: int | None, code: int) -> RunResult:
        event = RunFailed(error=message, epoch=epoch, batch=batch, exit_code=code)
        summary = self.out.failed(event, lambda: self._write_summary("failed", interrupted=False, error=message))
        return RunResult(self.run_dir, "failed", code, summary)

    def _finish(self, interrupted: bool) -> RunResult:
        if interrupted:
            status, code = "interrupted", EXIT_INTERRUPTED
        else:
            best = self.record.entry(self.best.epoch)
            # The deliverable is the best checkpoint: the run's status is that epoch's status.
            status = best["status"] if best else "healthy"
            code = EXIT_COLLAPSED if status == "collapsed" else EXIT_OK
            if self.history and self.history[-1]["status"] == "collapsed" and status != "collapsed":
                self.emit(LogMessage("warning", f"the last epoch collapsed; best.pt (epoch {self.best.epoch}) "
                                     "is the checkpoint to use"))
        if not interrupted and self.is_main and len(self.data.test_labels) and self.best.epoch is not None:
            self.test_metrics = held_out(self.model, self.run_dir / CHECKPOINT_DIR / "best.pt", self.data,
                                         self.device, max(self.cfg.batch_size, 64))  # once, by the best checkpoint
            self.emit(LogMessage("info", describe_held_out(self.test_metrics, self.best.epoch)))
        summary = self._write_summary(status, interrupted=interrupted)
        self.emit(RunFinished(status=status, best_epoch=self.best.epoch, best_metrics=summary["best_metrics"],
                              epochs_completed=summary["epochs_completed"], interrupted=interrupted, exit_code=code))
        self.writer.close()
        return RunResult(self.run_dir, status, code, summary)

    def _write_summary(self, status: str, interrupted: bool, error: str = "") -> dict[str, Any]:
        return self.out.summary(self.record.summary(
            status, interrupted, error, run_name=self.run_dir.name, best_epoch=self.best.epoch,
            best_healthy_epoch=self.best.healthy_epoch, cfg=self.cfg, setup=self.setup, device=str(self.device),
            started=self.started, test_metrics=self.test_metrics))


def train(request: TrainRequest, sink: EventSink = lambda event: None,
          cancel: threading.Event | None = None, prepared: Any = None, plan: Any = None) -> RunResult:
    """Run (or resume) one training run synchronously. Set `cancel` to stop between batches.

    The config is decided (a preset, or app.planning's plan: then `prepared` and `plan` are the
    dataset it read and the plan it made). Faces call app.launch, which plans "preset auto" first.

    Raises MammoError for problems found before the run starts (bad dataset, config, weights);
    failures during the run (NaN loss, disk full) end in a `failed` event and exit code.
    """
    cancel = cancel or threading.Event()
    leave_group = not distributed.joined()  # a caller in the group already (a CV) stays in it
    if request.track:  # a bad spec or a missing library: said before the dataset is read
        from mammo_tui.tracking.spec import tracking_specs

        tracking_specs(request.track)
    setup = RunSetup(request, sink, prepared, plan)  # a resume takes the run directory's lock here, a new run in materialise()
    try:
        if request.track or setup.config.track:  # ... and the config's (a preset, --set, config.toml)
            from mammo_tui.tracking.spec import tracking_specs

            setup.track = tracking_specs(request.track, setup.config.track)
            setup.facts.append(f"tracking to {', '.join(spec.text for spec in setup.track)}")
        setup.build_model()
        setup.materialise()
        trainer = Trainer(setup, sink, cancel)
        try:
            return trainer.run()
        except (WeightsUnavailableError, ConfigError):
            trainer.writer.close()
            raise
        except MammoError as exc:
            return trainer._fail(str(exc), None, None, exc.exit_code)
        finally:
            trainer.writer.close()
            if setup.dist and leave_group:
                distributed.cleanup()
    finally:
        setup.release_lock()  # after the last write: the next --resume may start now
