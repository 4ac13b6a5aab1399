"""Loss, optimizer, LR schedule and mixed precision: built for the current config, rebuilt at a
restart, narrowed to the head for cRT, and saved in last.pt as "optimizer" and "scheduler"."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammo_tui.config import TrainConfig
from mammo_tui.engine.checkpoint import CheckpointError
from mammo_tui.engine.losses import build_loss
from mammo_tui.engine.models import Classifier
from mammo_tui.engine.policies import Policy
from mammo_tui.labels import NUM_CLASSES

SCHEDULE_KEYS = {"lr", "weight_decay", "scheduler", "epochs"}  # what the saved optimizer/LR state holds


class Optimisation(Policy):
    """criterion, optimizer, scheduler and scaler of `model`, trained on `train_labels` on `device`."""

    TYPES = {"optimizer": dict, "scheduler": dict}

    def __init__(self, model: Classifier, train_labels: np.ndarray, device: torch.device) -> None:
        self.model, self.train_labels, self.device = model, train_labels, device

    def build(self, cfg: TrainConfig, segment_start: int) -> None:
        """Loss, optimizer and LR schedule for `cfg`. The cosine schedule spans the epochs from the
        current segment's start to the end of the run: after a restart (a fix applied) the new LR
        is used as given on the next epoch and decays over what is left."""
        self.criterion = build_loss(cfg.loss, self.train_labels, NUM_CLASSES, cfg.class_weights,
                                    cfg.focal_gamma, cfg.la_tau).to(self.device)
        # Every parameter is registered; frozen ones simply get no gradient (AdamW skips them).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.build_schedule(cfg, segment_start)
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16)
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and self.amp_dtype == torch.float16)

    def build_schedule(self, cfg: TrainConfig, segment_start: int) -> None:
        if cfg.scheduler == "cosine":
            remaining = cfg.epochs - segment_start + 1
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, remaining))
        elif cfg.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max",
                                                                        factor=0.5, patience=2)
        else:
            self.scheduler = None

    def change_schedule(self, cfg: TrainConfig, after_epoch: int, changes: dict[str, tuple[Any, Any]]) -> None:
        """A --force resume after `after_epoch` that changed lr, weight_decay, scheduler or epochs
        (`changes`: key -> (old, new)). The optimizer keeps its moments; the saved schedule is
        replaced, never left to override the new values:

        - a new lr or scheduler starts a new schedule at the next epoch: the lr as given, then a
          cosine over the epochs left (as after a restart);
        - a new length alone stretches (or shrinks) the cosine under way to end at the new last
          epoch: each epoch left gets the lr a run launched with that length has there;
        - a new weight_decay alone changes nothing else.
        """
        for group in self.optimizer.param_groups:
            group["weight_decay"] = cfg.weight_decay
        if {"lr", "scheduler"} & changes.keys():
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] = cfg.lr
            self.build_schedule(cfg, after_epoch + 1)
        elif "epochs" in changes and isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            old, new = changes["epochs"]
            cosine = self.scheduler
            cosine.T_max = max(cosine.last_epoch + 1, cosine.T_max + int(new) - int(old))
            # the closed form at the steps taken; later steps follow from it (the recursive form)
            progress = math.cos(math.pi * cosine.last_epoch / cosine.T_max)
            for group, base in zip(self.optimizer.param_groups, cosine.base_lrs):
                group["lr"] = cosine.eta_min + (base - cosine.eta_min) * (1 + progress) / 2

    def crt(self, cfg: TrainConfig) -> None:
        """cRT: plain CE and a fresh optimizer over the head alone; no schedule."""
        self.criterion = build_loss("ce", self.train_labels, NUM_CLASSES, "none", 0.0, 0.0).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step_schedule(self, cfg: TrainConfig, score: tuple) -> None:
        """After an epoch: plateau follows the selection score, the others the epoch count."""
        if self.scheduler is not None:
            if cfg.scheduler == "plateau":
                self.scheduler.step(score[0])
            else:
                self.scheduler.step()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else {}}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        super().load_state_dict(state, source)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint {source}: its optimizer state does not fit this run's trainable layers "
                f"({exc.__class__.__name__}: {str(exc)[:200]}); a --force resume cannot change freeze "
                "or arch. Resume with the run's own settings, or start a new run.") from None
