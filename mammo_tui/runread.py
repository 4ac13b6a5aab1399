"""The read model of run directories (pure: no torch, no textual, no driver).

One way to read what a run, a cross-validation or a sweep left on disk, for every reader: the
reports, the runs browser and its compare screen, the sweep leaderboard, the CLI's listings.

- `RunRecord`: one run directory (summary.json, events.jsonl, config.toml, dataset.json), each
  file read on first use and leniently: a file that exists but cannot be read is left out with a
  note in `read_notes`. `RunRecord.read` is the strict opening (RunDirError when the folder is not
  a run) that reads every file at once. `info()` is its row in the runs listing, `details()` its
  summary-shaped dict for the runs browser.
- `CVRecord`: a cross-validation directory (cv.json, cv_summary.json, fold-N/ as RunRecords).
- `SweepRecord`: a sweep folder (sweep.json and its member runs as RunRecords).
- `list_runs`: every run under a runs root, a CV or sweep followed by its members.

The layout itself (file names, manifests, locks, writing) is rundir.py's; this module sits on it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_tui.errors import RunDirError
from mammo_tui.events import (CheckpointSaved, EpochMetrics, Event, RunFailed, RunFinished,
                              RunStarted)
from mammo_tui.rundir import (CONFIG_FILE, CV_FILE, CV_SUMMARY_FILE, DATASET_FILE, SUMMARY_FILE, group_kind,
                              is_run_dir, member_dirs, read_group_manifest)
from mammo_tui.runlog import EVENTS_FILE, parse_line, read_events
from mammo_tui.stats import FINISHED, SCALARS, aggregate, worst_status

_UNREAD = object()  # a file not read yet (None is a file that is missing or unreadable)


def read_json_file(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """A JSON object file, leniently: None when missing, unreadable or not an object (a note
    saying so in `notes` when it exists but cannot be read)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if notes is not None:
            notes.append(f"{path.name} cannot be read ({exc.__class__.__name__}); it is left out")
        return None
    return data if isinstance(data, dict) else None


def _read_toml(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({exc.__class__.__name__}); it is left out")
        return {}


# ---------------------------------------------------------------------------------------------
# one run


@dataclass
class RunInfo:
    """A row of the runs listing (`list_runs`, the runs browser, the exit summary)."""

    path: Path
    name: str
    status: str  # healthy | warning | collapsed | interrupted | failed | running | unknown
    preset: str
    arch: str
    epochs_completed: int
    best_epoch: int | None
    kappa_quadratic: float | None  # a cross-validation: the mean over its finished folds
    bal_acc_adj: float | None
    started: float
    # run | cv | sweep | fold / member (a run of the cross-validation / sweep listed just above it)
    kind: str = "run"
    parent: str = ""  # the run this one was started from (a fix applied to a finished run)
    folds: int = 0  # cv: K; sweep: runs planned
    folds_done: int = 0  # cv, sweep: member runs with a result


class RunRecord:
    """One run directory, each file read once, on first use (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.read_notes: list[str] = []  # files that exist but cannot be read
        self._summary: Any = _UNREAD
        self._events: Any = _UNREAD
        self._config: Any = _UNREAD
        self._dataset: Any = _UNREAD

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """Open a run directory for a report: RunDirError when it is missing or not a mammo-tui run;
        every file is read now (so `read_notes` are complete)."""
        path = Path(run_dir).expanduser()
        if not path.exists():
            raise RunDirError(f"{path}: no such run directory. List runs with `mammo-tui runs`.")
        if not path.is_dir():
            raise RunDirError(f"{path}: not a directory; pass a run directory such as runs/<run-name>")
        markers = (SUMMARY_FILE, EVENTS_FILE, CONFIG_FILE)
        if not any((path / name).is_file() for name in markers):
            raise RunDirError(f"{path}: not a mammo-tui run directory (none of {', '.join(markers)} is "
                              "there). Run directories are created by `mammo-tui train` under runs/.")
        record = cls(path)
        _ = record.summary, record.events, record.config_launched, record.dataset  # in this order
        return record

    # -- the files ---------------------------------------------------------------------------------
    @property
    def summary(self) -> dict[str, Any] | None:
        """summary.json (None until the run wrote one, or when it cannot be read)."""
        if self._summary is _UNREAD:
            self._summary = read_json_file(self.path / SUMMARY_FILE, self.read_notes)
        return self._summary

    @property
    def events(self) -> list[Event]:
        """events.jsonl as typed events ([] when there is none or it cannot be read)."""
        if self._events is _UNREAD:
            self._events = []
            if (self.path / EVENTS_FILE).is_file():
                try:
                    self._events = read_events(self.path)
                except OSError as exc:
                    self.read_notes.append(f"{EVENTS_FILE} cannot be read ({exc.strerror or exc}); "
                                           "curves are left out")
        return self._events

    @property
    def config_launched(self) -> dict[str, Any]:
        """config.toml: the config the run was launched with ({} when missing)."""
        if self._config is _UNREAD:
            self._config = _read_toml(self.path / CONFIG_FILE, self.read_notes)
        return self._config

    @property
    def dataset(self) -> dict[str, Any] | None:
        """dataset.json: the fingerprint, validation report (problems) and plan."""
        if self._dataset is _UNREAD:
            self._dataset = read_json_file(self.path / DATASET_FILE, self.read_notes)
        return self._dataset

    @property
    def has_log(self) -> bool:
        """Whether the run started (its event log exists)."""
        return (self.path / EVENTS_FILE).is_file()

    def first_event(self) -> Event | None:
        """The log's first event (RunStarted), reading one line only: cheap on a live run."""
        try:
            with open(self.path / EVENTS_FILE, encoding="utf-8") as handle:
                return parse_line(handle.readline())
        except OSError:
            return None

    # -- what they say ---------------------------------------------------------------------------
    def of_type(self, *kinds: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kinds)]

    @property
    def name(self) -> str:
        return (self.summary or {}).get("run_name") or self.path.name

    @property
    def config(self) -> dict[str, Any]:
        """The config at the end of the run (a recovery may have changed the launched one)."""
        if self.summary and self.summary.get("config"):
            return self.summary["config"]
        started = self.of_type(RunStarted)
        return started[-1].config if started else self.config_launched

    @property
    def config_history(self) -> list[dict[str, Any]]:
        """summary.json's config_history: which config trained which epochs."""
        return (self.summary or {}).get("config_history") or []

    @property
    def epochs(self) -> list[EpochMetrics]:
        """Epoch events, one per epoch: a resume after a kill -9 may repeat one; the last wins."""
        by_epoch = {e.epoch: e for e in self.of_type(EpochMetrics)}
        return [by_epoch[k] for k in sorted(by_epoch)]

    @property
    def status(self) -> str:
        """summary.json's status, else the last terminal event's, else "running"."""
        if self.summary and self.summary.get("status"):
            return self.summary["status"]
        terminal = self.of_type(RunFinished, RunFailed)
        if terminal:
            return "failed" if isinstance(terminal[-1], RunFailed) else terminal[-1].status
        return "running"

    @property
    def best_epoch(self) -> int | None:
        if self.summary is not None:
            return self.summary.get("best_epoch")
        best = [e for e in self.of_type(CheckpointSaved) if e.kind == "best"]
        return best[-1].epoch if best else None

    def metrics_of(self, epoch: int | None) -> dict[str, Any]:
        if epoch is None:
            return {}
        if self.summary and self.summary.get("best_epoch") == epoch and self.summary.get("best_metrics"):
            return self.summary["best_metrics"]
        found = [e for e in self.epochs if e.epoch == epoch]
        return found[0].metrics if found else {}

    # -- views -----------------------------------------------------------------------------------
    def info(self) -> RunInfo:
        """The listing row: from summary.json, falling back to the event log for a live run (the
        log is read only then). Nothing on disk yet reads as "unknown", a log without an end as
        "running"."""
        summary = self.summary or {}
        best = summary.get("best_metrics") or {}
        status = summary.get("status", "unknown")
        epochs = summary.get("epochs_completed", 0)
        started = summary.get("started", 0.0)
        config = summary.get("config") or {}
        if not summary and self.has_log:
            status = "running"
            for event in self.events:  # a log that cannot be read: listed as running, not a crash
                if isinstance(event, RunStarted):
                    config, started = event.config, event.time
                elif isinstance(event, EpochMetrics):
                    epochs = event.epoch
                    best = best or event.metrics
                elif isinstance(event, (RunFinished, RunFailed)):
                    status = getattr(event, "status", "failed")
        return RunInfo(
            path=self.path,
            name=self.path.name,
            status=status,
            preset=summary.get("preset", config.get("preset", "")) or "",
            arch=config.get("arch", ""),
            epochs_completed=int(epochs or 0),
            best_epoch=summary.get("best_epoch"),
            kappa_quadratic=best.get("kappa_quadratic"),
            bal_acc_adj=best.get("balanced_accuracy_adjusted"),
            started=float(started or 0.0),
            parent=Path(summary.get("parent_run") or "").name,
        )

    def details(self) -> dict[str, Any]:
        """summary.json, or what the event log says so far for a run that has none yet (the runs
        browser's and compare screen's shape)."""
        if self.summary:
            return self.summary
        info = self.info()
        details: dict[str, Any] = {"run_name": info.name, "status": info.status, "config": {},
                                   "best_metrics": {}, "best_epoch": None,
                                   "epochs_completed": info.epochs_completed, "preset": info.preset}
        for event in self.events:
            if isinstance(event, RunStarted):
                details["config"] = dict(event.config)
            elif isinstance(event, EpochMetrics):
                details["last_metrics"] = event.metrics
            elif isinstance(event, CheckpointSaved) and event.kind == "best":
                details["best_epoch"] = event.epoch
        best = next((e.metrics for e in self.of_type(EpochMetrics) if e.epoch == details["best_epoch"]), None)
        details["best_metrics"] = best or details.get("last_metrics", {})
        return details


def run_info(run_dir: str | Path) -> RunInfo:
    """The listing row of one run (RunRecord.info)."""
    return RunRecord(run_dir).info()


# ---------------------------------------------------------------------------------------------
# a cross-validation


def fold_dirs(cv_dir: str | Path) -> list[Path]:
    """The fold run directories that exist, in fold order (fold-10 after fold-9)."""
    found = [p for p in Path(cv_dir).glob("fold-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


class CVRecord:
    """A cross-validation directory: cv.json (`manifest`, {} when unreadable), cv_summary.json
    (`summary`, None until every fold finished) and each fold's RunRecord (`folds`, None for a
    fold not started)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.manifest: dict[str, Any] = read_group_manifest(self.path, "cv")
        self.summary: dict[str, Any] | None = read_json_file(self.path / CV_SUMMARY_FILE)
        self._folds: dict[int, RunRecord | None] | None = None

    @classmethod
    def read(cls, cv_dir: str | Path) -> CVRecord:
        """Open a CV for a report: RunDirError when neither cv.json nor cv_summary.json says how
        many folds it has; every fold is read now."""
        record = cls(cv_dir)
        if not record.fold_count:
            raise RunDirError(f"{record.path}: {CV_FILE} and {CV_SUMMARY_FILE} cannot be read; not a usable "
                              "cross-validation directory")
        _ = record.folds
        return record

    @property
    def fold_count(self) -> int:
        return int(self.manifest.get("folds") or (self.summary or {}).get("folds") or 0)

    @property
    def folds(self) -> dict[int, RunRecord | None]:
        if self._folds is None:
            self._folds = {}
            for fold in range(1, self.fold_count + 1):
                try:
                    self._folds[fold] = RunRecord.read(self.path / f"fold-{fold}")
                except RunDirError:  # not started yet (or its folder holds nothing of a run)
                    self._folds[fold] = None
        return self._folds

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def rows(self) -> list[dict[str, Any]]:
        """One row per fold: cv_summary.json's when there is one, else each fold's summary.json."""
        if self.summary:
            return list(self.summary.get("per_fold") or [])
        rows = []
        for fold, run in self.folds.items():
            s = (run.summary if run else None) or {}
            rows.append({"fold": fold, "status": s.get("status"),
                         "best_epoch": s.get("best_epoch"), "best_metrics": s.get("best_metrics") or {}})
        return rows

    @property
    def status(self) -> str:
        if self.summary:
            return self.summary.get("status") or worst_status([r["status"] for r in self.rows()])
        return self.manifest.get("status") or "running"  # running, interrupted or failed

    @property
    def collapsed_folds(self) -> list[int]:
        if self.summary:
            return list(self.summary.get("collapsed_folds") or [])
        return [r["fold"] for r in self.rows() if r["status"] == "collapsed"]

    def details(self) -> dict[str, Any]:
        """The CV in the shape of a run's summary (the runs browser and compare screen): status,
        config, and for metrics the means over the folds that have finished so far."""
        summary = self.summary
        rows = summary["per_fold"] if summary else [
            {"status": s.get("status"), "best_metrics": s.get("best_metrics") or {}}
            for s in (RunRecord(d).summary for d in fold_dirs(self.path)) if s and s.get("status") in FINISHED]
        # recomputed from the per-fold rows (not cv_summary.json's aggregate): a summary written before
        # absent classes were left out of the recall means averaged their zeros in
        agg = aggregate(rows)
        means = {key: agg[key]["mean"] for key in SCALARS}
        means["recall_per_class"] = [stat["mean"] for stat in agg["recall_per_class"].values()]
        folds = self.fold_count
        return {"run_name": self.path.name,
                "status": summary["status"] if summary else self.manifest.get("status", "unknown"),
                "config": self.manifest.get("config") or {}, "preset": self.manifest.get("preset", ""),
                "best_metrics": means if rows else {}, "best_epoch": None,
                "epochs_completed": f"{len(rows)}/{folds} folds", "folds": folds, "folds_done": len(rows),
                "started": self.manifest.get("started", 0.0)}


def cv_details(cv_dir: str | Path) -> dict[str, Any]:
    """CVRecord(cv_dir).details(): a CV in the shape of a run's summary."""
    return CVRecord(cv_dir).details()


# ---------------------------------------------------------------------------------------------
# a sweep


class SweepRecord:
    """A sweep folder: sweep.json (`manifest`, {} when unreadable) and its member runs, each a
    RunRecord read once (`run(name)`)."""

    def __init__(self, path: str | Path, manifest: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.manifest = read_group_manifest(self.path, "sweep") if manifest is None else manifest
        self._runs: dict[str, RunRecord] = {}

    def members(self) -> list[dict[str, Any]]:
        """The manifest's member tables that name their run folder, in queue order."""
        return [m for m in self.manifest.get("members") or []
                if isinstance(m, dict) and isinstance(m.get("run"), str)]

    def run(self, name: str) -> RunRecord:
        if name not in self._runs:
            self._runs[name] = RunRecord(self.path / name)
        return self._runs[name]


# ---------------------------------------------------------------------------------------------
# the runs listing

# A driver's folder (cross-validation, sweep) is read by the keys every manifest shares
# (rundir.py's MANIFEST_FILES comment), so the listing needs no driver.


def group_info(path: str | Path) -> RunInfo:
    """The runs browser's row for a driver's folder: its status, and for metrics its headline or
    the mean over the members that have finished so far."""
    path = Path(path)
    kind = group_kind(path) or "group"
    manifest = read_group_manifest(path)
    summaries = [s for s in (RunRecord(m).summary for m in member_dirs(path, manifest)) if s]
    done = [s for s in summaries if s.get("status") in FINISHED]
    status = manifest.get("outcome") or manifest.get("status") or "unknown"
    if status == "finished":  # an older manifest without its outcome: as healthy as its worst member
        status = worst_status([s["status"] for s in done])
    headline = manifest.get("headline")
    if not isinstance(headline, dict):
        headline = {key: _mean([(s.get("best_metrics") or {}).get(key) for s in done])
                    for key in ("kappa_quadratic", "balanced_accuracy_adjusted")}
    planned = manifest.get("planned", manifest.get("folds"))
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    return RunInfo(path=path, name=path.name, status=str(status), preset=str(manifest.get("preset") or ""),
                   arch=str(config.get("arch", "")), epochs_completed=0, best_epoch=None,
                   kappa_quadratic=headline.get("kappa_quadratic"),
                   bal_acc_adj=headline.get("balanced_accuracy_adjusted"),
                   started=float(manifest.get("started") or 0.0), kind=kind,
                   folds=int(planned) if isinstance(planned, int) else len(summaries), folds_done=len(done))


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(present) / len(present) if present else None


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Runs under root, newest first; a cross-validation or sweep is one row followed by its members."""
    root = Path(root)
    if not root.is_dir():
        return []
    groups: list[list[RunInfo]] = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        kind = group_kind(path)
        if kind:
            members = [run_info(m) for m in member_dirs(path)]
            for member in members:
                member.kind = "fold" if kind == "cv" else "member"
            groups.append([group_info(path), *members])
        elif is_run_dir(path):
            groups.append([run_info(path)])
    groups.sort(key=lambda group: group[0].started, reverse=True)
    return [info for group in groups for info in group]

