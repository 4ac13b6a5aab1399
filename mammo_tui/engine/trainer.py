"""The training engine: one plain loop, five collapse defenses, typed events out.

It knows nothing about its consumers. Everything it has to say goes through `sink(event)`;
`events.jsonl` in the run directory receives the same stream, so `watch` can replay it.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from mammo_tui import config as config_mod
from mammo_tui.collapse import DRIFT_WINDOW, apply_suggestion, detect_collapse, has_pretrained, suggest
from mammo_tui.config import TrainConfig
from mammo_tui.app.requests import RunResult, TrainRequest
from mammo_tui.engine import distributed
from mammo_tui.engine.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from mammo_tui.engine.distributed import DistInfo, DistributedWeightedSampler
from mammo_tui.engine.losses import build_loss, inverse_frequency_weights
from mammo_tui.engine.models import Classifier, apply_train_mode, backbone_frozen, default_num_workers, set_trainable
from mammo_tui.engine.run_record import config_history, launch_segment, write_config_toml
from mammo_tui.engine.run_setup import RunSetup
from mammo_tui.errors import ConfigError, MammoError, WeightsUnavailableError
from mammo_tui.events import (BatchProgress, Broadcast, CheckpointSaved, CollapseStatus,
                              ConfigChanged, EpochMetrics, Event, EventSink, LogMessage,
                              ProgressMeter, RunFailed, RunFinished, RunStarted)
from mammo_tui.labels import CLASS_NAMES, NUM_CLASSES
from mammo_tui.metrics import better_score, compute_metrics, selection_score
from mammo_tui.preprocessing import Preprocessing
from mammo_tui.rundir import CHECKPOINT_DIR, SUMMARY_FILE, write_json
from mammo_tui.runlog import EVENTS_FILE, RunLogWriter

BATCH_EVENT_INTERVAL_S = 0.3  # a few progress events per second is plenty for a terminal
MAX_RECOVERIES = 2
SCHEDULE_KEYS = {"lr", "weight_decay", "scheduler", "epochs"}  # what the saved optimizer/LR state holds
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_COLLAPSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Silent:
    """The event sink and log writer of ranks other than 0."""

    sinks: list = []

    def __call__(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class _NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"loss became {value} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.value = epoch, batch, value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
        # Only rank 0 writes the run directory and speaks; the other ranks train silently.
        self.writer = RunLogWriter(self.run_dir / EVENTS_FILE) if self.is_main else _Silent()
        if getattr(self.writer, "repaired", ""):  # a torn last line cut off: said at start
            setup.notes.append(self.writer.repaired)
        self.emit = Broadcast(self.writer, sink) if self.is_main else _Silent()
        if self.is_main and setup.track:  # after the run log and the screen; a failing tracker stops alone
            from mammo_tui.tracking.sinks import open_trackers

            self.emit.sinks += open_trackers(setup.track, log=self.writer, screen=sink)
        self.sink = sink  # progress before RunStarted goes to the screen only, not the run log
        self.device = resolve_device(self.cfg.device)
        if self.dist and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self._ddp: tuple[object, Any] | None = None  # (module wrapped, DDP wrapper)
        self.history: list[dict[str, Any]] = []  # per epoch: epoch, status, score, metrics
        self.best_score: tuple | None = None
        self.best_epoch: int | None = None
        # The best *healthy* epoch: what a fix restarts from (never a collapsed or warning epoch).
        self.best_healthy_score: tuple | None = None
        self.best_healthy_epoch: int | None = None
        self.best_healthy_state: dict[str, Any] | None = None
        self.recoveries = 0
        self.changes: list[dict[str, Any]] = []
        # Which config trained which epochs: a segment starts at launch, at each config change and
        # at each restart (a fix applied: weights rolled back, warmup and LR schedule start over).
        self.segments: list[dict[str, Any]] = [launch_segment(self.cfg, setup.origin)]
        self.start_epoch = 1
        self.started = time.time()
        self.pending: list[Event] = []  # said before run_started could be emitted
        self.recent: list[dict[str, Any]] = []  # metrics since the last restart (the drift rules)
        self.suggestions: list[dict[str, Any]] = []  # the last collapse check's (what recover applies)
        self.features_for: str | None = None  # the stage the cached backbone features belong to
        self.train_feats = self.val_feats = None

    @property
    def segment_start(self) -> int:
        """First epoch since the last restart: warmup epochs and the LR schedule count from here."""
        return max(s["first_epoch"] for s in self.segments if s.get("restart"))

    # -- data --------------------------------------------------------------------------------
    def load_data(self) -> None:
        from mammo_tui.data.cache import PreprocessCache, load_images
        from mammo_tui.data.dataset import Rows

        records = self.setup.prepared.records
        cache = PreprocessCache.of(Preprocessing.of(self.cfg))
        t0 = time.perf_counter()
        # rank 0 preprocesses and builds the shared memory-mapped file; other ranks wait for it
        progress = ProgressMeter("preprocessing images", self.sink) if self.is_main else None
        images = load_images(records, cache, progress, workers=self.cfg.preprocess_workers)
        self.pending.append(LogMessage("info", f"loaded {len(records)} images at {self.cfg.img_size} px in "
                                       f"{time.perf_counter() - t0:.1f} s ({cache.decodes} decoded, "
                                       f"{cache.hits} from cache)"))
        self.pending += [LogMessage("warning", message) for message in cache.warnings]
        labels = np.array([r.label for r in records], dtype=np.int64)
        tr, va = self.setup.train_idx, self.setup.val_idx
        # views by index, not copies: the mapped file stays the one copy in memory
        self.train_images, self.train_labels = Rows(images, tr), labels[tr]
        self.val_images, self.val_labels = Rows(images, va), labels[va]
        te = self.setup.test_idx
        self.test_images, self.test_labels = Rows(images, te), labels[te]  # the official test side
        self.test_groups = [records[i].group for i in te]
        self.train_counts = np.bincount(self.train_labels, minlength=NUM_CLASSES).tolist()
        if len(self.train_labels) < 2:
            raise MammoError("the training split has fewer than 2 images; the dataset is too small")
        share, batch, _ = self._batching()
        if share < 2:
            raise MammoError(f"{len(self.train_labels)} training images over {self.world} processes leave "
                             f"{share} per process; BatchNorm needs batches of 2 or more. Use fewer processes.")
        if batch < self.cfg.batch_size:
            where = (f"the {len(self.train_labels)} training images" if self.world == 1 else
                     f"each process's share of the training images ({share} of {len(self.train_labels)} "
                     f"on each of {self.world} processes)")
            self.pending.append(LogMessage("warning", f"batch_size {self.cfg.batch_size} is larger than "
                                           f"{where}; using {batch}"))
        present = set(self.train_labels.tolist())
        absent = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if c not in present]
        if absent:
            self.pending.append(LogMessage("warning", f"no training images for class {', '.join(absent)}: "
                                           "the model cannot learn it"))

    @property
    def world(self) -> int:
        return self.dist.world if self.dist else 1

    def _batching(self) -> tuple[int, int, bool]:
        """(images per process, batch size, drop_last). Each process draws ceil(n / world) images
        (the samplers pad to equal shares); batches are cut from that share, never from n, so no
        process ends an epoch with zero batches."""
        share = -(-len(self.train_labels) // self.world)
        batch = min(self.cfg.batch_size, share)
        return share, batch, share > batch

    def _steps_per_epoch(self) -> int:
        share, batch, drop_last = self._batching()
        steps = share // batch if drop_last else -(-share // batch)
        return min(steps, self.cfg.max_batches_per_epoch) if self.cfg.max_batches_per_epoch else steps

    def _workers(self) -> int:
        return self.cfg.num_workers if self.cfg.num_workers >= 0 else default_num_workers(self.device.type)

    def _train_loader(self, epoch: int, features: torch.Tensor | None) -> DataLoader:
        from mammo_tui.data.dataset import ImageDataset

        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        if features is not None:
            dataset = TensorDataset(features, torch.as_tensor(self.train_labels))
        else:
            dataset = ImageDataset(self.train_images, self.train_labels, augment=self.cfg.augment,
                                   seed=self.cfg.seed * 1000 + epoch)
        sampler = None
        seed = self.cfg.seed * 1000 + epoch
        if self.in_crt(epoch) or (self.cfg.sampler == "weighted" and self.cfg.sampler_power > 0):
            power = 1.0 if self.in_crt(epoch) else self.cfg.sampler_power
            weights = inverse_frequency_weights(self.train_labels, NUM_CLASSES, power)
            if self.dist:
                sampler = DistributedWeightedSampler(weights, len(weights), self.dist, seed)
            else:
                sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                                num_samples=len(weights), replacement=True, generator=generator)
        elif self.dist:
            sampler = DistributedSampler(dataset, num_replicas=self.dist.world, rank=self.dist.rank,
                                         shuffle=True, seed=seed)
        _, batch, drop_last = self._batching()
        workers = 0 if features is not None else self._workers()
        return DataLoader(dataset, batch_size=batch, sampler=sampler, shuffle=sampler is None,
                          generator=generator, num_workers=workers, pin_memory=self.device.type == "cuda",
                          drop_last=drop_last, persistent_workers=False)

    def _val_loader(self, features: torch.Tensor | None) -> DataLoader:
        from mammo_tui.data.dataset import ImageDataset

        if features is not None:
            dataset = TensorDataset(features, torch.as_tensor(self.val_labels))
        else:
            dataset = ImageDataset(self.val_images, self.val_labels, augment=False)
        return DataLoader(dataset, batch_size=max(self.cfg.batch_size, 64), shuffle=False,
                          num_workers=0 if features is not None else self._workers(),
                          pin_memory=self.device.type == "cuda")

    # -- model -------------------------------------------------------------------------------
    def build(self) -> None:
        self.model: Classifier = self.setup.model.to(self.device)
        self.pretrained_used = self.setup.pretrained_used
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self._build_optimisation()

    def _build_optimisation(self) -> None:
        """Loss, optimizer and LR schedule for the current config. The cosine schedule spans the
        epochs from the current segment's start to the end of the run: after a restart (a fix
        applied) the new LR is used as given on the next epoch and decays over what is left."""
        cfg = self.cfg
        self.criterion = build_loss(cfg.loss, self.train_labels, NUM_CLASSES, cfg.class_weights,
                                    cfg.focal_gamma, cfg.la_tau).to(self.device)
        # Every parameter is registered; frozen ones simply get no gradient (AdamW skips them).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._build_schedule()
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16)
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and self.amp_dtype == torch.float16)

    def _build_schedule(self) -> None:
        cfg = self.cfg
        if cfg.scheduler == "cosine":
            remaining = cfg.epochs - self.segment_start + 1
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, remaining))
        elif cfg.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max",
                                                                        factor=0.5, patience=2)
        else:
            self.scheduler = None

    def _apply_schedule_change(self) -> None:
        """A --force resume that changed lr, weight_decay, scheduler or epochs: the optimizer keeps
        its moments, but the saved LR schedule would otherwise override the new values. The new lr
        is used as given on the next epoch and the schedule spans what is left (as after a restart)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.cfg.lr
            group["weight_decay"] = self.cfg.weight_decay
        self._build_schedule()

    def stage_for(self, epoch: int) -> str:
        """Warmup epochs (counted from the last restart) train the head only; then the configured
        blocks unfreeze. A random backbone has no features to protect: no warmup. cRT: head only."""
        if self.in_crt(epoch):
            return "head"
        if self.pretrained_used and epoch - self.segment_start < self.cfg.warmup_epochs:
            return "head"
        return self.cfg.freeze

    def in_crt(self, epoch: int) -> bool:
        return self.cfg.crt_epochs > 0 and epoch > self.cfg.epochs - self.cfg.crt_epochs

    def _crt_optimisation(self) -> None:
        self.criterion = build_loss("ce", self.train_labels, NUM_CLASSES, "none", 0.0, 0.0).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.head.parameters(), lr=self.cfg.lr,
                                           weight_decay=self.cfg.weight_decay)
        self.scheduler = None

    def _start_crt(self, epoch: int) -> None:
        """Best backbone, fresh head, plain CE, class-balanced batches."""
        if self.dist:
            torch.distributed.barrier()  # rank 0 has finished writing best.pt
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        if best.is_file():
            load_weights(self.model, load_checkpoint(best)["model"], best)
        torch.manual_seed(self.cfg.seed + epoch)
        for module in self.model.head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self._crt_optimisation()
        self.emit(LogMessage("info", f"cRT: re-training a fresh head on the best backbone (epoch "
                             f"{self.best_epoch}) with class-balanced sampling for {self.cfg.crt_epochs} epochs",
                             epoch=epoch))

    # -- checkpoints --------------------------------------------------------------------------
    def _payload(self, epoch: int, metrics: dict[str, Any], status: str, light: bool = False) -> dict[str, Any]:
        payload = {
            "model": self.model.state_dict(),
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "arch": self.cfg.arch,
            "class_names": list(CLASS_NAMES),
            **Preprocessing.of(self.cfg).checkpoint_fields(),  # eval / predict preprocess exactly as training did
            "metrics": metrics,
            "status": status,
        }
        if light:  # healthy.pt: only what a restart needs (a fresh optimizer follows it)
            return payload
        return {
            **payload,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "best_epoch": self.best_epoch,
            "best_score": list(self.best_score) if self.best_score else [],
            "best_healthy_epoch": self.best_healthy_epoch,
            "best_healthy_score": list(self.best_healthy_score) if self.best_healthy_score else [],
            "history": self.history,
            "recoveries": self.recoveries,
            "changes": self.changes,
            "segments": self.segments,
        }

    def _save(self, kind: str, epoch: int, metrics: dict[str, Any], status: str, score: tuple) -> None:
        if not self.is_main:
            return
        path = self.run_dir / CHECKPOINT_DIR / f"{kind}.pt"
        save_checkpoint(path, self._payload(epoch, metrics, status, light=kind == "healthy"))
        self.emit(CheckpointSaved(epoch=epoch, kind=kind, path=str(path), score=list(score)))

    def restore(self) -> None:
        """Continue a run from last.pt; after a fix was applied (request.restart), restart instead:
        the best healthy weights (or the initial ones), fresh optimizer, warmup and schedule."""
        for stale in (self.run_dir / CHECKPOINT_DIR).glob(".*.tmp"):  # a kill -9 during a save
            stale.unlink(missing_ok=True)
        last = self.run_dir / CHECKPOINT_DIR / "last.pt"
        if not last.is_file():
            return
        state = load_checkpoint(last)  # a mammo-tui checkpoint, or a CheckpointError naming the file
        for key, kind in {"optimizer": dict, "scheduler": dict, "history": list, "changes": list,
                          "segments": list, "best_score": list, "best_healthy_score": list}.items():
            if not isinstance(state.get(key, kind()), kind):
                raise CheckpointError(f"checkpoint {last}: {key} is a {type(state[key]).__name__}, expected "
                                      f"a {kind.__name__}; the file was not written by this mammo-tui")
        epoch = int(state["epoch"])
        self.history = list(state.get("history") or [])
        self.best_epoch = state.get("best_epoch")
        self.best_score = tuple(state["best_score"]) if state.get("best_score") else None
        self.best_healthy_epoch = state.get("best_healthy_epoch")
        self.best_healthy_score = tuple(state["best_healthy_score"]) if state.get("best_healthy_score") else None
        self.recoveries = int(state.get("recoveries", 0))
        self.changes = list(state.get("changes") or [])
        self.segments = list(state.get("segments") or [launch_segment(state["config"], self.setup.origin)])
        self.start_epoch = epoch + 1
        healthy = self.run_dir / CHECKPOINT_DIR / "healthy.pt"
        if healthy.is_file():
            self.best_healthy_state = load_checkpoint(healthy)["model"]
            load_weights(self.model, self.best_healthy_state, healthy)  # does it fit? said now, not at a restart
        if self.setup.request.restart:
            self._restart(epoch, self.cfg, "fix applied in the dashboard", announce=False)
        else:
            load_weights(self.model, state["model"], last)
            if self.in_crt(epoch):
                self._crt_optimisation()  # the saved optimizer state is the cRT head's
            try:
                self.optimizer.load_state_dict(state["optimizer"])
                if self.scheduler and state.get("scheduler"):
                    self.scheduler.load_state_dict(state["scheduler"])
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise CheckpointError(
                    f"checkpoint {last}: its optimizer state does not fit this run's trainable layers "
                    f"({exc.__class__.__name__}: {str(exc)[:200]}); a --force resume cannot change freeze "
                    "or arch. Resume with the run's own settings, or start a new run.") from None
            if self.setup.changed:
                self._new_segment(epoch, "changed on resume", restart=False)
                if SCHEDULE_KEYS & set(self.setup.changed):
                    self._apply_schedule_change()
        if self.setup.changed:
            change = {"epoch": epoch, "changes": {k: [a, b] for k, (a, b) in self.setup.changed.items()},
                      "reason": self.segments[-1]["reason"]}
            self.changes.append(change)
            self.pending.append(ConfigChanged(epoch=epoch, changes=change["changes"], reason=change["reason"]))
            self._write_config()
        self.recent = [h["metrics"] for h in self.history if h["epoch"] >= self.segment_start][-DRIFT_WINDOW:]

    def _new_segment(self, after_epoch: int, reason: str, restart: bool) -> None:
        self.segments.append({"first_epoch": after_epoch + 1, "config": self.cfg.to_dict(), "reason": reason,
                              "restart": restart})

    def _restart(self, after_epoch: int, config: TrainConfig, why: str, announce: bool = True) -> str:
        """Roll back to the best healthy weights (never a collapsed or warning epoch), or to the
        initial weights when no epoch was healthy; train on from the next epoch with `config`, a
        fresh optimizer, warmup counted again and a cosine schedule over the remaining epochs."""
        old, self.cfg = self.cfg, config
        if self.best_healthy_state is not None:
            rollback = f"the best healthy checkpoint (epoch {self.best_healthy_epoch})"
            self.model.load_state_dict(self.best_healthy_state)
        else:
            rollback = "the initial weights (no epoch was healthy)"
            self.model.load_state_dict(self.initial_state)
        reason = f"{why}; restarted from {rollback}"
        self._new_segment(after_epoch, reason, restart=True)
        self._build_optimisation()
        self.recent, self.features_for = [], None
        self.pending.append(LogMessage("info", f"restarting at epoch {after_epoch + 1} from {rollback} with a "
                                       "fresh optimizer; warmup and the LR schedule start over"))
        if announce:
            change = {"epoch": after_epoch, "changes": {k: [a, b] for k, (a, b) in config_mod.diff(old, config).items()},
                      "reason": reason}
            self.changes.append(change)
            self.emit(ConfigChanged(epoch=after_epoch, changes=change["changes"], reason=reason))
            self._write_config()
        return rollback

    def _write_config(self) -> None:
        if self.is_main:
            write_config_toml(self.run_dir, self.cfg, self.segments, self.setup.plan_reasons)

    # -- epochs ------------------------------------------------------------------------------
    def _features(self, images: np.ndarray) -> torch.Tensor:
        """Backbone features computed once, for epochs where only the head trains."""
        from mammo_tui.data.dataset import ImageDataset

        loader = DataLoader(ImageDataset(images, np.zeros(len(images), dtype=np.int64), augment=False),
                            batch_size=128, num_workers=0)
        self.model.eval()
        chunks = []
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            for x, _ in loader:
                chunks.append(self.model.backbone(self._to_device(x)).float().cpu())
        return torch.cat(chunks)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward_module(self, features: torch.Tensor | None):
        """The module a training batch goes through; under torchrun, wrapped in DDP.

        DDP only synchronises parameters that require gradients when it is built, so it is
        rebuilt whenever the trainable set changes (warmup end, cRT, recovery)."""
        module = self.model.head if features is not None else self.model
        if not self.dist:
            return module
        trainable = tuple(id(p) for p in module.parameters() if p.requires_grad)
        if self._ddp is None or self._ddp[0] != (id(module), trainable):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self._ddp = ((id(module), trainable), DistributedDataParallel(module, device_ids=ids))
        return self._ddp[1]

    def train_epoch(self, epoch: int, features: torch.Tensor | None, progress: dict) -> float | None:
        model, cfg = self.model, self.cfg
        apply_train_mode(model)
        forward = self._forward_module(features)
        loader = self._train_loader(epoch, features)
        n_batches = len(loader)
        if cfg.max_batches_per_epoch:
            n_batches = min(n_batches, cfg.max_batches_per_epoch)
        total, count, seen = 0.0, 0, 0
        t_start = last_event = time.perf_counter()
        for batch, (x, y) in enumerate(loader, start=1):
            if batch > n_batches:
                break
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = forward(x)
            loss = self.criterion(logits.float(), y)
            cancelled, non_finite = self.cancel.is_set(), not bool(torch.isfinite(loss))
            if self.dist:  # every rank stops at the same batch, or none does
                cancelled, non_finite = distributed.any_rank(cancelled, non_finite, device=self.device)
            if cancelled:
                return None
            if non_finite:
                raise _NonFiniteLoss(epoch, batch, float(loss.detach()))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(y)
            count += len(y)
            seen += len(y)
            now = time.perf_counter()
            progress["batches_done"] += 1
            progress["batch_time"] = (now - t_start) / batch
            if now - last_event >= BATCH_EVENT_INTERVAL_S or batch == n_batches:
                last_event = now
                remaining = progress["batches_total"] - progress["batches_done"]
                self.emit(BatchProgress(epoch=epoch, batch=batch, n_batches=n_batches, loss=total / count,
                                        images_per_s=seen / max(now - t_start, 1e-9),
                                        eta_s=remaining * progress["batch_time"]))
        if self.dist:
            total, count, seen = distributed.sum_over_ranks(total, count, seen, device=self.device)
        if count == 0:  # _batching() makes this impossible; a zero loss must never pass as trained
            raise MammoError(f"epoch {epoch} trained no batch (batch_size {cfg.batch_size}, "
                             f"{len(self.train_labels)} training images)")
        progress["images"] = seen
        return total / count

    def evaluate(self, features: torch.Tensor | None) -> tuple[dict[str, Any], float]:
        """Validation metrics. Under torchrun, rank 0's BatchNorm statistics go to every rank first
        and rank 0 alone validates; every rank then decides on the same numbers (best checkpoint,
        collapse, recovery, early stop), so no rank can take another branch."""
        if self.dist:
            distributed.sync_buffers(self.model)
            result = self._validate(features) if self.dist.is_main else None
            return distributed.broadcast(result)
        return self._validate(features)

    def _validate(self, features: torch.Tensor | None) -> tuple[dict[str, Any], float]:
        self.model.eval()
        forward = self.model.head if features is not None else self.model
        logits_all, labels_all = [], []
        with torch.no_grad():
            for x, y in self._val_loader(features):
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    logits = forward(self._to_device(x))
                logits_all.append(logits.float().cpu())
                labels_all.append(y)
        logits = torch.cat(logits_all)
        labels = torch.cat(labels_all)
        # Plain cross-entropy of the raw logits: comparable across losses and balancing choices.
        val_loss = float(F.cross_entropy(logits, labels))
        probs = torch.softmax(logits, dim=1).numpy()
        metrics = compute_metrics(labels.numpy(), probs.argmax(1), probs, NUM_CLASSES)
        return metrics, val_loss

    # -- main --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.load_data()
        self.build()
        self.restore()
        progress = self._announce()
        try:
            interrupted = self._train_epochs(progress)
        except _NonFiniteLoss as exc:
            return self._fail_non_finite(exc)
        return self._finish(interrupted)

    def _train_epochs(self, progress: dict[str, Any]) -> bool:
        """Epoch after epoch until the last, an early stop or a stop on collapse; True when cancelled."""
        stale = 0  # epochs since the selection score last improved (early stop)
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            self._prepare_epoch(epoch)
            outcome = self._train_and_validate(epoch, progress)
            if outcome is None:
                return True
            metrics, result, score = outcome
            improved = self._keep_checkpoints(epoch, metrics, result.status, score)
            stale = 0 if improved else stale + 1
            action = self._after_epoch(epoch, result, stale)
            if action == "restarted":
                stale = 0
            elif action == "stop":
                break
        return False

    def _fail_non_finite(self, exc: _NonFiniteLoss) -> RunResult:
        return self._fail(f"non-finite loss ({exc.value}) at epoch {exc.epoch}, batch {exc.batch}. "
                          f"The last good checkpoint is kept. Lower the learning rate (lr = {self.cfg.lr:g}) "
                          "or enable gradient clipping (grad_clip).", exc.epoch, exc.batch, EXIT_FAILED)

    def _announce(self) -> dict[str, Any]:
        """RunStarted and what was noted before it; the progress counters for the ETA."""
        cfg = self.cfg
        steps = self._steps_per_epoch()
        notes = self.setup.facts + self.setup.notes
        self.emit(RunStarted(
            run_dir=str(self.run_dir), run_name=self.run_dir.name, config=cfg.to_dict(),
            class_names=list(CLASS_NAMES), n_train=len(self.train_labels), n_val=len(self.val_labels),
            train_counts=self.train_counts,
            val_counts=np.bincount(self.val_labels, minlength=NUM_CLASSES).tolist(),
            steps_per_epoch=steps, start_epoch=self.start_epoch, device=str(self.device), notes=notes))
        for note in self.setup.facts:
            self.emit(LogMessage("info", note))
        for note in self.setup.notes:
            self.emit(LogMessage("warning", note))
        for event in self.pending:
            self.emit(event)
        self.pending = []
        return {"batches_done": 0, "batches_total": steps * (cfg.epochs - self.start_epoch + 1), "batch_time": 0.0}

    def _prepare_epoch(self, epoch: int) -> None:
        """cRT start, the trainable stage, and the cached backbone features when nothing below the head trains."""
        if self.in_crt(epoch) and not self.in_crt(epoch - 1):
            self._start_crt(epoch)
            self.features_for = None
        previous_stage = self.stage_for(epoch - 1) if epoch > self.segment_start else None
        stage = self.stage_for(epoch)
        self.trainable = set_trainable(self.model, stage)
        if previous_stage == "head" and stage != "head":
            self.emit(LogMessage("info", f"warmup over: unfreezing {self.trainable}", epoch=epoch))
        self.use_cache = self.cfg.frozen_feature_cache and not self.cfg.augment and backbone_frozen(self.model)
        if self.use_cache and self.features_for != stage:
            t0 = time.perf_counter()
            self.train_feats, self.val_feats = self._features(self.train_images), self._features(self.val_images)
            self.features_for = stage
            self.emit(LogMessage("info", f"backbone frozen and no augmentation: features computed once "
                                 f"({time.perf_counter() - t0:.1f} s); epochs train the head only", epoch=epoch))

    def _train_and_validate(self, epoch: int, progress: dict[str, Any]):
        """One epoch of training, then validation and the collapse check; None when cancelled."""
        seed_everything(self.cfg.seed * 1000 + epoch)
        t0 = time.perf_counter()
        train_loss = self.train_epoch(epoch, self.train_feats if self.use_cache else None, progress)
        if train_loss is None:
            return None
        train_time = time.perf_counter() - t0
        metrics, val_loss = self.evaluate(self.val_feats if self.use_cache else None)
        epoch_time = time.perf_counter() - t0
        lr = self.optimizer.param_groups[0]["lr"]
        score = selection_score(metrics)
        if self.scheduler is not None:
            if self.cfg.scheduler == "plateau":
                self.scheduler.step(score[0])
            else:
                self.scheduler.step()
        self.emit(EpochMetrics(epoch=epoch, epochs=self.cfg.epochs, train_loss=train_loss, val_loss=val_loss,
                               metrics=metrics, lr=lr, trainable=self.trainable, epoch_time_s=epoch_time,
                               images_per_s=progress["images"] / max(train_time, 1e-9)))
        result = detect_collapse(metrics, self.recent, self.cfg)
        self.suggestions = [s.to_dict() for s in suggest(self.cfg, result, metrics, self.train_counts)]
        self.emit(CollapseStatus(epoch=epoch, status=result.status, reasons=result.reasons,
                                 suggestions=self.suggestions))
        self.recent = (self.recent + [metrics])[-DRIFT_WINDOW:]
        self.history.append({"epoch": epoch, "status": result.status, "score": list(score), "metrics": metrics,
                             "train_loss": train_loss, "val_loss": val_loss})
        return metrics, result, score

    def _keep_checkpoints(self, epoch: int, metrics: dict[str, Any], status: str, score: tuple) -> bool:
        """best.pt (by selection score), healthy.pt (the best healthy epoch), last.pt, summary.json.
        Returns whether the selection score improved."""
        improved = better_score(score, self.best_score)
        if improved:
            self.best_score, self.best_epoch = score, epoch
            self._save("best", epoch, metrics, status, score)
        if status == "healthy" and better_score(score, self.best_healthy_score):
            self.best_healthy_score, self.best_healthy_epoch = score, epoch
            self.best_healthy_state = copy.deepcopy(self.model.state_dict())
            self._save("healthy", epoch, metrics, status, score)
        self._save("last", epoch, metrics, status, score)
        self._write_summary("running", interrupted=False)
        return improved

    def _after_epoch(self, epoch: int, result, stale: int) -> str:
        """"continue", "restarted" (a collapse recovered) or "stop" (on_collapse = stop, early stop)."""
        if result.status == "collapsed" and epoch < self.cfg.epochs:
            if self.cfg.on_collapse == "stop":
                self.emit(LogMessage("error", f"collapsed at epoch {epoch}; stopping (on_collapse = stop)",
                                     epoch=epoch))
                return "stop"
            if self.cfg.on_collapse == "recover" and self._recover(epoch, result.reasons):
                return "restarted"
        if self.cfg.early_stop_patience and stale >= self.cfg.early_stop_patience:
            self.emit(LogMessage("info", f"early stop: no better selection score for {stale} epochs "
                                 f"(best epoch {self.best_epoch})", epoch=epoch))
            return "stop"
        return "continue"

    def _recover(self, epoch: int, reasons: list[str]) -> bool:
        """on_collapse = recover: apply the top suggestion and restart (see _restart)."""
        if self.recoveries >= MAX_RECOVERIES or not self.suggestions:
            self.emit(LogMessage("warning", "collapsed again, but no recovery left; continuing", epoch=epoch))
            return False
        self.recoveries += 1
        top = self.suggestions[0]
        self._restart(epoch, apply_suggestion(self.cfg, top), f"collapse ({'; '.join(reasons)}): {top['reason']}")
        for event in self.pending:  # _restart queues its log line (at resume it comes before RunStarted)
            self.emit(event)
        self.pending = []
        return True

    def _fail(self, message: str, epoch: int | None, batch: int | None, code: int) -> RunResult:
        event = RunFailed(error=message, epoch=epoch, batch=batch, exit_code=code)
        summary: dict[str, Any] = {}
        try:
            self.emit(event)
            summary = self._write_summary("failed", interrupted=False, error=message)
        except (OSError, MammoError):
            # the run dir itself is what failed (disk full, removed): the sink still hears it
            for other in self.emit.sinks[1:]:  # the screen, and the trackers
                other(event)
        self.writer.close()
        return RunResult(self.run_dir, "failed", code, summary)

    def _finish(self, interrupted: bool) -> RunResult:
        if interrupted:
            status, code = "interrupted", EXIT_INTERRUPTED
        else:
            best = next((h for h in self.history if h["epoch"] == self.best_epoch), None)
            # The deliverable is the best checkpoint: the run's status is that epoch's status.
            status = best["status"] if best else "healthy"
            code = EXIT_COLLAPSED if status == "collapsed" else EXIT_OK
            if self.history and self.history[-1]["status"] == "collapsed" and status != "collapsed":
                self.emit(LogMessage("warning", f"the last epoch collapsed; best.pt (epoch {self.best_epoch}) "
                                     "is the checkpoint to use"))
        self.test_metrics = None if interrupted else self._held_out()
        summary = self._write_summary(status, interrupted=interrupted)
        self.emit(RunFinished(status=status, best_epoch=self.best_epoch, best_metrics=summary["best_metrics"],
                              epochs_completed=summary["epochs_completed"], interrupted=interrupted, exit_code=code))
        self.writer.close()
        return RunResult(self.run_dir, status, code, summary)

    def _held_out(self) -> dict[str, Any] | None:
        """The official test side through the best checkpoint, once (rank 0; None without one)."""
        if not self.is_main or not len(self.test_labels) or self.best_epoch is None:
            return None
        from mammo_tui.engine.held_out import describe_held_out, evaluate_held_out

        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        model = self.model.module if hasattr(self.model, "module") else self.model
        load_weights(model, load_checkpoint(best)["model"], best)
        metrics = evaluate_held_out(model, self.test_images, self.test_labels, self.test_groups, self.device,
                                    max(self.cfg.batch_size, 64))
        self.emit(LogMessage("info", describe_held_out(metrics, self.best_epoch)))
        return metrics

    def _write_summary(self, status: str, interrupted: bool, error: str = "") -> dict[str, Any]:
        summary = self._summary(status, interrupted, error)
        if self.is_main:
            write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def _summary(self, status: str, interrupted: bool, error: str) -> dict[str, Any]:
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), None)
        last = self.history[-1] if self.history else None
        epochs_completed = last["epoch"] if last else 0
        summary = {
            "run_name": self.run_dir.name,
            "status": status,
            "interrupted": interrupted,
            "error": error,
            "best_epoch": self.best_epoch,
            "best_status": best["status"] if best else None,
            "best_metrics": best["metrics"] if best else {},
            "best_healthy_epoch": self.best_healthy_epoch,
            "last_status": last["status"] if last else None,
            "last_metrics": last["metrics"] if last else {},
            "epochs_completed": epochs_completed,
            "epochs": self.cfg.epochs,
            "history": [{k: h[k] for k in ("epoch", "status", "score", "train_loss", "val_loss")} for h in self.history],
            "collapse_events": [{"epoch": h["epoch"], "status": h["status"]} for h in self.history
                                if h["status"] != "healthy"],
            "changes": self.changes,
            "config_history": config_history(self.segments, epochs_completed),
            "preset": self.setup.preset,
            "origin": self.setup.origin,
            "parent_run": self.setup.parent_run,
            "config": self.cfg.to_dict(),
            "device": str(self.device),
            "started": self.started,
            "finished": time.time() if status not in ("running",) else None,
            # the official test side, touched once by the best checkpoint (None: the set has none)
            "test_metrics": self.test_metrics,
        }
        return summary


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
