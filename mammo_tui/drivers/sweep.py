"""Sweeps: which defenses work on this dataset? Many configurations x seeds, one leaderboard.

One folder per sweep: `sweep.json` (the spec, the base config, the dataset, the queue of member
runs and where it stands: enough to resume it), one ordinary run directory per member
(`<config_id>-seed<seed>`: watch, report, eval and `train --resume` work on each), `optuna.db`
for a [search] (the Optuna study, so a resumed search continues it) and `logs/` for runs trained
as subprocesses (--jobs / --gpus).

Queue order is seed-major: every configuration with the first seed, then every one with the
second, ...: a sweep stopped part-way has already ranked every configuration once. Search
trials come after the variants / grid, one trial (all its seeds) at a time, because Optuna picks
the next trial from the finished ones.

The caller's sink hears every member run's own events (in-process runs), wrapped in
SweepRunStarted / SweepRunFinished, then SweepFinished. Runs trained as subprocesses send only
the sweep events (their own events are in their events.jsonl).

This module runs the sweep; its parts are in their own modules: sweep_spec.py (the spec),
sweep_manifest.py (the folder, the base config, the queue and sweep.json), sweep_pool.py (the
subprocesses of --jobs / --gpus), sweep_search.py (the Optuna search) and sweep_commands.py (the
command lines: reproduce a configuration, start a member run).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_tui.drivers.leaderboard import Entry, best_entry, leaderboard
from mammo_tui.drivers.sweep_commands import LOGS_DIR, dataset_args, preset_args, reproduce_command, set_value
from mammo_tui.drivers.sweep_manifest import SweepFolder, load_manifest, run_config, spec_of
from mammo_tui.drivers.sweep_pool import SubprocessPool, slots
from mammo_tui.drivers.sweep_search import STUDY_FILE, OptunaSearch, import_optuna
from mammo_tui.drivers.sweep_spec import QueuedRun, SweepSpec, format_value
from mammo_tui.errors import ConfigError
from mammo_tui.events import Broadcast, EventSink, SweepFinished, SweepRunFinished, SweepRunStarted
from mammo_tui.exitcodes import EXIT_COLLAPSED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from mammo_tui.rundir import SWEEP_FILE, create_locked, remove_husk

# what callers import from here (the CLI, the app layer, sweep_report.py, the tests); the parts'
# own names are re-exported so that "the sweep" stays one import
__all__ = ["LOGS_DIR", "STUDY_FILE", "SweepJob", "SweepResult", "dataset_args", "format_queue", "import_optuna",
           "load_manifest", "preset_args", "reproduce_command", "run_config", "run_sweep", "set_value", "spec_of"]


@dataclass
class SweepJob:
    """Everything run_sweep needs (plain values: the TUI builds one without importing torch).

    spec: a spec file, a built-in sweep's name or a parsed SweepSpec; None with resume (the
    sweep's own, from sweep.json). dataset: a DatasetSpec (with resume: the dataset moved there).
    jobs / gpus: more than one job, or any gpus, trains the variant / grid runs as parallel
    `mammo-tui train --no-ui` subprocesses, one per slot (CUDA_VISIBLE_DEVICES=<gpu> each)."""

    spec: Any = None
    dataset: Any = None
    demo: bool = False
    demo_size: float | None = None
    skip_bad_rows: bool = False
    outdir: str = "runs"
    run_name: str | None = None
    resume: str | None = None
    jobs: int = 1
    gpus: list[str] = field(default_factory=list)
    track: list[str] = field(default_factory=list)  # tracking sinks, passed to each run


@dataclass
class SweepResult:
    sweep_dir: Path
    exit_code: int
    entries: list[Entry]  # the leaderboard at the end
    best: Entry | None


def run_sweep(job: SweepJob, sink: EventSink = lambda e: None, cancel: threading.Event | None = None) -> SweepResult:
    """Train every queued run (keeping finished ones, resuming started ones), then the search."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a sweep cannot run under torchrun: it trains many small runs; spread them over "
                          "GPUs with --gpus 0,1 (one run per GPU) instead")
    return _Sweep(job, sink, cancel or threading.Event()).run()


class _Sweep:
    """One session of a sweep: the folder locked, the queue trained (in process, or over the
    subprocess pool), then the search; the sweep events to the sink."""

    def __init__(self, job: SweepJob, sink: EventSink, cancel: threading.Event) -> None:
        self.job, self.sink, self.cancel = job, sink, cancel
        self.folder = SweepFolder(job, sink)
        self.lock = None

    def run(self) -> SweepResult:
        folder = self.folder
        spec, sweep_dir, manifest = folder.locate()
        new = not sweep_dir.exists()
        self.lock = create_locked(sweep_dir, "sweep folder")
        try:
            return self._run(spec, manifest)
        except BaseException as exc:
            if new and not any(p.name not in (".lock", SWEEP_FILE) for p in sweep_dir.iterdir()):
                remove_husk(sweep_dir, SWEEP_FILE)  # stopped before any run existed: leave nothing behind
            elif folder.manifest and (sweep_dir / SWEEP_FILE).exists():
                folder.set_status("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            raise
        finally:
            self.lock.release()

    def _run(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> SweepResult:
        folder = self.folder
        folder.plan_base(spec, manifest)
        queue = folder.queue(spec, manifest)
        if spec.search is not None:
            import_optuna()  # before anything trains: a missing extra is one line, not a late failure
        folder.start(spec, manifest)
        pool = slots(self.job)
        done = SubprocessPool(self, pool).run(queue) if pool else self._serial(queue)
        if done and spec.search is not None:
            done = OptunaSearch(self).run(spec)
        if not done:
            folder.set_status("interrupted")
            return self._result(EXIT_INTERRUPTED, "interrupted")
        entries = leaderboard(folder.sweep_dir, folder.manifest)
        best = best_entry(entries)
        folder.manifest["outcome"] = best.status if best else "failed"
        folder.manifest["finished"] = time.time()
        if best is None:
            folder.set_status("failed")
            return self._result(EXIT_FAILED, "failed", entries)
        folder.set_status("finished")
        return self._result(EXIT_COLLAPSED if best.status == "collapsed" else EXIT_OK, "finished", entries)

    def _result(self, code: int, status: str, entries: list[Entry] | None = None) -> SweepResult:
        sweep_dir = self.folder.sweep_dir
        entries = leaderboard(sweep_dir, self.folder.manifest) if entries is None else entries
        best = best_entry(entries)
        self.sink(SweepFinished(sweep_dir=str(sweep_dir), exit_code=code, status=status,
                                best_config_id=best.config_id if best else "", best_status=best.status if best else "",
                                headline=best.means() if best else {}))
        return SweepResult(sweep_dir, code, entries, best)

    # -- the sweep events around each member run -------------------------------------------------
    def started(self, run: QueuedRun, kept: bool) -> None:
        folder = self.folder
        self.sink(SweepRunStarted(index=folder.index(run.run), total=folder.total, run=run.run,
                                  config_id=run.config_id, seed=run.seed, run_dir=str(folder.sweep_dir / run.run),
                                  sweep_dir=str(folder.sweep_dir), kept=kept))

    def finished(self, run: QueuedRun, status: str, summary: dict[str, Any] | None, kept: bool) -> None:
        folder = self.folder
        summary = summary or {}
        if folder.member(run.run).get("pruned"):
            status = "pruned"
        folder.headline()
        self.sink(SweepRunFinished(index=folder.index(run.run), total=folder.total, run=run.run,
                                   config_id=run.config_id, seed=run.seed, status=status,
                                   best_metrics=summary.get("best_metrics") or {}, kept=kept,
                                   best_epoch=summary.get("best_epoch"), sweep_dir=str(folder.sweep_dir)))

    # -- member runs in this process -----------------------------------------------------------
    def _request(self, run: QueuedRun, state: str):
        from mammo_tui.app.requests import TrainRequest

        folder = self.folder
        if state == "resume":  # the run's own config; the sweep's dataset (moved or not)
            request = TrainRequest(resume=str(folder.sweep_dir / run.run), dataset=folder.dataset)
        else:
            extra = {"demo_size": folder.demo_size} if folder.demo and folder.demo_size is not None else {}
            request = TrainRequest(config=folder.member_config(run), dataset=folder.dataset,
                                   demo=folder.demo, outdir=str(folder.sweep_dir), run_name=run.run,
                                   skip_bad_rows=folder.skip_bad_rows, preset=folder.preset,
                                   origin=f"sweep {folder.sweep_dir.name}: {run.config_id}, seed {run.seed}", **extra)
        request.track = list(self.job.track)  # this session's --track: every run tracks there
        return request

    def train(self, run: QueuedRun, extra_sink: EventSink | None = None,
              stop: threading.Event | None = None) -> str:
        """One member run in this process: its status, or "interrupted" when the sweep is stopped."""
        from mammo_tui.engine.trainer import train

        state, summary = self.folder.state(run)
        self.started(run, state == "kept")
        if state == "kept":
            self.finished(run, summary.get("status", "unknown"), summary, kept=True)
            return str(summary.get("status"))
        if self.cancel.is_set():
            return "interrupted"
        sink = self.sink if extra_sink is None else Broadcast(extra_sink, self.sink)
        result = train(self._request(run, state), sink, stop or self.cancel)
        if result.exit_code == EXIT_INTERRUPTED and self.cancel.is_set():
            return "interrupted"
        self.finished(run, result.status, result.summary, kept=False)
        return result.status

    def _serial(self, queue: list[QueuedRun]) -> bool:
        for run in queue:
            if self.train(run) == "interrupted":
                return False
        return True


def format_queue(spec: SweepSpec) -> str:
    """--dry-run: the runs in the order they train."""
    queue = spec.queue()
    lines = [f"{len(queue)} runs ({len(spec.configurations())} configurations x {len(spec.seeds)} seeds), "
             f"base {spec.base}, seed-major order:"]
    for index, run in enumerate(queue, 1):
        changes = " ".join(f"{k}={format_value(v)}" for k, v in run.changes.items()) or "(base)"
        lines.append(f"{index:>4}  {run.run}  {changes}")
    if spec.search:
        space = ", ".join(spec.search.space)
        lines.append(f"then an Optuna search: {spec.search.trials} trials x {len(spec.seeds)} seeds over {space} "
                     f"({spec.search.sampler} sampler{', median pruning' if spec.search.prune else ''})")
    if spec.set:
        lines.append("every run: " + " ".join(f"{k}={format_value(v)}" for k, v in spec.set.items()))
    return "\n".join(lines)
