"""Resume reconciliation: what a run directory says against what the user asks now.

`--resume RUN` reads the run's dataset record, compares config.toml and checkpoints/last.pt with
the flags (refusing a change without --force, naming it), re-reads the recorded dataset (or a
relocated one: --resume RUN --csv NEW.csv) and puts every image back on its recorded side of the
split. The run set-up (run_setup.RunSetup) mixes these steps in; the trainer never sees them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mammo_tui import config as config_mod
from mammo_tui.config import MORE_EPOCHS, TrainConfig
from mammo_tui.engine.checkpoint import load_checkpoint
from mammo_tui.engine.run_record import launch_segment, set_toml_value, write_config_toml
from mammo_tui.errors import ConfigError, MammoError, RunDirError
from mammo_tui.prepare import prepare_dataset
from mammo_tui.rundir import CONFIG_FILE, DATASET_FILE, SPLITS_FILE


class ResumeSteps:
    """The resume half of the run set-up; `RunSetup` holds the state these steps fill in
    (run_dir, request, dist, notes, config, changed, prepared, the split's indices)."""

    def _resume_info(self) -> dict[str, Any]:
        """dataset.json: what the run trains on and how it was planned."""
        from mammo_tui.rundir import read_run_json

        info = read_run_json(self.run_dir / DATASET_FILE, "It records the dataset of the run; without it "
                             "the run cannot be resumed (start a new run, or restore the file from a backup).")
        if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
            raise RunDirError(f"{self.run_dir / DATASET_FILE} has no dataset \"spec\"; it was edited or "
                              "damaged. Restore it, or start a new run.")
        self.preset, self.origin = info.get("preset", ""), info.get("origin", "")
        self.plan_reasons = list((info.get("plan") or {}).get("reasons") or [])
        self.parent_run = info.get("parent_run", "")
        self.is_demo = bool(info.get("demo"))
        return info

    def _resume_config(self, last: Path) -> None:
        """The config to train on. The run trained with last.pt's config; config.toml differing
        from it is a user edit, unless config.toml records a segment (a change from a later epoch)
        that last.pt does not hold yet: the trainer wrote it and stopped before the next epoch
        ended. Edits and flags / --set are refused with the difference named, or applied under
        --force (restore() records them as a config change)."""
        file_cfg, recorded = self._read_config_toml(last)
        state = self._last_state(last)
        base = file_cfg if state is None else config_mod.saved_config(state["config"], source=str(last))
        edited = config_mod.diff(base, file_cfg)
        ahead = bool(state) and len(recorded) > len(state.get("segments") or [1]) and recorded[-1] > int(state["epoch"])
        if ahead and edited:
            self.notes.append(f"{CONFIG_FILE} holds a change from epoch {recorded[-1]} that no checkpoint has "
                              "yet (the run stopped before that epoch ended); continuing with it")
        req = self.request
        if req.config is not None:
            self.config = req.config
        else:  # flags / --set on top of config.toml
            self.config = config_mod.from_mapping({**file_cfg.to_dict(), **req.overrides}, source="--set")
        self.changed = changed = config_mod.diff(base, self.config)
        refused = config_mod.diff(file_cfg if ahead else base, self.config)
        if refused and not req.force:
            since = f"checkpoints/last.pt, epoch {state['epoch']}" if state else CONFIG_FILE
            listing = "; ".join(f"{k}: {a!r} -> {b!r} ({self._source(k, edited if not ahead else {})})"
                                for k, (a, b) in refused.items())
            raise ConfigError(f"--resume {self.run_dir}: the config differs from the one the run trained with "
                              f"({since}): {listing}. Resume with the run's values (undo the edit, drop the "
                              "flag), or add --force to train on with the new ones (recorded as a config change).")
        if not changed and state is not None:
            self._refuse_a_finished_run(int(state["epoch"]))
        if changed and state is not None and int(state["epoch"]) >= self.config.epochs:
            # nothing left to train: recording the change (config.toml, config_history) would say
            # that something trained with it
            done = int(state["epoch"])
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"--resume {self.run_dir}: the run has trained {done} of its {self.config.epochs} "
                              f"epochs, so the changed config ({listing}) would train no epoch. Add "
                              f"--set epochs={done + MORE_EPOCHS} (any number above {done}) to train on with it.")
        if changed:
            self.notes.append("resumed with a changed config: " +
                              ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        if self.dist is not None and not self.dist.is_main:
            return  # rank 0 writes the run directory
        if state is None and (changed or not (self.run_dir / CONFIG_FILE).is_file()):
            # no epoch finished: the new config is the launch config (restore() has nothing to record)
            write_config_toml(self.run_dir, self.config, [launch_segment(self.config, self.origin)], self.plan_reasons)
        elif not (self.run_dir / CONFIG_FILE).exists():
            write_config_toml(self.run_dir, self.config, list(state.get("segments") or
                              [launch_segment(state["config"], self.origin)]), self.plan_reasons)
            self.notes.append(f"{CONFIG_FILE} was missing; rewritten from checkpoints/last.pt")
        if self.config.track != file_cfg.track:  # no config change (NOT_TRAINING_KEYS), but kept for the next --resume
            set_toml_value(self.run_dir / CONFIG_FILE, "track", self.config.track)

    def _refuse_a_finished_run(self, done: int) -> None:
        """A plain --resume continues a stopped run. One that finished early (an early stop, a stop
        on collapse) has epochs left that it chose not to train: not reopened without being asked.
        (One that trained all its epochs trains nothing on a plain --resume.)"""
        from mammo_tui.rundir import read_summary
        from mammo_tui.stats import FINISHED

        status = (read_summary(self.run_dir) or {}).get("status")
        if status in FINISHED and done < self.config.epochs:
            raise ConfigError(f"--resume {self.run_dir}: the run has finished ({status}; it stopped after {done} of "
                              f"{self.config.epochs} epochs, an early stop or a stop on collapse); --resume continues "
                              "a stopped run. To train the epochs left anyway: --set early_stop_patience=0 --force")

    def _source(self, key: str, edited: dict[str, Any]) -> str:
        """Where a refused change came from, for the message."""
        if key in edited and key not in self.request.overrides:
            return f"edited in {CONFIG_FILE}"
        return "flag / --set" if self.request.config is None else "--preset / flags"

    def _read_config_toml(self, last: Path) -> tuple[TrainConfig, list[int]]:
        """config.toml's values and the first epochs of the segments its comments record. A missing
        one is taken from last.pt (and rewritten); an unreadable one is refused, named."""
        import re
        import tomllib

        from mammo_tui.rundir import file_problem

        path = self.run_dir / CONFIG_FILE
        if not path.exists() and last.is_file():
            return config_mod.saved_config(load_checkpoint(last)["config"], source=str(last)), []
        try:
            text = path.read_text(encoding="utf-8")
            values = tomllib.loads(text)
        except OSError as exc:
            raise file_problem(path, exc, "read") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the edit, or delete the file: "
                              "--resume then rewrites it from checkpoints/last.pt.") from None
        recorded = [int(n) for n in re.findall(r"^# From epoch (\d+):", text, flags=re.M)]
        return config_mod.saved_config(values, source=str(path)), recorded

    @staticmethod
    def _last_state(last: Path) -> dict[str, Any] | None:
        if not last.is_file():
            return None
        try:
            state = load_checkpoint(last)
        except MammoError:
            return None  # restore() decides what a damaged last.pt means
        return state if isinstance(state.get("config"), dict) and "epoch" in state else None

    def _resume_data(self, info: dict[str, Any]) -> None:
        """The recorded dataset (or a relocated one: --resume RUN --csv ...) and the recorded split."""
        from mammo_tui.data.sources import DatasetSpec
        from mammo_tui.data.split import read_splits_csv
        from mammo_tui.errors import DatasetError
        from mammo_tui.rundir import file_problem

        recorded = spec = DatasetSpec.from_dict(info["spec"])
        given = self.request.dataset  # --resume RUN --csv ...: the dataset moved
        if given is not None:
            spec = dataclasses.replace(given, group_pattern=given.group_pattern or recorded.group_pattern).absolute()
        moved = given is not None and spec.to_dict() != recorded.absolute().to_dict()
        gone = {key: value for key, value in spec.paths().items() if not Path(value).exists()}
        if gone and not self.is_demo:
            where = ", ".join(f"{key} {value}" for key, value in gone.items())
            raise DatasetError(
                f"--resume {self.run_dir}: the dataset is not where the run recorded it ({where}; see "
                f"{self.run_dir / DATASET_FILE}). If it moved, give its new place: mammo-tui train --resume "
                f"{self.run_dir} --csv NEW.csv [--dicom-root NEW_DIR] (or --images NEW_DIR); the split is "
                "kept by matching image paths below the dataset's folder.")
        self.prepared = prepare_dataset(spec, skip_bad_rows=bool(info.get("skip_bad_rows")),
                                        **self._scan_options(self.config))
        splits = self.run_dir / SPLITS_FILE
        try:
            split_of = read_splits_csv(splits)
        except OSError as exc:
            what = "is missing" if isinstance(exc, FileNotFoundError) else "cannot be read"
            if what == "cannot be read":
                raise file_problem(splits, exc, "read") from None
            raise RunDirError(f"{splits} {what}: it records which images the run validates on; without "
                              "it the run cannot continue on the same split. Start a new run.") from None
        except (KeyError, ValueError, UnicodeDecodeError):
            raise RunDirError(f"{splits} is damaged (no path / split columns); the run cannot continue "
                              "on the same split. Restore it, or start a new run.") from None
        records = self.prepared.records
        if moved:
            split_of = self._relocate(split_of, records, spec, info)
        missing = [r.path for r in records if r.path not in split_of]
        if missing:
            self.notes.append(f"{len(missing)} images are new since the run started; they are left out")
        self.train_idx = np.array([i for i, r in enumerate(records) if split_of.get(r.path) == "train"])
        self.val_idx = np.array([i for i, r in enumerate(records) if split_of.get(r.path) == "val"])
        self.test_idx = np.array([i for i, r in enumerate(records) if split_of.get(r.path) == "test"], dtype=int)
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise RunDirError(f"--resume {self.run_dir}: the images in {SPLITS_FILE} are no longer "
                              "in the dataset; cannot continue")

    def _relocate(self, split_of: dict[str, str], records: list, spec, info: dict[str, Any]) -> dict[str, str]:
        """The dataset moved: match each image by its path below the new dataset folder against the
        recorded paths' endings, then record the new place (dataset.json, splits.csv)."""
        import os

        from mammo_tui.data.split import Split, write_splits_csv
        from mammo_tui.rundir import file_problem, write_json

        by_ending: dict[str, str | None] = {}
        for old, side in split_of.items():
            parts = Path(old).parts
            for i in range(1, len(parts)):
                key = "/".join(parts[i:])
                by_ending[key] = side if key not in by_ending else None  # ambiguous endings match nothing
        root = Path(spec.image_root())
        mapped = {r.path: by_ending.get(Path(os.path.relpath(r.path, root)).as_posix()) for r in records}
        mapped = {path: side for path, side in mapped.items() if side}
        if not mapped:
            return mapped  # nothing matched: the caller says the split's images are gone
        self.notes.append(f"dataset relocated to {spec.describe()}: {len(mapped)} of {len(split_of)} "
                          f"images of {SPLITS_FILE} found there; {DATASET_FILE} and {SPLITS_FILE} updated")
        index = {r.path: i for i, r in enumerate(records)}
        split = Split(train=[index[p] for p, s in mapped.items() if s == "train"],
                      val=[index[p] for p, s in mapped.items() if s == "val"], warnings=[],
                      test=np.array([index[p] for p, s in mapped.items() if s == "test"], dtype=int))
        if self.dist is not None and not self.dist.is_main:
            return mapped  # rank 0 records the new place
        tmp = self.run_dir / f".{SPLITS_FILE}.tmp"
        try:
            write_splits_csv(tmp, records, split)
            os.replace(tmp, self.run_dir / SPLITS_FILE)
        except OSError as exc:
            raise file_problem(self.run_dir / SPLITS_FILE, exc) from None
        write_json(self.run_dir / DATASET_FILE, {**info, "spec": spec.to_dict(),
                                                 "relocated_from": info["spec"]})
        return mapped
