"""What the screens hand each other: the wizard's findings (WizardState) and what to train (TrainJob).

Plain data, no screens and no textual: the wizard steps, the dashboard and the CLI all import it,
so none of them has to import another screen's module to get a type (that made a ring of imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The config step's validation choices. 0: one patient-grouped train/val split; K: K-fold
# cross-validation (one run per fold).
VALIDATION_CHOICES = [("one split", 0), ("3-fold CV", 3), ("5-fold CV", 5), ("10-fold CV", 10)]


@dataclass
class WizardState:
    """What the wizard has learned so far; handed from step to step."""

    spec: Any = None  # DatasetSpec
    demo: bool = False
    demo_size: float | None = None
    report: Any = None  # ValidationReport
    fingerprint: Any = None  # Fingerprint
    plan: Any = None  # planner.Plan
    skip_bad_rows: bool = False
    user_config: Any = None  # a TrainConfig the CLI passed (--preset + flags); wins over the plan
    user_preset: str = ""  # the --preset name behind user_config (recorded with the run)
    user_overrides: dict[str, Any] = field(default_factory=dict)  # flags without --preset: on the plan
    notes: list[str] = field(default_factory=list)
    # the config step's raw field values (widget id -> value): kept when the user goes back,
    # and when a failed or finished run returns to the config step
    edits: dict[str, Any] = field(default_factory=dict)

    @property
    def bad_rows(self) -> int:
        """Problems that removed an image or row and block training (an empty class removes nothing;
        a row without a density label is left out, counted, never blocking)."""
        if self.report is None:
            return 0
        return len(self.report.blocking_problems())


@dataclass
class TrainJob:
    """What to train: the engine's TrainRequest fields, without importing the engine (torch).

    The worker thread turns it into a TrainRequest; the UI thread never imports torch.
    """

    config: Any = None  # TrainConfig
    dataset: Any = None  # DatasetSpec
    demo: bool = False
    demo_size: float | None = None
    outdir: str = "runs"
    run_name: str | None = None
    resume: str | None = None
    force: bool = False
    restart: bool = False  # a fix applied: restart from the best healthy checkpoint
    parent_run: str = ""
    skip_bad_rows: bool = False
    preset: str = ""
    origin: str = ""
    overrides: dict = field(default_factory=dict)  # config None: the plan's config + these keys
    cv_folds: int = 0  # >= 2: a K-fold cross-validation (cv.run_cv) instead of one run
    track: list = field(default_factory=list)  # --track specs (TrainRequest.track)

    def to_request(self):
        from mammo_tui.engine.trainer import TrainRequest

        accepted = {f.name for f in fields(TrainRequest)}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if values["demo_size"] is None:
            values.pop("demo_size")
        return TrainRequest(**{k: v for k, v in values.items() if k in accepted})
