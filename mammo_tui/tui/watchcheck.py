"""`watch` sanity checks (pure: no textual, no torch): is there a run to watch, and is a run that
says "running" really alive?"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

STALE_AFTER_S = 5 * 60.0  # no event for this long, and no process holds the run's lock: stale


def watch_problem(path: str | Path) -> str | None:
    """Why `watch PATH` has nothing to show (the CLI prints it and exits 2), or None."""
    from mammo_tui.rundir import is_cv_dir
    from mammo_tui.rundir import SUMMARY_FILE, group_kind
    from mammo_tui.runlog import EVENTS_FILE

    def watchable(p: Path) -> bool:  # a run, a cross-validation or a sweep
        return (p / EVENTS_FILE).is_file() or is_cv_dir(p) or group_kind(p) is not None

    path = Path(path)
    if not path.is_dir():
        return f"watch: {path} is not a directory"
    if watchable(path) or (path / SUMMARY_FILE).is_file():
        return None
    runs = sorted(p.name for p in path.iterdir() if p.is_dir() and watchable(p))
    if runs:
        shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        return (f"watch: {path} holds no run itself but {len(runs)} runs ({shown}). Watch one: "
                f"mammo-tui watch {shlex.quote(str(path / runs[0]))}, or browse them: "
                f"mammo-tui --runs-dir {shlex.quote(str(path))} runs")
    return (f"watch: {path} holds no run (no {EVENTS_FILE}). Give the run directory a training "
            "run writes, e.g. runs/<run-name>")


def stale_note(run_dir: str | Path, last_event_time: float, now: float | None = None,
               after_s: float = STALE_AFTER_S) -> str | None:
    """"looks stale: …" when the log has been silent for after_s and no process trains the run
    (kill -9 leaves status running); None while it may be alive."""
    silent = (now if now is not None else time.time()) - last_event_time
    from mammo_tui.rundir import lock_held

    if silent < after_s or lock_held(run_dir):
        return None
    minutes = int(silent // 60)
    return (f"looks stale: no event for {minutes} min and no process holds the run (killed?). "
            f"Continue it: mammo-tui train --resume {shlex.quote(str(run_dir))}")
