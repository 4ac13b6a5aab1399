"""One training epoch and one validation pass, as plain functions of the model, the optimisation
(criterion, optimizer, scaler, AMP) and a loader, in the style of torchvision's classification
reference. Under torchrun the training batch goes through DDP and rank 0 alone validates."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mammo_tui.config import TrainConfig
from mammo_tui.engine import distributed
from mammo_tui.engine.distributed import DistInfo
from mammo_tui.engine.loaders import to_device
from mammo_tui.engine.models import Classifier
from mammo_tui.engine.optimisation import Optimisation
from mammo_tui.errors import MammoError
from mammo_tui.events import BatchProgress, EventSink
from mammo_tui.labels import NUM_CLASSES
from mammo_tui.metrics import compute_metrics

BATCH_EVENT_INTERVAL_S = 0.3  # a few progress events per second is plenty for a terminal


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"loss became {value} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.value = epoch, batch, value


class TrainForward:
    """The module a training batch goes through; under torchrun, wrapped in DDP.

    DDP only synchronises parameters that require gradients when it is built, so it is
    rebuilt whenever the trainable set changes (warmup end, cRT, recovery)."""

    def __init__(self, dist: DistInfo | None, device: torch.device) -> None:
        self.dist, self.device = dist, device
        self._ddp: tuple[object, Any] | None = None  # (module wrapped, DDP wrapper)

    def __call__(self, model: Classifier, features: torch.Tensor | None) -> torch.nn.Module:
        module = model.head if features is not None else model
        if not self.dist:
            return module
        trainable = tuple(id(p) for p in module.parameters() if p.requires_grad)
        if self._ddp is None or self._ddp[0] != (id(module), trainable):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self._ddp = ((id(module), trainable), DistributedDataParallel(module, device_ids=ids))
        return self._ddp[1]


def train_one_epoch(model: Classifier, forward: torch.nn.Module, opt: Optimisation, loader: DataLoader,
                    cfg: TrainConfig, *, epoch: int, cancel: threading.Event, dist: DistInfo | None,
                    progress: dict[str, Any], emit: EventSink) -> float | None:
    """The epoch's mean training loss over every rank; None when cancelled. Raises NonFiniteLoss at
    the first non-finite loss. `progress` counts batches for the ETA and the images seen."""
    device = opt.device
    n_batches = len(loader)
    if cfg.max_batches_per_epoch:
        n_batches = min(n_batches, cfg.max_batches_per_epoch)
    total, count, seen = 0.0, 0, 0
    t_start = last_event = time.perf_counter()
    for batch, (x, y) in enumerate(loader, start=1):
        if batch > n_batches:
            break
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with opt.autocast():
            logits = forward(x)
        loss = opt.criterion(logits.float(), y)
        cancelled, non_finite = cancel.is_set(), not bool(torch.isfinite(loss))
        if dist:  # every rank stops at the same batch, or none does
            cancelled, non_finite = distributed.any_rank(cancelled, non_finite, device=device)
        if cancelled:
            return None
        if non_finite:
            raise NonFiniteLoss(epoch, batch, float(loss.detach()))
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            opt.scaler.unscale_(opt.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        total += float(loss.detach()) * len(y)
        count += len(y)
        seen += len(y)
        now = time.perf_counter()
        progress["batches_done"] += 1
        progress["batch_time"] = (now - t_start) / batch
        if now - last_event >= BATCH_EVENT_INTERVAL_S or batch == n_batches:
            last_event = now
            remaining = progress["batches_total"] - progress["batches_done"]
            emit(BatchProgress(epoch=epoch, batch=batch, n_batches=n_batches, loss=total / count,
                               images_per_s=seen / max(now - t_start, 1e-9), eta_s=remaining * progress["batch_time"]))
    if dist:
        total, count, seen = distributed.sum_over_ranks(total, count, seen, device=device)
    if count == 0:  # loaders.batching() makes this impossible; a zero loss must never pass as trained
        raise MammoError(f"epoch {epoch} trained no batch (batch_size {cfg.batch_size}, "
                         f"{len(loader.dataset)} training images)")
    progress["images"] = seen
    return total / count


def validate(model: Classifier, features: torch.Tensor | None, loader: DataLoader,
             opt: Optimisation) -> tuple[dict[str, Any], float]:
    """Validation metrics and loss; through the head alone when `features` are the backbone's."""
    model.eval()
    forward = model.head if features is not None else model
    logits_all, labels_all = [], []
    with torch.no_grad():
        for x, y in loader:
            with opt.autocast():
                logits = forward(to_device(x, opt.device))
            logits_all.append(logits.float().cpu())
            labels_all.append(y)
    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    # Plain cross-entropy of the raw logits: comparable across losses and balancing choices.
    val_loss = float(F.cross_entropy(logits, labels))
    probs = torch.softmax(logits, dim=1).numpy()
    metrics = compute_metrics(labels.numpy(), probs.argmax(1), probs, NUM_CLASSES)
    return metrics, val_loss


def evaluate(model: Classifier, features: torch.Tensor | None, loader: Callable[[], DataLoader],
             opt: Optimisation, dist: DistInfo | None) -> tuple[dict[str, Any], float]:
    """Validation metrics. Under torchrun, rank 0's BatchNorm statistics go to every rank first
    and rank 0 alone validates; every rank then decides on the same numbers (best checkpoint,
    collapse, recovery, early stop), so no rank can take another branch."""
    if dist:
        distributed.sync_buffers(model)
        result = validate(model, features, loader(), opt) if dist.is_main else None
        return distributed.broadcast(result)
    return validate(model, features, loader(), opt)
