"""Where a command may write its output file (`predict --out`, `report --out`): never over a file
the command reads, never over a run's own records, never over another existing file without
--force, and a default name that never replaces the previous output (pure: no torch).

`predict RUN scan.png --out scan.png` used to turn the mammogram into CSV text, `--out labels.csv`
to replace the label table, `report RUN --out RUN/checkpoints/best.pt` to destroy the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from mammo_tui.errors import MammoError
from mammo_tui.rundir import (CHECKPOINT_DIR, CONFIG_FILE, CV_FILE, CV_SUMMARY_FILE, DATASET_FILE, LOCK_FILE,
                              SPLITS_FILE, SUMMARY_FILE, SWEEP_FILE, is_run_dir)
from mammo_tui.runlog import EVENTS_FILE

# what a run, a CV or a sweep folder records about itself: written by the engine and the drivers only
RUN_RECORDS = {CONFIG_FILE, SUMMARY_FILE, SPLITS_FILE, DATASET_FILE, EVENTS_FILE, LOCK_FILE, CV_FILE,
               CV_SUMMARY_FILE, SWEEP_FILE}


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _run_record(target: Path) -> bool:
    """A run's own file: a record in a run / CV / sweep folder, or anything under its checkpoints/."""
    folder = target.parent
    if target.name in RUN_RECORDS and (is_run_dir(folder) or (folder / CV_FILE).is_file()
                                       or (folder / SWEEP_FILE).is_file()):
        return True
    return any(parent.name == CHECKPOINT_DIR and is_run_dir(parent.parent) for parent in target.parents)


def check_output(target: str | Path, *, inputs: Iterable[str | Path] = (), force: bool = False,
                 replaceable: str | Path | None = None, flag: str = "--out") -> Path:
    """`target`, or MammoError naming why it may not be written. `replaceable`: the one existing
    file this command writes every time (a run's report.md) and may replace without --force."""
    path = Path(target).expanduser()
    if path.is_dir():
        raise MammoError(f"{flag} {path} is a folder: name the file to write")
    for given in inputs:
        if _same(path, Path(given).expanduser()):
            raise MammoError(f"{flag} {path} is a file this command reads; write the output elsewhere")
    if _run_record(path.absolute()):
        raise MammoError(f"{flag} {path} is one of a run's own files; write the output elsewhere")
    if path.exists() and not force and not (replaceable is not None and _same(path, Path(replaceable))):
        raise MammoError(f"{flag} {path} exists; add --force to replace it, or name another file")
    return path


def next_free(path: Path) -> Path:
    """`path`, or the first of name-2.ext, name-3.ext, ... that does not exist yet: a default output
    never replaces the previous one."""
    if not path.exists():
        return path
    number = 2
    while (candidate := path.with_name(f"{path.stem}-{number}{path.suffix}")).exists():
        number += 1
    return candidate
