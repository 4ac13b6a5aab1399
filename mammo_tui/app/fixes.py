"""Applying the collapse check's suggestions: to a config, to a request, or as a command line.

The dashboard applies a fix by launching the request built here; a read-only dashboard (watch)
prints the command built here instead. The same change either way.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from mammo_tui.app.requests import TrainRequest
from mammo_tui.config import MORE_EPOCHS


def changes_of(chosen: list[dict[str, Any]]) -> dict[str, Any]:
    """The config keys the chosen suggestions set (a later suggestion wins on the same key)."""
    from mammo_tui.collapse import suggestion_changes

    return {k: v for s in chosen for k, v in suggestion_changes(s).items()}


def apply_fixes(config: Any, chosen: list[dict[str, Any]]) -> Any:
    """The config with the suggestions applied (ConfigError when one does not fit it)."""
    from mammo_tui.collapse import apply_suggestion

    for suggestion in chosen:
        config = apply_suggestion(config, suggestion)
    return config


def fixed_request(request: TrainRequest, config: Any, *, run_dir: str | None, fresh: bool,
                  parent: str = "") -> TrainRequest:
    """What to launch to apply a fix. fresh: a new run (or CV) from the initial weights that records
    `parent` as the run it came from; else the run restarts from its best healthy checkpoint with
    the changed config (a --force resume with a restart)."""
    if fresh:
        return dataclasses.replace(request, config=config, resume=None, force=False, run_name=None, restart=False,
                                   parent_run=parent,
                                   origin=f"fix applied to {parent}" if parent else request.origin)
    return dataclasses.replace(request, config=config, resume=str(run_dir), force=True, restart=True)


def apply_command(chosen: list[dict[str, Any]], run_dir: str | None, cv_folds: int = 0,
                  finished_at: int | None = None) -> str:
    """The shell command that applies suggestions to a run (or, for a CV, a new CV with them).
    `finished_at`: the run trained all its epochs (this many): the command trains MORE_EPOCHS more
    with the change, since a changed config with no epoch left to train is refused."""
    changes = changes_of(chosen)
    if finished_at is not None and cv_folds == 0:
        changes.setdefault("epochs", finished_at + MORE_EPOCHS)
    sets = " ".join(f"--set {k}={v}" for k, v in changes.items())
    if cv_folds:  # every fold must train the same way: a new cross-validation
        return f"mammo-tui cv --folds {cv_folds} <your dataset flags> {sets}"
    return f"mammo-tui train --resume {shlex.quote(run_dir or 'RUN_DIR')} {sets} --force"


def resume_command(run_dir: str | None, cv_dir: str | None = None) -> str:
    """How to continue a stopped run (or cross-validation)."""
    if cv_dir:
        return f"mammo-tui cv --resume {cv_dir}"
    return f"mammo-tui train --resume {run_dir or 'RUN_DIR'}"

