"""What the screens hand each other: the wizard's findings (WizardState). What to train is an
app.requests.TrainRequest, the same type the CLI builds.

Plain data, no screens and no textual: the wizard steps, the dashboard and the CLI all import it,
so none of them has to import another screen's module to get a type (that made a ring of imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
