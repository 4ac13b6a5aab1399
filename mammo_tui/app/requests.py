"""What a face asks the application to do, and what a run answers: plain values, no torch.

The CLI builds a TrainRequest from its flags, the wizard from its screens; `app.launch` runs it
(one run, or a K-fold CV when `cv_folds` >= 2) and the engine reads it. One type for all of them:
the screens never import the engine (torch) to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_tui.prepare import DEMO_SIZE


@dataclass
class TrainRequest:
    # None: with resume, the run's own config; otherwise the decision flow's plan for the dataset
    # ("preset auto") with `overrides` (flags, --set) on top (app.planning fills it in)
    config: Any = None  # TrainConfig
    dataset: Any = None  # DatasetSpec; None with demo=True or resume
    demo: bool = False
    demo_size: float = DEMO_SIZE
    outdir: str = "runs"
    run_name: str | None = None
    resume: str | None = None
    force: bool = False  # resume with a changed config
    # resume after a fix was applied: weights from the best *healthy* checkpoint (healthy.pt), or
    # the initial weights when no epoch was healthy; fresh optimizer, warmup and LR schedule
    restart: bool = False
    skip_bad_rows: bool = False
    preset: str = ""
    origin: str = ""  # where the config came from, e.g. "preset auto: head_only (rule 1 of 4)"
    overrides: dict[str, Any] = field(default_factory=dict)  # the user's keys for a planned config
    parent_run: str = ""  # the run this one was started from (a fix applied to a finished run)
    cv_folds: int = 0  # >= 2: launch a K-fold cross-validation (drivers/cv.py) instead of one run
    folds: int = 0  # > 0: this run trains on fold `fold` (0-based) of `folds` (set by the CV driver)
    fold: int = 0
    # this session's tracking specs ("mlflow:DIR_OR_URI", "tensorboard:DIR"; --track), on top of the
    # config's `track` key; rank 0 sends the run's events there too (tracking/)
    track: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
