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
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_tui.drivers.leaderboard import Entry, best_entry, leaderboard
from mammo_tui.drivers.sweep_spec import (OPTUNA_HINT, QueuedRun, SweepSpec, format_value, from_dict, load_spec,
                                          run_name, spec_changes)
from mammo_tui.errors import ConfigError, MammoError, RunDirError
from mammo_tui.events import Broadcast, EventSink, LogMessage, SweepFinished, SweepRunFinished, SweepRunStarted
from mammo_tui.privacy import SECRET_FILE_ENV, secret_fingerprint
from mammo_tui.rundir import (FINISHED_STATUSES, SWEEP_FILE, create_locked, new_run_name, read_group_manifest,
                              read_summary, remove_husk, safe_run_name, write_json)

STUDY_FILE = "optuna.db"
LOGS_DIR = "logs"
EXIT_OK, EXIT_FAILED, EXIT_COLLAPSED, EXIT_INTERRUPTED = 0, 1, 3, 130  # as engine.trainer's
STOP_WAIT_S = 120.0  # how long a subprocess run gets to save its state after SIGTERM


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


# -- the manifest -----------------------------------------------------------------------------------


def load_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """sweep.json for continuing a sweep: RunDirError naming the file when it is missing or lacks
    what a resume needs (rundir.read_group_manifest is the lenient reader)."""
    from mammo_tui.config import saved_config
    from mammo_tui.rundir import read_run_json

    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        raise RunDirError(f"--resume {sweep_dir}: not a sweep folder (no {SWEEP_FILE})")
    fix = ("It records the sweep's spec, base config and dataset; restore it from a backup, or start a new "
           "sweep with another --run-name.")
    manifest = read_run_json(path, fix)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("spec"), dict) \
            or not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("members"), list):
        raise RunDirError(f"{path} lacks its \"spec\", \"config\" or \"members\"; it was edited or damaged. {fix}")
    saved_config(manifest["config"], source=str(path))
    return manifest


def spec_of(manifest: dict[str, Any], sweep_dir: str | Path) -> SweepSpec:
    return from_dict(manifest["spec"], f"{Path(sweep_dir) / SWEEP_FILE} (spec)")


def run_config(base: dict[str, Any], run: QueuedRun, source: str):
    """The full config of one member run: base (+ [set]) <- the configuration's changes <- seed."""
    from mammo_tui.config import from_mapping

    return from_mapping({**base, **run.changes, "seed": run.seed},
                        source=f"{source}: configuration {run.config_id} (seed {run.seed})")


# -- reproducing a configuration ----------------------------------------------------------------------


def set_value(value: Any) -> str:
    """A value as `--set key=VALUE` reads it back exactly (config.parse_set: TOML, else the text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_value(value)
    try:
        tomllib.loads(f"v = {value}")
    except tomllib.TOMLDecodeError:
        return str(value)  # not TOML: parse_set keeps the text as it is
    return json.dumps(value)  # would parse as something else ("1", "true"): quoted


def preset_args(config: dict[str, Any], preset: str) -> list[str]:
    """`--preset P --set k=v ...`: exactly `config` via `mammo-tui train` (every key that differs
    from the preset); [] when the preset cannot be read (the caller writes a file instead)."""
    from mammo_tui.config import resolve

    try:
        values = resolve(preset).to_dict() if preset else None
    except ConfigError:
        values = None
    if values is None:
        return []
    out = ["--preset", preset]
    for key, value in config.items():
        if key in values and values[key] != value:
            out += ["--set", f"{key}={set_value(value)}"]
    return out


def dataset_args(dataset: dict[str, Any] | None, demo: bool, skip_bad_rows: bool = False) -> list[str]:
    from mammo_tui.data.inputs import description_args

    out = ["--demo"] if demo and not dataset else []
    for key in ("csv", "dicom_root", "images", "group_pattern", "views"):
        if dataset and dataset.get(key):
            out += [f"--{key.replace('_', '-')}", str(dataset[key])]
    if dataset and dataset.get("root"):
        out += description_args(dataset["root"], dataset.get("description"), dataset.get("layout"))
    return out + (["--skip-bad-rows"] if skip_bad_rows else [])


def reproduce_command(sweep_dir: str | Path, entry: Entry, manifest: dict[str, Any] | None = None) -> str:
    """The `mammo-tui train` command line that trains this configuration (its first seed) again."""
    manifest = read_group_manifest(sweep_dir, "sweep") if manifest is None else manifest
    base = manifest.get("config") or {}
    config = {**base, **entry.changes, "seed": entry.seeds[0] if entry.seeds else base.get("seed")}
    summary = read_summary(Path(sweep_dir) / entry.runs[0]) if entry.runs else None
    if summary and isinstance(summary.get("config_history"), list) and summary["config_history"]:
        config = summary["config_history"][0].get("config") or config  # what it launched with, exactly
    args = preset_args(config, str(manifest.get("preset") or "")) or [
        "--preset", str(Path(sweep_dir) / entry.runs[0] / "config.toml")]
    dataset = manifest.get("dataset")
    words = ["mammo-tui", "train", "--no-ui", *dataset_args(dataset, bool(manifest.get("demo")),
                                                           bool(manifest.get("skip_bad_rows"))), *args]
    return " ".join(shlex.quote(w) for w in words)


# -- running ------------------------------------------------------------------------------------------


class _Linked(threading.Event):
    """A run's own stop (an Optuna prune) that is also set whenever the sweep's cancel is."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent
        self.pruned = False

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()


def run_sweep(job: SweepJob, sink: EventSink = lambda e: None, cancel: threading.Event | None = None) -> SweepResult:
    """Train every queued run (keeping finished ones, resuming started ones), then the search."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a sweep cannot run under torchrun: it trains many small runs; spread them over "
                          "GPUs with --gpus 0,1 (one run per GPU) instead")
    return _Sweep(job, sink, cancel or threading.Event()).run()


class _Sweep:
    def __init__(self, job: SweepJob, sink: EventSink, cancel: threading.Event) -> None:
        self.job, self.sink, self.cancel = job, sink, cancel
        self.manifest: dict[str, Any] = {}
        self.lock = None

    # -- set-up --------------------------------------------------------------------------------
    def _locate(self) -> tuple[SweepSpec, Path, dict[str, Any] | None]:
        job = self.job
        if job.resume:
            sweep_dir = Path(job.resume)
            manifest = load_manifest(sweep_dir)
            spec = spec_of(manifest, sweep_dir)
            if job.spec is not None:
                given = job.spec if isinstance(job.spec, SweepSpec) else load_spec(str(job.spec))
                self._refuse_changes(sweep_dir, manifest, given)
            return spec, sweep_dir, manifest
        if job.spec is None:
            raise ConfigError("sweep: give a spec file (or a built-in sweep's name), or --resume SWEEP_DIR")
        spec = job.spec if isinstance(job.spec, SweepSpec) else load_spec(str(job.spec))
        name = safe_run_name(job.run_name) if job.run_name else new_run_name(f"sweep-{spec.name}")
        sweep_dir = Path(job.outdir) / name
        if (sweep_dir / SWEEP_FILE).exists():
            manifest = load_manifest(sweep_dir)
            spec = self._refuse_changes(sweep_dir, manifest, spec)
            return spec, sweep_dir, manifest
        if sweep_dir.is_dir() and any(p.name != ".lock" for p in sweep_dir.iterdir()):
            raise RunDirError(f"{sweep_dir} already exists and is not a sweep; pick another --run-name")
        return spec, sweep_dir, None

    def _refuse_changes(self, sweep_dir: Path, manifest: dict[str, Any], spec: SweepSpec) -> SweepSpec:
        """A re-run must train what the sweep started with; only more search trials may be asked for."""
        old = manifest["spec"]
        new = spec.to_dict()
        changes = spec_changes(old, new)
        more_trials = (len(changes) == 1 and old.get("search") and new.get("search")
                       and changes[0].startswith("[search] trials") and new["search"]["trials"] > old["search"]["trials"])
        if changes and not more_trials:
            raise ConfigError(f"{sweep_dir}: the spec differs from the one this sweep started with "
                              f"({'; '.join(changes)}); its finished runs would not compare with the new ones. "
                              f"Undo the change and re-run (or `mammo-tui sweep --resume {sweep_dir}`), or "
                              "start a new sweep with another --run-name.")
        if more_trials:
            manifest["spec"] = new
        return spec

    def _base(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> None:
        """The base config (planned once: every run of the sweep starts from it) and the dataset."""
        from mammo_tui.config import diff, resolve, saved_config

        job = self.job
        if manifest is not None:
            source = str(self.sweep_dir / SWEEP_FILE)
            self.base = saved_config(manifest["config"], source=source).to_dict()
            self.preset = str(manifest.get("preset") or "")
            if spec.base != "auto" and not job.resume:  # the preset file itself may have been edited
                changed = diff(saved_config(manifest["config"], source=source), resolve(spec.base, spec.set))
                changed.pop("seed", None)
                if changed:
                    listing = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                    raise ConfigError(f"{self.sweep_dir}: base preset {spec.base} now gives another config "
                                      f"({listing}) than the sweep started with. Undo the edit, or start a new "
                                      "sweep with another --run-name.")
            started_with, now = manifest.get("group_key"), secret_fingerprint()
            if started_with and started_with != now:
                raise RunDirError(f"{self.sweep_dir} was started with another patient-digest secret ({started_with}; "
                                  f"yours is {now}), so its remaining runs would split the patients otherwise. "
                                  f"Resume it where it started, or with {SECRET_FILE_ENV} pointing at that secret.")
            from mammo_tui.data.sources import DatasetSpec

            recorded = manifest.get("dataset")
            self.dataset = job.dataset or (DatasetSpec.from_dict(recorded) if isinstance(recorded, dict) else None)
            if job.dataset is not None:  # the dataset moved: runs still to start read it there
                manifest["dataset"] = job.dataset.absolute().to_dict()
            self.demo, self.demo_size = bool(manifest.get("demo")), manifest.get("demo_size")
            self.skip_bad_rows = bool(manifest.get("skip_bad_rows"))
            self.origin = str(manifest.get("origin") or "")
            return
        self.dataset, self.demo, self.skip_bad_rows = job.dataset, job.demo, job.skip_bad_rows
        self.demo_size = job.demo_size
        if not (self.demo or self.dataset):
            raise MammoError("no dataset: pass --demo, --csv FILE [--dicom-root DIR] or --images DIR")
        if spec.base == "auto":  # the decision flow's config for this dataset, planned once
            from mammo_tui.app.planning import resolve_auto
            from mammo_tui.app.requests import TrainRequest

            extra = {"demo_size": self.demo_size} if self.demo_size is not None else {}
            request, _, _ = resolve_auto(TrainRequest(dataset=self.dataset, demo=self.demo, overrides=dict(spec.set),
                                                skip_bad_rows=self.skip_bad_rows, **extra))
            self.base, self.preset, self.origin = request.config.to_dict(), request.preset, request.origin
        else:
            self.base, self.preset = resolve(spec.base, spec.set).to_dict(), spec.base
            self.origin = f"preset {spec.base}"

    def _members(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> list[QueuedRun]:
        """The queue, each configuration checked now, before anything trains.

        A configuration the config rules refuse on this base is skipped and said, not trained: e.g.
        the defenses sweep's freezing depths when the plan trains from scratch (a frozen random
        backbone is no defense). Only when every configuration is refused is the sweep refused."""
        queue, skipped, same = [], {}, {}  # same: a full config (seed aside) -> the first configuration giving it
        refusals: list[str] = []
        for run in spec.queue():
            if run.config_id in skipped:
                continue
            try:
                config = run_config(self.base, run, spec.source).to_dict()
            except ConfigError as exc:  # its message: "SPEC: configuration ID (seed N): why"
                refusals.append(str(exc))
                skipped[run.config_id] = str(exc).split(f"(seed {run.seed}): ", 1)[-1]
                continue
            key = json.dumps({**config, "seed": None}, sort_keys=True)
            first = same.setdefault(key, run.config_id)
            if first != run.config_id:  # e.g. `full` and `weighted_sampler` when the base trains everything
                skipped[run.config_id] = f"the same config as {first} on this base: trained once, as {first}"
                continue
            queue.append(run)
        if refusals and not queue and spec.search is None:
            raise ConfigError(f"every configuration is refused on this base; the first: {refusals[0]}")
        self.skipped = [{"config_id": c, "reason": r} for c, r in skipped.items()]
        for item in self.skipped:
            self.sink(LogMessage("warning", f"configuration {item['config_id']} skipped: {item['reason']}"))
        trials = [m for m in (manifest or {}).get("members", []) if isinstance(m, dict) and "trial" in m]
        self.members = [run.member() for run in queue] + trials
        return queue

    def _write(self) -> None:
        write_json(self.sweep_dir / SWEEP_FILE, self.manifest)

    def _set_status(self, status: str) -> None:
        self.manifest["status"] = status
        self._write()

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> SweepResult:
        spec, self.sweep_dir, manifest = self._locate()
        self.spec = spec
        new = not self.sweep_dir.exists()
        self.lock = create_locked(self.sweep_dir, "sweep folder")
        try:
            return self._run(spec, manifest)
        except BaseException as exc:
            if new and not any(p.name not in (".lock", SWEEP_FILE) for p in self.sweep_dir.iterdir()):
                remove_husk(self.sweep_dir, SWEEP_FILE)  # stopped before any run existed: leave nothing behind
            elif self.manifest and (self.sweep_dir / SWEEP_FILE).exists():
                self._set_status("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            raise
        finally:
            self.lock.release()

    def _run(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> SweepResult:
        self._base(spec, manifest)
        queue = self._members(spec, manifest)
        if spec.search is not None:
            import_optuna()  # before anything trains: a missing extra is one line, not a late failure
        self.manifest = manifest if manifest is not None else {
            "kind": "sweep", "started": time.time(), "spec_file": str(Path(spec.source).resolve()),
            "preset": self.preset, "origin": self.origin, "config": self.base,
            "dataset": None if self.dataset is None else self.dataset.absolute().to_dict(),
            "demo": self.demo, "demo_size": self.demo_size if self.demo else None,
            "skip_bad_rows": self.skip_bad_rows,
            "group_key": secret_fingerprint(),  # which digest secret split the runs (not the secret)
        }
        self.total = spec.planned() - sum(len(spec.seeds) for _ in self.skipped)
        self.manifest.update({"spec": spec.to_dict(), "spec_digest": spec.digest(), "members": self.members,
                              "planned": self.total, "skipped": self.skipped, "status": "running"})
        self.manifest.pop("outcome", None)
        self._write()
        slots = _slots(self.job)
        done = self._parallel(queue, slots) if slots else self._serial(queue)
        if done and spec.search is not None:
            done = self._search(spec)
        if not done:
            self._set_status("interrupted")
            return self._result(EXIT_INTERRUPTED, "interrupted")
        entries = leaderboard(self.sweep_dir, self.manifest)
        best = best_entry(entries)
        self.manifest["outcome"] = best.status if best else "failed"
        self.manifest["finished"] = time.time()
        if best is None:
            self._set_status("failed")
            return self._result(EXIT_FAILED, "failed", entries)
        self._set_status("finished")
        return self._result(EXIT_COLLAPSED if best.status == "collapsed" else EXIT_OK, "finished", entries)

    def _result(self, code: int, status: str, entries: list[Entry] | None = None) -> SweepResult:
        entries = leaderboard(self.sweep_dir, self.manifest) if entries is None else entries
        best = best_entry(entries)
        self.sink(SweepFinished(sweep_dir=str(self.sweep_dir), exit_code=code, status=status,
                                best_config_id=best.config_id if best else "", best_status=best.status if best else "",
                                headline=best.means() if best else {}))
        return SweepResult(self.sweep_dir, code, entries, best)

    def _index(self, run: str) -> int:
        return next(i for i, m in enumerate(self.members, 1) if m["run"] == run)

    def _member(self, run: str) -> dict[str, Any]:
        return self.members[self._index(run) - 1]

    def _state(self, run: QueuedRun) -> tuple[str, dict[str, Any] | None]:
        """("kept", summary) for a finished (or pruned) run, ("resume", None) for a started one,
        else ("new", None)."""
        run_dir = self.sweep_dir / run.run
        summary = read_summary(run_dir)
        if summary and (summary.get("status") in FINISHED_STATUSES or self._member(run.run).get("pruned")):
            return "kept", summary
        return ("resume" if (run_dir / "config.toml").is_file() else "new"), None

    def _started(self, run: QueuedRun, kept: bool) -> None:
        self.sink(SweepRunStarted(index=self._index(run.run), total=self.total, run=run.run, config_id=run.config_id,
                                  seed=run.seed, run_dir=str(self.sweep_dir / run.run), sweep_dir=str(self.sweep_dir),
                                  kept=kept))

    def _finished(self, run: QueuedRun, status: str, summary: dict[str, Any] | None, kept: bool) -> None:
        summary = summary or {}
        if self._member(run.run).get("pruned"):
            status = "pruned"
        self._headline()
        self.sink(SweepRunFinished(index=self._index(run.run), total=self.total, run=run.run,
                                   config_id=run.config_id, seed=run.seed, status=status,
                                   best_metrics=summary.get("best_metrics") or {}, kept=kept,
                                   best_epoch=summary.get("best_epoch"), sweep_dir=str(self.sweep_dir)))

    def _headline(self) -> None:
        """sweep.json's headline and best configuration (the runs browser's row) as of now."""
        best = best_entry(leaderboard(self.sweep_dir, self.manifest))
        if best is not None:
            means = best.means()
            self.manifest["headline"] = {k: means[k] for k in ("kappa_quadratic", "balanced_accuracy_adjusted")}
            self.manifest["best"] = best.config_id
            self._write()

    def _request(self, run: QueuedRun, state: str):
        from mammo_tui.app.requests import TrainRequest

        if state == "resume":  # the run's own config; the sweep's dataset (moved or not)
            request = TrainRequest(resume=str(self.sweep_dir / run.run), dataset=self.dataset)
        else:
            extra = {"demo_size": self.demo_size} if self.demo and self.demo_size is not None else {}
            request = TrainRequest(config=run_config(self.base, run, self.spec.source), dataset=self.dataset,
                                   demo=self.demo, outdir=str(self.sweep_dir), run_name=run.run,
                                   skip_bad_rows=self.skip_bad_rows, preset=self.preset,
                                   origin=f"sweep {self.sweep_dir.name}: {run.config_id}, seed {run.seed}", **extra)
        request.track = list(self.job.track)  # this session's --track: every run tracks there
        return request

    def _train(self, run: QueuedRun, extra_sink: EventSink | None = None,
               stop: threading.Event | None = None) -> str:
        """One member run in this process: its status, or "interrupted" when the sweep is stopped."""
        from mammo_tui.engine.trainer import EXIT_INTERRUPTED as RUN_INTERRUPTED, train

        state, summary = self._state(run)
        self._started(run, state == "kept")
        if state == "kept":
            self._finished(run, summary.get("status", "unknown"), summary, kept=True)
            return str(summary.get("status"))
        if self.cancel.is_set():
            return "interrupted"
        sink = self.sink if extra_sink is None else Broadcast(extra_sink, self.sink)
        result = train(self._request(run, state), sink, stop or self.cancel)
        if result.exit_code == RUN_INTERRUPTED and self.cancel.is_set():
            return "interrupted"
        self._finished(run, result.status, result.summary, kept=False)
        return result.status

    def _serial(self, queue: list[QueuedRun]) -> bool:
        for run in queue:
            if self._train(run) == "interrupted":
                return False
        return True

    # -- parallel subprocesses (--jobs / --gpus) -----------------------------------------------
    def _command(self, run: QueuedRun, state: str) -> list[str]:
        words = [sys.executable, "-m", "mammo_tui", "train", "--no-ui"]
        dataset = None if self.dataset is None else self.dataset.absolute().to_dict()
        if self.demo and self.demo_size is not None and not dataset:
            from mammo_tui.prepare import DEMO_SIZE, ensure_demo_dataset

            if self.demo_size != DEMO_SIZE:  # `train` has no --demo-size: the demo files themselves
                dataset = ensure_demo_dataset(self.demo_size).absolute().to_dict()
        if state == "resume":
            words += ["--resume", str(self.sweep_dir / run.run)]
            words += dataset_args(dataset, False) if dataset else []
        else:
            config = run_config(self.base, run, self.spec.source).to_dict()
            args = preset_args(config, self.preset)
            if not args:  # no readable preset to start from: the whole config as a file
                from mammo_tui.config import to_toml
                from mammo_tui.rundir import atomic_write_text

                path = self.sweep_dir / LOGS_DIR / f"{run.run}.toml"
                atomic_write_text(path, to_toml(config))
                args = ["--preset", str(path)]
            words += dataset_args(dataset, self.demo, self.skip_bad_rows) + args
            words += ["--outdir", str(self.sweep_dir), "--run-name", run.run]
        for spec in self.job.track:
            words += ["--track", spec]
        return words

    def _spawn(self, run: QueuedRun, state: str, gpu: str | None, slots: int) -> tuple[subprocess.Popen, Any]:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:  # N runs on the CPUs: a share of the cores each, not N x all of them
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // slots)))
        env["PYTHONUNBUFFERED"] = "1"
        (self.sweep_dir / LOGS_DIR).mkdir(exist_ok=True)
        log = open(self.sweep_dir / LOGS_DIR / f"{run.run}.log", "a", encoding="utf-8")
        # its own session: a Ctrl-C in the terminal reaches only the sweep, which stops each run once
        proc = subprocess.Popen(self._command(run, state), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return proc, log

    def _parallel(self, queue: list[QueuedRun], slots: list[str | None]) -> bool:
        pending = deque(queue)
        running: dict[int, tuple[subprocess.Popen, Any, QueuedRun]] = {}
        try:
            while pending or running:
                if self.cancel.is_set():
                    self._stop_all(running)
                    return False
                for slot in range(len(slots)):
                    while slot not in running and pending:
                        run = pending.popleft()
                        state, summary = self._state(run)
                        self._started(run, state == "kept")
                        if state == "kept":
                            self._finished(run, summary.get("status", "unknown"), summary, kept=True)
                            continue
                        proc, log = self._spawn(run, state, slots[slot], len(slots))
                        running[slot] = (proc, log, run)
                for slot, (proc, log, run) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    log.close()
                    del running[slot]
                    self._reap(run, code)
                time.sleep(0.2)
        except BaseException:
            self._stop_all(running)
            raise
        return True

    def _reap(self, run: QueuedRun, code: int) -> None:
        summary = read_summary(self.sweep_dir / run.run)
        if code == 2 and not summary:  # refused before it trained (bad dataset, config, weights)
            raise MammoError(f"run {run.run} refused to start: {_last_error(self.sweep_dir / LOGS_DIR / f'{run.run}.log')}")
        status = (summary or {}).get("status") or ("failed" if code else "unknown")
        if code not in (0, 3) and status in ("running", "unknown"):
            status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        self._finished(run, status, summary, kept=False)

    def _stop_all(self, running: dict[int, tuple[subprocess.Popen, Any, QueuedRun]]) -> None:
        """SIGTERM once: each run saves its state as interrupted and exits (resumable)."""
        for proc, _log, _run in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc, log, _run in running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        running.clear()

    # -- an Optuna search ----------------------------------------------------------------------
    def _study(self, search):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's own lines say what happens
        pruner = optuna.pruners.MedianPruner() if search.prune else optuna.pruners.NopPruner()
        study = optuna.create_study(storage=f"sqlite:///{(self.sweep_dir / STUDY_FILE).resolve()}",
                                    study_name="sweep", direction="maximize", pruner=pruner, load_if_exists=True)
        # seeded (reproducible), but offset by the trials already in the study: a resumed search with
        # the first session's seed would draw the first session's values again
        seed = self.spec.seeds[0] + len(study.trials)
        study.sampler = (optuna.samplers.TPESampler(seed=seed) if search.sampler == "tpe"
                         else optuna.samplers.RandomSampler(seed=seed))
        return study

    def _search(self, spec: SweepSpec) -> bool:
        """Trials one after another, each trained on every seed; the objective is the mean over seeds
        of the best epoch's balanced accuracy adjusted (the selection score's first key), and the
        pruner sees each epoch's value. A trial stopped with the sweep stays RUNNING in the study
        and is continued by the next session."""
        import_optuna()  # one line with the pip command when missing
        from optuna.trial import Trial, TrialState

        search = spec.search
        study = self._study(search)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # one process per sweep folder (the lock), so a RUNNING trial is one this sweep left part-way;
            # Trial(study, id) is how Optuna itself re-opens one (FrozenTrial keeps the id as _trial_id)
            if not self._trial(study, Trial(study, frozen._trial_id), frozen.params,
                               set(frozen.intermediate_values)):
                return False
        while sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) < search.trials:
            if self.cancel.is_set():
                return False
            trial = study.ask()
            params = {key: _suggest(trial, key, dim) for key, dim in search.space.items()}
            if not self._trial(study, trial, params):
                return False
        return True

    def _trial(self, study, trial, params: dict[str, Any], reported: set[int] | None = None) -> bool:
        """Train one trial on every seed and tell the study how it went; False when the sweep stops."""
        from optuna.trial import TrialState

        config_id = f"trial-{trial.number}"
        runs = [QueuedRun(run_name(config_id, seed), config_id, seed, dict(params), trial=trial.number)
                for seed in self.spec.seeds]
        try:
            for run in runs:
                run_config(self.base, run, self.spec.source)
        except ConfigError as exc:  # e.g. two balancing keys searched together: this combination is refused
            self.sink(LogMessage("warning", f"{config_id} skipped: {exc}"))
            study.tell(trial, state=TrialState.FAIL)
            return True
        known = {m["run"] for m in self.members}
        self.members += [run.member() for run in runs if run.run not in known]
        self._write()
        stop = _Linked(self.cancel)
        reported = set() if reported is None else reported  # steps the study holds (a continued trial)
        values = []
        for number, run in enumerate(runs):
            def prune_check(event, number=number, run=run):
                if event.type != "epoch" or stop.pruned:
                    return
                # one step per epoch of each seed in turn: trials are compared at the same seed and epoch
                step = number * max(1, int(self.base.get("epochs", 1))) + event.epoch
                if step not in reported:
                    trial.report(float(event.metrics.get("balanced_accuracy_adjusted", 0.0)), step)
                    reported.add(step)
                if trial.should_prune():
                    stop.pruned = True
                    self._member(run.run)["pruned"] = True  # before its SweepRunFinished says so
                    stop.set()

            status = self._train(run, prune_check, stop)
            if status == "interrupted":
                return False
            if stop.pruned:  # this run and the trial's other seeds are not trained further
                for other in runs[number:]:
                    self._member(other.run)["pruned"] = True
                self._write()
                self.sink(LogMessage("info", f"{config_id} pruned (its epochs score below the median "
                                             "of earlier trials)"))
                study.tell(trial, state=TrialState.PRUNED)
                return True
            summary = read_summary(self.sweep_dir / run.run) or {}
            if status not in FINISHED_STATUSES:
                study.tell(trial, state=TrialState.FAIL)
                return True
            values.append(float((summary.get("best_metrics") or {}).get("balanced_accuracy_adjusted", 0.0)))
        study.tell(trial, sum(values) / len(values))
        return True


def _suggest(trial, key: str, dim: Any) -> Any:
    from mammo_tui.config import _TYPES

    if isinstance(dim, list):
        return trial.suggest_categorical(key, dim)
    if _TYPES[key] is int:
        return trial.suggest_int(key, int(dim["low"]), int(dim["high"]), step=int(dim.get("step", 1)),
                                 log=dim["log"])
    return trial.suggest_float(key, float(dim["low"]), float(dim["high"]), step=dim.get("step"), log=dim["log"])


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"the sweep's [search] table needs Optuna, which is not installed: {OPTUNA_HINT}") from None
    return optuna


def _slots(job: SweepJob) -> list[str | None]:
    """One entry per parallel run: a GPU id (CUDA_VISIBLE_DEVICES) or None (CPU); [] = in process."""
    gpus = [g.strip() for g in job.gpus if g.strip()]
    jobs = job.jobs or 1
    if jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more; got {jobs}")
    if not gpus and jobs > 1:
        import torch

        if torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
            gpus = ids or [str(i) for i in range(torch.cuda.device_count())]
    if gpus:
        count = jobs if jobs > 1 else len(gpus)
        return [gpus[i % len(gpus)] for i in range(count)]
    return [None] * jobs if jobs > 1 else []


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log}"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"see {log}"])[-1]


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
