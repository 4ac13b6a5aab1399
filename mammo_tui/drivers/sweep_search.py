"""A sweep's [search]: an Optuna study in the sweep folder (optuna.db, so a resumed search continues
it), trials one after another after the variants / grid, each trained on every seed in this
process. The objective is the mean over seeds of the best epoch's balanced accuracy adjusted (the
selection score's first key); the pruner sees each epoch's value."""

from __future__ import annotations

import threading
from typing import Any

from mammo_tui.drivers.sweep_spec import OPTUNA_HINT, QueuedRun, SearchSpec, SweepSpec, run_name
from mammo_tui.errors import ConfigError
from mammo_tui.events import EpochMetrics, LogMessage
from mammo_tui.rundir import FINISHED_STATUSES, read_summary

STUDY_FILE = "optuna.db"


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"the sweep's [search] table needs Optuna, which is not installed: {OPTUNA_HINT}") from None
    return optuna


def suggest(trial, key: str, dim: Any) -> Any:
    """One trial's value of a [search.space] key: a list of choices, or an int / float range."""
    from mammo_tui.config import key_type

    if isinstance(dim, list):
        return trial.suggest_categorical(key, dim)
    if key_type(key) is int:
        return trial.suggest_int(key, int(dim["low"]), int(dim["high"]), step=int(dim.get("step", 1)),
                                 log=dim["log"])
    return trial.suggest_float(key, float(dim["low"]), float(dim["high"]), step=dim.get("step"), log=dim["log"])


class Linked(threading.Event):
    """A run's own stop (an Optuna prune) that is also set whenever the sweep's cancel is."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent
        self.pruned = False

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()


class OptunaSearch:
    """The search of one sweep. sweep: the running sweep (drivers.sweep), which owns the folder
    (`folder`), the sink, the cancel event and `train` (one member run in this process)."""

    def __init__(self, sweep: Any) -> None:
        self.sweep = sweep
        self.folder = sweep.folder

    def _study(self, search: SearchSpec):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's own lines say what happens
        pruner = optuna.pruners.MedianPruner() if search.prune else optuna.pruners.NopPruner()
        study = optuna.create_study(storage=f"sqlite:///{(self.folder.sweep_dir / STUDY_FILE).resolve()}",
                                    study_name="sweep", direction="maximize", pruner=pruner, load_if_exists=True)
        # seeded (reproducible), but offset by the trials already in the study: a resumed search with
        # the first session's seed would draw the first session's values again
        seed = self.folder.spec.seeds[0] + len(study.trials)
        study.sampler = (optuna.samplers.TPESampler(seed=seed) if search.sampler == "tpe"
                         else optuna.samplers.RandomSampler(seed=seed))
        return study

    def run(self, spec: SweepSpec) -> bool:
        """Trials one after another, each trained on every seed; False when the sweep stops. A trial
        stopped with the sweep stays RUNNING in the study and is continued by the next session."""
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
            if self.sweep.cancel.is_set():
                return False
            trial = study.ask()
            params = {key: suggest(trial, key, dim) for key, dim in search.space.items()}
            if not self._trial(study, trial, params):
                return False
        return True

    def _trial(self, study, trial, params: dict[str, Any], reported: set[int] | None = None) -> bool:
        """Train one trial on every seed and tell the study how it went; False when the sweep stops."""
        from optuna.trial import TrialState

        folder, sink = self.folder, self.sweep.sink
        config_id = f"trial-{trial.number}"
        runs = [QueuedRun(run_name(config_id, seed), config_id, seed, dict(params), trial=trial.number)
                for seed in folder.spec.seeds]
        try:
            for run in runs:
                folder.member_config(run)
        except ConfigError as exc:  # e.g. two balancing keys searched together: this combination is refused
            sink(LogMessage("warning", f"{config_id} skipped: {exc}"))
            study.tell(trial, state=TrialState.FAIL)
            return True
        known = {m["run"] for m in folder.members}
        folder.members += [run.member() for run in runs if run.run not in known]
        folder.write()
        stop = Linked(self.sweep.cancel)
        reported = set() if reported is None else reported  # steps the study holds (a continued trial)
        values = []
        for number, run in enumerate(runs):
            def prune_check(event, number=number, run=run):
                if not isinstance(event, EpochMetrics) or stop.pruned:
                    return
                # one step per epoch of each seed in turn: trials are compared at the same seed and epoch
                step = number * max(1, int(folder.base.get("epochs", 1))) + event.epoch
                if step not in reported:
                    trial.report(float(event.metrics.get("balanced_accuracy_adjusted", 0.0)), step)
                    reported.add(step)
                if trial.should_prune():
                    stop.pruned = True
                    folder.member(run.run)["pruned"] = True  # before its SweepRunFinished says so
                    stop.set()

            status = self.sweep.train(run, prune_check, stop)
            if status == "interrupted":
                return False
            if stop.pruned:  # this run and the trial's other seeds are not trained further
                for other in runs[number:]:
                    folder.member(other.run)["pruned"] = True
                folder.write()
                sink(LogMessage("info", f"{config_id} pruned (its epochs score below the median "
                                        "of earlier trials)"))
                study.tell(trial, state=TrialState.PRUNED)
                return True
            summary = read_summary(folder.sweep_dir / run.run) or {}
            if status not in FINISHED_STATUSES:
                study.tell(trial, state=TrialState.FAIL)
                return True
            values.append(float((summary.get("best_metrics") or {}).get("balanced_accuracy_adjusted", 0.0)))
        study.tell(trial, sum(values) / len(values))
        return True
