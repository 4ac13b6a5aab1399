"""The MLflow tracker: one MLflow run per mammo-tui run, continued on --resume and on a repeated export.

Experiment = the folder holding the run (runs/, a CV, a sweep); MLflow run name = the run folder's
name. Params: the config (without NOT_TRAINING_KEYS) and run facts; metrics per epoch with
step = epoch and the event's own time, so an export of events.jsonl logs what live tracking did;
tags: collapse status, reasons, suggestions, the final status; artifacts at the end: best.pt,
summary.json, report.md.

The MLflow run is found again by tracking.json in the run directory (destination -> run id), else
by the tag mammo_tui.run_key; attaching to it reads what it holds, so nothing is logged twice.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mammo_tui.config import NOT_TRAINING_KEYS
from mammo_tui.events import (CollapseStatus, ConfigChanged, EpochMetrics, Event, RunFailed, RunFinished,
                              RunStarted, handler_for, handles)
from mammo_tui.rundir import CHECKPOINT_DIR, SUMMARY_FILE
from mammo_tui.tracking.common import (COLLAPSE_CODES, HEADLINE, epoch_scalars, experiment_name, finite,
                                       read_tracking, record_tracking, report_text, run_facts, run_key,
                                       suggestion_lines)
from mammo_tui.tracking.spec import TrackingError, TrackSpec, mlflow_uri

RUN_KEY_TAG = "mammo_tui.run_key"
TAG_MAX = 5000  # MLflow refuses tag values over 8000 characters (5000 in older servers)
BATCH = 100  # params per log_batch call (MLflow's limit)
# MLflow retries a request to an unreachable server for ~4 minutes by default; each tracker call
# blocks training, so a dead server costs a few seconds once (the tracker then stops), not minutes.
# A user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _clip(text: str) -> str:
    return text if len(text) <= TAG_MAX else text[: TAG_MAX - 1] + "…"


class MlflowTracker:
    kind = "mlflow"

    def __init__(self, spec: TrackSpec, export: bool = False):
        self.spec, self.export = spec, export
        self.uri = mlflow_uri(spec.target)
        self.destination = f"mlflow:{self.uri}"
        self.client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.experiment = ""  # its name
        self.run_dir: Path | None = None
        self.class_names: list[str] = []
        self.params: dict[str, str] = {}  # what the MLflow run holds (params never change there)
        self.seen: set[tuple[str, int, int]] = set()  # (key, step, timestamp) already logged
        self.last_epoch = 0
        self.key = ""  # common.run_key: finds this run's MLflow run again without tracking.json
        self.artifacts = True  # False: an export replaying a session end that a resume followed
        self.location: Path | None = None  # an export: where the run is now (events say where it ran)

    @property
    def where(self) -> str:
        return f"MLflow run {self.run_id} (experiment {self.experiment!r}) in {self.uri}" if self.run_id else self.uri

    def __call__(self, event: Event) -> None:
        handler = handler_for(self, event)
        if handler is not None and (self.client is not None or isinstance(event, RunStarted)):
            handler(event)

    def close(self) -> None:
        pass  # every call is synchronous: nothing buffered

    # -- opening ------------------------------------------------------------------------------
    def _connect(self):
        if self.uri.startswith("file:"):
            # MLflow 3 refuses a folder store unless told (it prefers a database store, which
            # mlflow-skinny opens only with SQLAlchemy installed); a folder is what `mlflow:DIR` asks for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        # its INFO lines (a database store's migrations) would land in the middle of the dashboard
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        return MlflowClient(tracking_uri=self.uri)

    @handles(RunStarted)
    def _on_run_started(self, event: RunStarted) -> None:
        self.run_dir = self.location or Path(event.run_dir).absolute()
        self.class_names = list(event.class_names)
        if self.client is None:
            self.client = self._connect()
            self._attach(event)
        elif self.client.get_run(self.run_id).info.status != "RUNNING":  # an export replaying a resume
            self.client.update_run(self.run_id, status="RUNNING")
        self._log_params(event)
        self._tags({"mammo_tui.run_dir": str(self.run_dir), RUN_KEY_TAG: self.key, "status": "running"})

    def _attach(self, event: RunStarted) -> None:
        """The MLflow run of this mammo-tui run (recorded, or found by its key), else a new one."""
        client = self.client
        self.key = run_key(self.run_dir)
        copied_from = self._copied_from()
        if copied_from:  # its own MLflow run, never the original's (the key would find that one too)
            self.key = f"{self.key}@{self.run_dir.absolute()}"
        run = None if copied_from else self._recorded_run()  # tracked before, even if the folder moved since
        if run is not None:
            self.experiment_id = run.info.experiment_id
            self.experiment = client.get_experiment(self.experiment_id).name
        else:
            self.experiment = name = experiment_name(self.run_dir)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None and experiment.lifecycle_stage != "active":
                raise TrackingError(f"MLflow experiment {name!r} in {self.uri} is deleted; restore it "
                                    f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                                    "or remove it for good (mlflow gc)")
            self.experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            run = self._tagged_run(self.key)
        if run is None:
            run = client.create_run(self.experiment_id, start_time=_ms(event.time), run_name=self.run_dir.name,
                                    tags={RUN_KEY_TAG: self.key})
        else:
            self._read_back(run)
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
        self.run_id = run.info.run_id
        record_tracking(self.run_dir, self.destination, {"run_id": self.run_id, "experiment_id": self.experiment_id,
                                                          "experiment": self.experiment, "run_key": self.key,
                                                          "run_dir": str(self.run_dir.absolute())})

    def _copied_from(self) -> str:
        """The run directory this one is a copy of ("" when it is not): tracking.json came along with
        the copy, and the folder it names still holds the same MLflow run. A moved run (the old
        folder gone) continues its MLflow run."""
        recorded = read_tracking(self.run_dir).get(self.destination) or {}
        origin = recorded.get("run_dir")
        if not origin or Path(origin) == self.run_dir.absolute() or not Path(origin).is_dir():
            return ""
        theirs = read_tracking(origin).get(self.destination) or {}
        return origin if theirs.get("run_id") and theirs.get("run_id") == recorded.get("run_id") else ""

    def _recorded_run(self):
        run_id = (read_tracking(self.run_dir).get(self.destination) or {}).get("run_id")
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:  # deleted from the store since: found by its key, or made anew
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _tagged_run(self, key: str):
        if "'" in key:
            return None
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
                                       max_results=1)
        return runs[0] if runs else None

    def _read_back(self, run) -> None:
        self.params = dict(run.data.params)
        for key in run.data.metrics:
            self.seen.update((m.key, m.step, m.timestamp) for m in self.client.get_metric_history(run.info.run_id, key))

    def _log_params(self, event: RunStarted) -> None:
        """New params are logged; one whose value changed (a --force resume, another device) cannot
        be changed in MLflow: the change is a tag."""
        from mlflow.entities import Param

        values = {k: v for k, v in event.config.items() if k not in NOT_TRAINING_KEYS}
        values.update(run_facts(event, self.run_dir))
        new = []
        for key, value in values.items():
            text = str(value)
            if key not in self.params:
                new.append(Param(key, text))
                self.params[key] = text
            elif self.params[key] != text:
                self.client.set_tag(self.run_id, f"param_changed.{key}",
                                    _clip(f"{self.params[key]} -> {text} (from epoch {event.start_epoch})"))
        for start in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[start:start + BATCH])

    # -- during the run -----------------------------------------------------------------------
    def _metrics(self, values: dict[str, float], step: int, time_s: float) -> None:
        from mlflow.entities import Metric

        stamp = _ms(time_s)
        fresh = [Metric(k, v, stamp, step) for k, v in values.items() if (k, step, stamp) not in self.seen]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)
            self.seen.update((m.key, step, stamp) for m in fresh)

    @handles(EpochMetrics)
    def _on_epoch(self, event: EpochMetrics) -> None:
        self.last_epoch = max(self.last_epoch, event.epoch)
        self._metrics(epoch_scalars(event, self.class_names), event.epoch, event.time)

    @handles(CollapseStatus)
    def _on_collapse(self, event: CollapseStatus) -> None:
        self._metrics({"collapse": float(COLLAPSE_CODES.get(event.status, 2))}, event.epoch, event.time)
        self._tags({"collapse_status": event.status,
                    "collapse_reasons": "; ".join(event.reasons) or "none",
                    "suggestions": "\n".join(suggestion_lines(event)) or "none"})

    @handles(ConfigChanged)
    def _on_config_changed(self, event: ConfigChanged) -> None:
        changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in event.changes.items())
        self._tags({f"config_change.epoch_{event.epoch}": f"{changes} ({event.reason})"})

    def _tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, _clip(str(v))) for k, v in tags.items()])

    # -- the end ------------------------------------------------------------------------------
    @handles(RunFinished)
    def _on_finished(self, event: RunFinished) -> None:
        if event.best_epoch is not None:
            best = {f"best_{k}": event.best_metrics.get(k) for k in HEADLINE}
            self._metrics({k: float(v) for k, v in best.items() if finite(v)}, event.best_epoch, event.time)
        self._tags({"status": event.status, "best_epoch": event.best_epoch,
                    "epochs_completed": event.epochs_completed})
        self._artifacts(None)
        self.client.set_terminated(self.run_id, "KILLED" if event.interrupted else "FINISHED",
                                   end_time=_ms(event.time))

    @handles(RunFailed)
    def _on_failed(self, event: RunFailed) -> None:
        self._tags({"status": "failed", "error": event.error})
        self._artifacts(event)
        self.client.set_terminated(self.run_id, "FAILED", end_time=_ms(event.time))

    def _artifacts(self, failed: RunFailed | None) -> None:
        if not self.artifacts:
            return
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        if best.is_file():
            self.client.log_artifact(self.run_id, str(best), CHECKPOINT_DIR)
        try:
            summary = json.loads((self.run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = None
        if isinstance(summary, dict):
            if failed is not None and summary.get("status") != "failed":
                # the trainer writes summary.json after announcing the failure
                summary = {**summary, "status": "failed", "error": failed.error}
            self.client.log_dict(self.run_id, summary, SUMMARY_FILE)
        self.client.log_text(self.run_id, report_text(self.run_dir), "report.md")

    def finish_incomplete(self) -> None:
        """An export of a log without an end event (still training, or killed): what it holds is
        logged; the MLflow run stays RUNNING, and a later export adds the rest."""
