"""The run's policies, each owning its state (as Ignite's handlers do: state_dict / load_state_dict).

The Trainer saves `payload.update(part.state_dict())` for each part into last.pt and restores them
in one loop. A part names the keys it saves and their types in `TYPES`; `check_state` checks every
part's keys before any part is restored, so a file written by something else restores nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import torch

from mammo_tui.config import TrainConfig
from mammo_tui.engine.checkpoint import CheckpointError, load_checkpoint, load_weights
from mammo_tui.events import LogMessage
from mammo_tui.metrics import better_score

MAX_RECOVERIES = 2


def check_types(state: dict[str, Any], types: dict[str, type], source: str | Path) -> None:
    """CheckpointError naming the file unless each key present has its type."""
    for key, kind in types.items():
        if not isinstance(state.get(key, kind()), kind):
            raise CheckpointError(f"checkpoint {source}: {key} is a {type(state[key]).__name__}, expected "
                                  f"a {kind.__name__}; the file was not written by this mammo-tui")


def check_state(parts: Iterable[Policy], state: dict[str, Any], source: str | Path) -> None:
    """Every part's keys of the right type, checked before any part is restored."""
    for part in parts:
        check_types(state, part.TYPES, source)


def training_stage(cfg: TrainConfig, epoch: int, segment_start: int, pretrained: bool) -> str:
    """Warmup epochs (counted from the last restart) train the head only; then the configured
    blocks unfreeze. A random backbone has no features to protect: no warmup. cRT: head only."""
    if ClassifierRetraining.active(cfg, epoch):
        return "head"
    if pretrained and epoch - segment_start < cfg.warmup_epochs:
        return "head"
    return cfg.freeze


class Policy:
    """A part of the run with state in last.pt: `TYPES` names its keys and the type each must have."""

    TYPES: dict[str, type] = {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        check_types(state, self.TYPES, source)


class BestCheckpoints(Policy):
    """best.pt (the best selection score) and healthy.pt (the best *healthy* epoch, never a collapsed
    or warning one: what a restart goes back to). The healthy weights are held in memory too."""

    TYPES = {"best_score": list, "best_healthy_score": list}

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.score: tuple | None = None
        self.healthy_epoch: int | None = None
        self.healthy_score: tuple | None = None
        self.healthy_state: dict[str, Any] | None = None

    def improve(self, epoch: int, score: tuple) -> bool:
        """Whether `score` beats the best so far (then it is the best)."""
        improved = better_score(score, self.score)
        if improved:
            self.score, self.epoch = score, epoch
        return improved

    def improve_healthy(self, epoch: int, status: str, score: tuple, model: torch.nn.Module) -> bool:
        """Whether this is the best healthy epoch so far (then its weights are kept)."""
        if status != "healthy" or not better_score(score, self.healthy_score):
            return False
        self.healthy_score, self.healthy_epoch = score, epoch
        self.healthy_state = copy.deepcopy(model.state_dict())
        return True

    def rollback(self, model: torch.nn.Module, initial_state: dict[str, Any]) -> str:
        """The best healthy weights into `model`, or the initial ones when no epoch was healthy; says which."""
        if self.healthy_state is not None:
            model.load_state_dict(self.healthy_state)
            return f"the best healthy checkpoint (epoch {self.healthy_epoch})"
        model.load_state_dict(initial_state)
        return "the initial weights (no epoch was healthy)"

    def load_healthy(self, model: torch.nn.Module, path: Path) -> None:
        """healthy.pt's weights, on resume; loaded into `model` now so a misfit is said at once."""
        if path.is_file():
            self.healthy_state = load_checkpoint(path)["model"]
            load_weights(model, self.healthy_state, path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.epoch,
            "best_score": list(self.score) if self.score else [],
            "best_healthy_epoch": self.healthy_epoch,
            "best_healthy_score": list(self.healthy_score) if self.healthy_score else [],
        }

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        super().load_state_dict(state, source)
        self.epoch = state.get("best_epoch")
        self.score = tuple(state["best_score"]) if state.get("best_score") else None
        self.healthy_epoch = state.get("best_healthy_epoch")
        self.healthy_score = tuple(state["best_healthy_score"]) if state.get("best_healthy_score") else None


class EarlyStopping(Policy):
    """Stop after `early_stop_patience` epochs without a better selection score. The count is saved
    in last.pt, so a resumed run stops where the uninterrupted one would (a checkpoint from before
    it was saved counts from zero)."""

    TYPES = {"early_stop_stale": int}

    def __init__(self) -> None:
        self.stale = 0  # epochs since the selection score last improved

    def step(self, improved: bool) -> None:
        self.stale = 0 if improved else self.stale + 1

    def reset(self) -> None:
        self.stale = 0

    def should_stop(self, patience: int) -> bool:
        return bool(patience) and self.stale >= patience

    def state_dict(self) -> dict[str, Any]:
        return {"early_stop_stale": self.stale}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        super().load_state_dict(state, source)
        self.stale = int(state.get("early_stop_stale", 0))


class Recovery(Policy):
    """on_collapse = recover: up to MAX_RECOVERIES restarts, each applying the top suggestion."""

    def __init__(self) -> None:
        self.count = 0

    def take(self, suggestions: list[dict[str, Any]]) -> bool:
        """Whether a recovery is left (and a suggestion to apply); counts it."""
        if self.count >= MAX_RECOVERIES or not suggestions:
            return False
        self.count += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"recoveries": self.count}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "") -> None:
        super().load_state_dict(state, source)
        self.count = int(state.get("recoveries", 0))


class ClassifierRetraining(Policy):
    """cRT (Kang et al. 2020): the last crt_epochs re-train a fresh head on the best backbone with
    plain CE and class-balanced batches. Where a run is follows from the epoch: nothing is saved."""

    @staticmethod
    def active(cfg: TrainConfig, epoch: int) -> bool:
        return cfg.crt_epochs > 0 and epoch > cfg.epochs - cfg.crt_epochs

    def starts(self, cfg: TrainConfig, epoch: int) -> bool:
        return self.active(cfg, epoch) and not self.active(cfg, epoch - 1)

    @staticmethod
    def start(model: torch.nn.Module, optimisation: Any, cfg: TrainConfig, epoch: int, best_epoch: int | None,
              best: Path, distributed: bool) -> LogMessage:
        """The best backbone (best.pt), a fresh head seeded by the epoch, and its optimisation
        (optimisation.Optimisation.crt); returns what to say."""
        if distributed:
            torch.distributed.barrier()  # rank 0 has finished writing best.pt
        if best.is_file():
            load_weights(model, load_checkpoint(best)["model"], best)
        torch.manual_seed(cfg.seed + epoch)
        for module in model.head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        optimisation.crt(cfg)
        return LogMessage("info", f"cRT: re-training a fresh head on the best backbone (epoch {best_epoch}) "
                          f"with class-balanced sampling for {cfg.crt_epochs} epochs", epoch=epoch)
