"""A sweep's folder and its manifest, sweep.json: where the sweep is (new, re-run or --resume), the
checks that a re-run trains what the sweep started with, the base config and dataset (planned
once), the queue of member runs with the configurations refused on this base, and sweep.json
written as the sweep goes (its members, status, headline and best configuration)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mammo_tui.drivers.leaderboard import best_entry, leaderboard
from mammo_tui.drivers.sweep_spec import QueuedRun, SweepSpec, from_dict, load_spec, spec_changes
from mammo_tui.errors import ConfigError, MammoError, RunDirError
from mammo_tui.events import EventSink, LogMessage
from mammo_tui.privacy import SECRET_FILE_ENV, secret_fingerprint
from mammo_tui.rundir import (FINISHED_STATUSES, SWEEP_FILE, new_run_name, read_summary, safe_run_name,
                              write_json)


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


class SweepFolder:
    """One sweep's folder, base config, dataset, members and sweep.json (`manifest`, written by
    `write`). job: the drivers.sweep.SweepJob; sink hears the skipped configurations' warnings."""

    def __init__(self, job: Any, sink: EventSink) -> None:
        self.job, self.sink = job, sink
        self.manifest: dict[str, Any] = {}
        self.members: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.total = 0

    # -- where the sweep is ----------------------------------------------------------------------
    def locate(self) -> tuple[SweepSpec, Path, dict[str, Any] | None]:
        """(the spec, the sweep folder, its sweep.json or None for a new sweep); sets sweep_dir."""
        spec, self.sweep_dir, manifest = self._locate()
        self.spec = spec
        return spec, self.sweep_dir, manifest

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

    # -- what it trains --------------------------------------------------------------------------
    def plan_base(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> None:
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

    def queue(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> list[QueuedRun]:
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

    def start(self, spec: SweepSpec, manifest: dict[str, Any] | None) -> None:
        """sweep.json as this session starts: the sweep's own (resumed) or a new one, status running."""
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
        self.write()

    # -- sweep.json and the members --------------------------------------------------------------
    def write(self) -> None:
        write_json(self.sweep_dir / SWEEP_FILE, self.manifest)

    def set_status(self, status: str) -> None:
        self.manifest["status"] = status
        self.write()

    def index(self, run: str) -> int:
        return next(i for i, m in enumerate(self.members, 1) if m["run"] == run)

    def member(self, run: str) -> dict[str, Any]:
        return self.members[self.index(run) - 1]

    def state(self, run: QueuedRun) -> tuple[str, dict[str, Any] | None]:
        """("kept", summary) for a finished (or pruned) run, ("resume", None) for a started one,
        else ("new", None)."""
        run_dir = self.sweep_dir / run.run
        summary = read_summary(run_dir)
        if summary and (summary.get("status") in FINISHED_STATUSES or self.member(run.run).get("pruned")):
            return "kept", summary
        return ("resume" if (run_dir / "config.toml").is_file() else "new"), None

    def headline(self) -> None:
        """sweep.json's headline and best configuration (the runs browser's row) as of now."""
        best = best_entry(leaderboard(self.sweep_dir, self.manifest))
        if best is not None:
            means = best.means()
            self.manifest["headline"] = {k: means[k] for k in ("kappa_quadratic", "balanced_accuracy_adjusted")}
            self.manifest["best"] = best.config_id
            self.write()

    def member_config(self, run: QueuedRun):
        """The full config (a TrainConfig) of one member run of this sweep."""
        return run_config(self.base, run, self.spec.source)
