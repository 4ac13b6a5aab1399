"""A run's set-up, before its first batch: the dataset read and split, the model built, the run
directory created and locked (or, with --resume, opened, locked and reconciled: resume.py).

The config arrives decided: the caller planned it (app.planning) or the user named a preset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammo_tui.collapse import has_pretrained
from mammo_tui.app.requests import TrainRequest
from mammo_tui.engine import distributed
from mammo_tui.engine.models import build_model
from mammo_tui.engine.resume import ResumeSteps
from mammo_tui.engine.run_record import launch_segment, write_config_toml
from mammo_tui.errors import MammoError, RunDirError
from mammo_tui.events import EventSink, ProgressMeter
from mammo_tui.labels import NUM_CLASSES
from mammo_tui.preprocessing import Preprocessing
from mammo_tui.prepare import ensure_demo_dataset, prepare_dataset
from mammo_tui.privacy import secret_fingerprint
from mammo_tui.rundir import (CHECKPOINT_DIR, CONFIG_FILE, DATASET_FILE, SPLITS_FILE, new_run_name, safe_run_name,
                              write_json)


class RunSetup(ResumeSteps):
    """Everything a run needs before its first batch: config, data, split, run dir."""

    def __init__(self, request: TrainRequest, sink: EventSink | None = None, prepared: Any = None,
                 plan: Any = None):
        """prepared / plan: the dataset already read and the plan made from it (app.planning, for
        "preset auto"); without them the dataset is read here with the request's config."""
        self.request = request
        self.sink = sink  # data progress before the run exists (the scan's decode check)
        self.plan = plan  # planner.Plan when the config is "preset auto"
        self.plan_reasons: list[str] = list(plan.reasons) if plan is not None else []  # kept in config.toml
        self.facts: list[str] = []  # said at start as information (preset auto, weights found)
        self.notes: list[str] = []  # said at start as warnings
        self.changed: dict[str, tuple[Any, Any]] = {}  # config changes accepted on resume
        self.track: list = []  # tracking.spec.TrackSpec: request.track + the config's track (train())
        self.dist = distributed.from_env()
        if request.resume:
            self._resume()
        else:
            self._fresh(prepared)

    def _scan_options(self, config: Any) -> dict[str, Any]:
        """Progress (main process only), workers and the preprocessing for the scan: the scan's one
        decode per image also fills the preprocess cache, so training decodes nothing again."""
        main = self.dist is None or self.dist.is_main
        options: dict[str, Any] = {"progress": ProgressMeter("checking images", self.sink)
                                   if self.sink is not None and main else None}
        if config is not None:
            options["preprocessing"] = Preprocessing.of(config)
            options["workers"] = config.preprocess_workers
        return options

    def _fresh(self, prepared: Any) -> None:
        req = self.request
        if req.config is None:  # the faces plan first (app.planning); the engine trains a decided config
            raise MammoError("no config to train: plan the dataset first (app.planning.resolve_auto) or name a preset")
        self.config = req.config
        if prepared is None:
            spec = ensure_demo_dataset(req.demo_size) if req.demo else req.dataset
            if spec is None:
                raise MammoError("no dataset given: pass --demo, --csv FILE [--dicom-root DIR] or --images DIR")
            prepared = prepare_dataset(spec, skip_bad_rows=req.skip_bad_rows, **self._scan_options(req.config))
        self.prepared = prepared
        self.notes += self.prepared.warnings
        self.preset, self.origin = req.preset, req.origin or (f"preset {req.preset}" if req.preset else "")
        self.parent_run = req.parent_run
        if self.origin.startswith("preset auto"):
            self.facts.append(self.origin)
        records = self.prepared.records
        from mammo_tui.data.split import held_out_split

        self.split = held_out_split(records, self.config.val_fraction, self.config.seed,
                                    folds=req.folds, fold=req.fold)
        self.notes += list(self.split.warnings)
        self.train_idx = np.asarray(self.split.train)
        self.val_idx = np.asarray(self.split.val)
        self.test_idx = np.asarray(self.split.test, dtype=int)
        self.is_demo = req.demo

    def build_model(self) -> None:
        """Before anything is written: a missing-weights error must not leave a stray run dir."""
        from mammo_tui.planner import config_warnings
        from mammo_tui.weights import weights_status

        cfg = self.config
        status = self.plan.weights if self.plan is not None else weights_status(cfg.arch, cfg.weights, cfg.pretrained)
        if cfg.pretrained and not cfg.weights and not status.available and self.is_demo and cfg.freeze == "none":
            # an explicit demo preset on a box without cached weights: from scratch, recorded in the
            # config so suggestions never propose freezing a random backbone
            self.config = cfg = cfg.replace(pretrained=False)
        if status.available:
            self.facts.append(status.detail)
        elif status.source == "none":  # wanted but missing: say why and how to get them
            self.notes.append(f"{status.detail}. Training from scratch.")
        else:
            self.facts.append(f"training from scratch (pretrained = false): {cfg.arch} starts from random weights")
        fp = self.prepared.fingerprint
        self.notes += config_warnings(cfg, fp.n_images, fp.imbalance_ratio, status)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.arch, NUM_CLASSES, cfg.pretrained, cfg.weights,
                                 allow_partial=cfg.allow_partial_weights)
        if self.model.weights_note:
            self.facts.append(self.model.weights_note)
        self.pretrained_used = has_pretrained(cfg)

    def materialise(self) -> None:
        """Create the run directory; only after data, split and model are known to be good."""
        if self.request.resume:
            return
        if not self.dist:
            self._create_run_dir()
            return
        # rank 0 creates it and tells the others where (or why it could not)
        error = ""
        if self.dist.is_main:
            try:
                self._create_run_dir()
            except MammoError as exc:
                error = str(exc)
        run_dir, error = distributed.broadcast((str(getattr(self, "run_dir", "")), error))
        if error:
            raise RunDirError(error)
        self.run_dir = Path(run_dir)

    def _create_run_dir(self) -> None:
        req, records = self.request, self.prepared.records
        from mammo_tui.data.split import write_splits_csv

        name = safe_run_name(req.run_name) if req.run_name else new_run_name(self.preset or "run")
        self.run_dir = Path(req.outdir) / name
        suffix = 2
        while not req.run_name and self.run_dir.exists():  # two automatic names in one second
            self.run_dir, suffix = Path(req.outdir) / f"{name}-{suffix}", suffix + 1
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise RunDirError(f"run directory {self.run_dir} already exists; pick another --run-name "
                              f"or continue it with --resume {self.run_dir}")
        from mammo_tui.rundir import lock_run_dir

        try:
            (self.run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot write the run directory {self.run_dir}: {exc.strerror or exc}. "
                              "Pass --outdir on a writable disk.") from None
        self.lock = lock_run_dir(self.run_dir)
        if (self.run_dir / CONFIG_FILE).exists():  # another process created it just now
            self.release_lock()
            raise RunDirError(f"run directory {self.run_dir} already exists; pick another --run-name "
                              f"or continue it with --resume {self.run_dir}")
        try:
            write_config_toml(self.run_dir, self.config, [launch_segment(self.config, self.origin)],
                              self.plan_reasons)
            write_splits_csv(self.run_dir / SPLITS_FILE, records, self.split)
            write_json(self.run_dir / DATASET_FILE, {
                "spec": self.prepared.spec.absolute().to_dict(), "demo": req.demo, "preset": self.preset,
                "origin": self.origin, "parent_run": req.parent_run,
                "plan": self.plan.to_dict() if self.plan is not None else None,
                "skip_bad_rows": req.skip_bad_rows,
                "group_key": secret_fingerprint(),  # which patient-digest secret made splits.csv
                # a CV's fold: which fold of how many, and the CV's config (cv --resume checks cv.json)
                "cv": {"folds": req.folds, "fold": req.fold + 1, "config": req.config.to_dict()
                       if req.config is not None else None} if req.folds else None,
                "fingerprint": self.prepared.fingerprint.to_dict(),
                "report": self.prepared.report.to_dict(),
            })
        except OSError as exc:
            self.release_lock()
            raise RunDirError(f"cannot write the run directory {self.run_dir}: {exc.strerror or exc}. "
                              "Pass --outdir on a writable disk.") from None
        except BaseException:
            self.release_lock()
            raise

    def _resume(self) -> None:
        req = self.request
        self.run_dir = Path(req.resume)
        from mammo_tui.rundir import group_kind, lock_run_dir

        kind = group_kind(self.run_dir)
        if kind:  # a driver's folder holds runs, it is not one
            what = {"cv": "a cross-validation", "sweep": "a sweep"}.get(kind, f"a {kind}")
            raise RunDirError(f"--resume {self.run_dir}: this is {what}; continue it with "
                              f"`mammo-tui {kind} --resume {self.run_dir}`")
        cv_dir = self.run_dir.expanduser().absolute().parent
        if not req.folds and re.fullmatch(r"fold-\d+", self.run_dir.name) and group_kind(cv_dir) == "cv":
            # the CV resumes its own folds (req.folds set); one resumed alone leaves cv_summary.json stale
            raise RunDirError(f"--resume {self.run_dir}: this is a fold of the cross-validation {cv_dir}; "
                              f"continue the cross-validation with `mammo-tui cv --resume {cv_dir}`")
        last = self.run_dir / CHECKPOINT_DIR / "last.pt"
        if not (self.run_dir / DATASET_FILE).exists() or not ((self.run_dir / CONFIG_FILE).exists() or last.is_file()):
            raise RunDirError(f"--resume {self.run_dir}: not a mammo-tui run directory "
                              f"(no {CONFIG_FILE} / {DATASET_FILE})")
        # one process per run directory: a second --resume would write every epoch twice
        self.lock = self._lock_on_rank_0(lock_run_dir)
        try:
            info = self._resume_info()
            self._resume_config(last)
            self._resume_data(info)
        except BaseException:
            self.release_lock()
            raise

    def _lock_on_rank_0(self, lock_run_dir) -> Any:
        """The run directory's lock, taken by rank 0 under torchrun; a refusal stops every rank
        (the others would otherwise wait forever at the first collective)."""
        if self.dist is None:
            return lock_run_dir(self.run_dir)
        lock, error = None, ""
        if self.dist.is_main:
            try:
                lock = lock_run_dir(self.run_dir)
            except MammoError as exc:
                error = str(exc)
        error = distributed.broadcast(error)
        if error:
            raise RunDirError(error)
        return lock

    def release_lock(self) -> None:
        lock, self.lock = getattr(self, "lock", None), None
        if lock is not None:
            lock.release()
