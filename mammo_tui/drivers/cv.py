"""Patient-grouped stratified K-fold cross-validation with the same engine.

One directory per CV run: `cv.json` (what to train and where it stands, enough to resume it),
one sub-run per fold (`fold-1/` ... each a normal, watchable, resumable run directory), and
`cv_summary.json` with mean ± std over folds once every fold has finished.

The same typed events reach every consumer: `run_cv` sends FoldStarted / FoldFinished /
CVFinished around each fold's own run events, and `follow_cv` rebuilds that stream from the
directory (for `watch` and the runs browser), so a live and a watched CV look the same.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mammo_tui.errors import ConfigError, RunDirError
from mammo_tui.events import (CollapseStatus, CVFinished, Event, EventSink, FoldFinished, FoldStarted,
                              RunFinished)
from mammo_tui.exitcodes import EXIT_COLLAPSED, EXIT_INTERRUPTED, EXIT_OK
from mammo_tui.privacy import SECRET_FILE_ENV, secret_fingerprint
from mammo_tui.rundir import (CV_FILE, CV_SUMMARY_FILE, LOCK_FILE, create_locked, is_cv_dir, new_run_name,
                              read_group_manifest, read_summary, remove_husk, safe_run_name, write_json)
from mammo_tui.runlog import EVENTS_FILE, follow_events, read_events
from mammo_tui.runread import fold_dirs, read_json_file
from mammo_tui.stats import (FINISHED, aggregate, fold_recalls, format_mean_std, format_recall_stat,
                             worst_status)

MAX_FOLDS = 20


@dataclasses.dataclass
class CVResult:
    run_dir: Path  # the CV directory
    exit_code: int
    summary: dict[str, Any]  # cv_summary.json; empty when the CV stopped early


# -- the manifest ---------------------------------------------------------------------------------


def read_manifest(cv_dir: str | Path) -> dict[str, Any] | None:
    return read_group_manifest(cv_dir, "cv") or None


def load_manifest(cv_dir: str | Path) -> dict[str, Any]:
    """cv.json for continuing a CV: RunDirError naming the file when it is missing, a directory,
    not JSON or lacks what a resume needs (read_manifest is the lenient reader for listings)."""
    from mammo_tui.config import saved_config
    from mammo_tui.rundir import read_run_json

    path = Path(cv_dir) / CV_FILE
    if not path.exists():
        raise RunDirError(f"--resume {cv_dir}: not a cross-validation directory (no {CV_FILE})")
    fix = ("It records the cross-validation's folds, config and dataset; restore it from a backup, or "
           "start a new cross-validation with another --run-name.")
    manifest = read_run_json(path, fix)
    folds = manifest.get("folds") if isinstance(manifest, dict) else None
    if not isinstance(folds, int) or isinstance(folds, bool) or not isinstance(manifest.get("config"), dict):
        raise RunDirError(f"{path} lacks a whole number \"folds\" or a \"config\" table; it was edited or "
                          f"damaged. {fix}")
    saved_config(manifest["config"], source=str(path))  # a bad key or value: ConfigError naming it
    return manifest


def _check_folds(cv_dir: Path, manifest: dict[str, Any]) -> None:
    """Every fold already on disk must belong to this CV as cv.json describes it (K and config):
    an edited cv.json must not mix 2-fold folds into a 5-fold summary."""
    from mammo_tui.config import diff, saved_config
    from mammo_tui.rundir import DATASET_FILE, read_run_json

    folds = int(manifest["folds"])
    extra = [d.name for d in fold_dirs(cv_dir) if int(d.name[5:]) > folds]
    if extra:
        raise RunDirError(f"{cv_dir / CV_FILE} says {folds} folds, but {', '.join(extra)} exist: {CV_FILE} "
                          f"was edited. Restore its \"folds\", or start a new cross-validation with another --run-name.")
    wanted = saved_config(manifest["config"], source=str(cv_dir / CV_FILE))
    for fold_dir in fold_dirs(cv_dir):
        if not (fold_dir / DATASET_FILE).exists():
            continue  # never got past its set-up: trained anew
        record = (read_run_json(fold_dir / DATASET_FILE, "Delete that fold's folder to train it again.") or {})
        record = record.get("cv") if isinstance(record, dict) else None
        if not isinstance(record, dict):
            continue  # a fold from before folds recorded this
        if record.get("folds") != folds:
            raise RunDirError(f"{fold_dir.name} was trained as fold {record.get('fold')} of {record.get('folds')} "
                              f"({fold_dir / DATASET_FILE}), but {cv_dir / CV_FILE} says {folds} folds: {CV_FILE} "
                              f"was edited. Restore \"folds\": {record.get('folds')}, or start a new "
                              "cross-validation with another --run-name.")
        if record.get("config"):
            changed = diff(saved_config(record["config"], source=str(fold_dir / DATASET_FILE)), wanted)
            if changed:
                listing = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise RunDirError(f"{cv_dir / CV_FILE}: its config differs from the one {fold_dir.name} trained "
                                  f"with ({listing}); every fold must train the same way. Undo the edit of "
                                  f"{CV_FILE}, or start a new cross-validation with another --run-name.")


def read_cv_summary(cv_dir: str | Path) -> dict[str, Any] | None:
    """cv_summary.json, leniently (None until the last fold finished, or when damaged)."""
    return read_json_file(Path(cv_dir) / CV_SUMMARY_FILE)


def _is_main() -> bool:
    """Under torchrun every rank runs the CV in lockstep; only rank 0 writes its files."""
    from mammo_tui.engine.distributed import main_process

    return main_process()


def _set_status(cv_dir: Path, manifest: dict[str, Any], status: str) -> None:
    manifest["status"] = status
    if _is_main():
        write_json(cv_dir / CV_FILE, manifest)


def resume_fields(cv_dir: str | Path, overrides: dict[str, Any] | None = None, preset: str | None = None,
                  folds: int | None = None, dataset: Any = None) -> tuple[dict[str, Any], int]:
    """(TrainRequest fields, folds) that continue the cross-validation in cv_dir as it started.

    overrides / preset / folds: what the command line also gave (--set, flags, --preset, --folds);
    a value that differs from cv.json is refused, named: every fold must train the same way.
    dataset (--csv / --images): the dataset moved; resumed folds match their images by path below it.
    Plain fields, not a TrainRequest, so the TUI can take them without importing the engine."""
    from mammo_tui.config import saved_config
    from mammo_tui.data.sources import DatasetSpec

    cv_dir = Path(cv_dir)
    manifest = load_manifest(cv_dir)
    _check_changes(cv_dir, manifest, overrides, preset, folds)
    data = manifest.get("dataset")
    recorded = DatasetSpec.from_dict(data) if isinstance(data, dict) else None
    if dataset is not None:  # --csv / --images with --resume: the dataset moved there
        dataset = dataclasses.replace(dataset, group_pattern=dataset.group_pattern or
                                      (recorded.group_pattern if recorded else None))
    fields = {"config": saved_config(manifest["config"], source=str(cv_dir / CV_FILE)),
              "dataset": dataset or recorded, "demo": bool(manifest.get("demo")),
              "outdir": str(cv_dir.parent), "run_name": cv_dir.name,
              "skip_bad_rows": bool(manifest.get("skip_bad_rows")), "preset": manifest.get("preset", "")}
    if manifest.get("demo_size") is not None:
        fields["demo_size"] = manifest["demo_size"]
    return fields, int(manifest["folds"])


def _check_changes(cv_dir: Path, manifest: dict[str, Any], overrides: dict[str, Any] | None,
                   preset: str | None, folds: int | None) -> None:
    from mammo_tui.config import diff, from_mapping, resolve, saved_config

    if folds is not None and folds != int(manifest["folds"]):
        raise ConfigError(f"{cv_dir} is a {manifest['folds']}-fold cross-validation; --folds {folds} cannot "
                          f"continue it. Drop --folds (or pass --folds {manifest['folds']}), or start a new "
                          "cross-validation with another --run-name.")
    if not overrides and not preset:
        return
    saved = saved_config(manifest["config"], source=str(cv_dir / CV_FILE))
    wanted = resolve(preset, overrides) if preset else from_mapping({**saved.to_dict(), **overrides},
                                                                     source="--set")
    changed = diff(saved, wanted)
    if changed:
        listing = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"cv --resume {cv_dir}: the config differs from the cross-validation's ({listing}); "
                          "every fold must train the same way, so it cannot change half-way. Resume without "
                          "those flags, or start a new cross-validation with another --run-name.")


def _check_group_key(cv_dir: Path, manifest: dict[str, Any]) -> None:
    """The folds still to train are computed again from the patient digests: under another secret
    they would be other folds, overlapping the finished ones (a patient on both sides)."""
    started_with, now = manifest.get("group_key"), secret_fingerprint()
    if started_with and started_with != now:
        raise RunDirError(f"{cv_dir} was started with another patient-digest secret ({started_with}; yours "
                          f"is {now}), so its remaining folds would not match the finished ones. Resume "
                          f"it where it started, or with {SECRET_FILE_ENV} pointing at the secret it used.")


def _open_manifest(cv_dir: Path, request, folds: int) -> dict[str, Any]:
    """Check a re-run against the CV it continues (same K, same config), or start a new one."""
    from mammo_tui.config import diff, saved_config

    manifest = load_manifest(cv_dir) if (cv_dir / CV_FILE).exists() else None
    if manifest is not None:
        _check_folds(cv_dir, manifest)
        if int(manifest["folds"]) != folds:
            raise ConfigError(f"{cv_dir} is a {manifest['folds']}-fold cross-validation; its folds are "
                              f"not those of {folds} folds. Pass --folds {manifest['folds']} to continue "
                              "it, or another --run-name for a new one.")
        changed = diff(saved_config(manifest["config"], source=str(cv_dir / CV_FILE)), request.config)
        if changed and not request.force:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{cv_dir}: the config differs from the cross-validation's ({listing}); "
                              "every fold must train the same way. Continue it with "
                              f"`mammo-tui cv --resume {cv_dir}`, or use another --run-name.")
        _check_group_key(cv_dir, manifest)
        if request.dataset is not None and request.dataset.absolute().to_dict() != manifest.get("dataset"):
            manifest["dataset"] = request.dataset.absolute().to_dict()  # relocated: each fold follows
        return manifest
    spec = request.dataset
    manifest = {
        "folds": folds, "started": time.time(), "status": "running",
        "preset": request.preset, "config": request.config.to_dict(),
        "dataset": None if spec is None else spec.absolute().to_dict(),  # resumable from any folder
        "demo": request.demo, "demo_size": request.demo_size if request.demo else None,
        "skip_bad_rows": request.skip_bad_rows,
        "group_key": secret_fingerprint(),  # which digest secret made the folds (not the secret)
    }
    if not _is_main():
        return manifest
    try:
        cv_dir.mkdir(parents=True, exist_ok=True)
        write_json(cv_dir / CV_FILE, manifest)
    except OSError as exc:
        raise RunDirError(f"cannot write the cross-validation directory {cv_dir}: "
                          f"{exc.strerror or exc}. Pass --outdir on a writable disk.") from None
    return manifest


# -- running ----------------------------------------------------------------------------------------


def _noting_checks(sink: EventSink, checks: list[Event]) -> EventSink:
    """The sink, keeping the fold's collapse checks on the side (for its FoldFinished)."""
    def forward(event: Event) -> None:
        if isinstance(event, CollapseStatus):
            checks.append(event)
        sink(event)
    return forward


def _fixes(checks: list[Event]) -> list[dict[str, Any]]:
    """What the fold's last collapse check suggested (nothing when it ended healthy)."""
    return list(checks[-1].suggestions) if checks and checks[-1].status != "healthy" else []


def _collapse_checks(run_dir: Path) -> list[Event]:
    """A finished fold's collapse checks, from its log (a kept fold sends no events)."""
    try:
        return [e for e in read_events(run_dir) if isinstance(e, CollapseStatus)]
    except OSError:
        return []


def _fold_state(fold_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """("kept", its summary) for a finished fold, ("resume", None) for a started one, else ("new", None)."""
    summary = read_summary(fold_dir)
    if summary and summary.get("status") in FINISHED:
        return "kept", summary
    return ("resume" if (fold_dir / "config.toml").is_file() else "new"), None


def _agreed(value: Any) -> Any:
    """Rank 0's value on every rank under torchrun (a timestamped name, what is on disk); else value."""
    from mammo_tui.engine import distributed

    return distributed.broadcast(value) if distributed.joined() else value


def run_cv(request, folds: int, sink: EventSink = lambda e: None,
           cancel: threading.Event | None = None) -> CVResult:
    """Train every fold (keeping finished ones, resuming interrupted ones)."""
    from mammo_tui.engine import distributed

    with distributed.process_group():  # under torchrun: one group for every fold's run
        return _run_cv(request, folds, sink, cancel)


def _run_cv(request, folds: int, sink: EventSink, cancel: threading.Event | None) -> CVResult:
    from mammo_tui.app.planning import resolve_auto
    from mammo_tui.events import LogMessage

    if not 2 <= folds <= MAX_FOLDS:
        raise ConfigError(f"--folds must be between 2 and {MAX_FOLDS}; got {folds}")
    request, _, _ = resolve_auto(request)  # "preset auto": planned once, so every fold trains the same config
    if request.origin:
        sink(LogMessage("info", request.origin))
    cancel = cancel or threading.Event()
    name = _agreed(safe_run_name(request.run_name) if request.run_name else new_run_name(f"cv{folds}"))
    cv_dir = Path(request.outdir) / name
    new = not cv_dir.exists()
    if not new and not is_cv_dir(cv_dir) and cv_dir.is_dir() and any(
            p.name != LOCK_FILE for p in cv_dir.iterdir()):  # a run, a sweep, any folder: the folds would take it over
        raise RunDirError(f"{cv_dir} already exists and is not a cross-validation; pick another --run-name")
    lock = create_locked(cv_dir, "cross-validation directory") if _is_main() else None
    try:
        return _run_folds(request, folds, sink, cancel, cv_dir, new)
    except BaseException:
        if new and lock is not None and not (cv_dir / CV_FILE).exists():  # leave no husk
            remove_husk(cv_dir)
        raise
    finally:
        if lock is not None:
            lock.release()


def _run_folds(request, folds: int, sink: EventSink, cancel: threading.Event, cv_dir: Path,
               new: bool) -> CVResult:
    from mammo_tui.app.requests import TrainRequest
    from mammo_tui.engine.trainer import train

    # what each fold needs, decided once from what is on disk now (rank 0's view under torchrun)
    plan = _agreed({fold: _fold_state(cv_dir / f"fold-{fold}") for fold in range(1, folds + 1)})
    manifest = _open_manifest(cv_dir, request, folds)
    _set_status(cv_dir, manifest, "running")
    rows: list[dict[str, Any]] = []
    try:
        for fold in range(1, folds + 1):
            fold_dir = cv_dir / f"fold-{fold}"
            state, summary = plan[fold]
            kept = state == "kept"
            sink(FoldStarted(fold=fold, folds=folds, cv_dir=str(cv_dir), run_dir=str(fold_dir)))
            if not kept:
                if cancel.is_set():
                    _set_status(cv_dir, manifest, "interrupted")
                    return CVResult(cv_dir, EXIT_INTERRUPTED, {})
                if state == "resume":  # the CV's dataset: where cv.json (or a relocation) says it is
                    fold_request = TrainRequest(resume=str(fold_dir), dataset=request.dataset,
                                                track=request.track, folds=folds, fold=fold - 1)
                else:
                    fold_request = dataclasses.replace(request, outdir=str(cv_dir), run_name=fold_dir.name,
                                                       folds=folds, fold=fold - 1, resume=None)
                checks: list[Event] = []
                result = train(fold_request, _noting_checks(sink, checks), cancel)
                summary = result.summary
                if result.exit_code == EXIT_INTERRUPTED or result.status not in FINISHED:
                    # stopped, or failed (a NaN loss): no mean over folds with a hole in it
                    stopped = "interrupted" if result.exit_code == EXIT_INTERRUPTED else "failed"
                    _set_status(cv_dir, manifest, stopped)
                    return CVResult(cv_dir, result.exit_code, {})
            row = {"fold": fold, "status": summary.get("status"), "best_epoch": summary.get("best_epoch"),
                   "best_metrics": summary.get("best_metrics") or {}}
            rows.append(row)
            if kept:
                checks = _collapse_checks(fold_dir)
            sink(FoldFinished(fold=fold, folds=folds, status=row["status"], best_epoch=row["best_epoch"],
                              best_metrics=row["best_metrics"], kept=kept, suggestions=_fixes(checks)))
    except BaseException as exc:
        if not _is_main():
            pass
        elif new and not any(cv_dir.glob("fold-*")):  # failed before any fold existed: leave no husk
            remove_husk(cv_dir, CV_FILE)
        elif cv_dir.is_dir():
            _set_status(cv_dir, manifest, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    cv_summary = {"folds": folds, "status": worst_status([r["status"] for r in rows]),
                  "per_fold": rows, "aggregate": aggregate(rows),
                  "collapsed_folds": [r["fold"] for r in rows if r["status"] == "collapsed"]}
    if _is_main():
        write_json(cv_dir / CV_SUMMARY_FILE, cv_summary)
    _set_status(cv_dir, manifest, "finished")
    code = EXIT_COLLAPSED if cv_summary["collapsed_folds"] else EXIT_OK
    sink(CVFinished(cv_dir=str(cv_dir), summary=cv_summary, exit_code=code))
    return CVResult(cv_dir, code, cv_summary)


def follow_cv(cv_dir: str | Path, should_stop: Callable[[], bool] = lambda: False,
              poll_s: float = 0.25) -> Iterator[Event]:
    """The event stream of a cross-validation, rebuilt from its directory (finished or live).

    Ends after CVFinished, or where the CV stopped (a fold interrupted or failed), or on should_stop.
    """
    cv_dir = Path(cv_dir)
    manifest = read_manifest(cv_dir) or {}
    folds = int(manifest.get("folds") or (read_cv_summary(cv_dir) or {}).get("folds") or 0)
    if not folds:
        raise RunDirError(f"{cv_dir}: not a cross-validation directory (no {CV_FILE})")
    for fold in range(1, folds + 1):
        fold_dir = cv_dir / f"fold-{fold}"
        yield FoldStarted(fold=fold, folds=folds, cv_dir=str(cv_dir), run_dir=str(fold_dir))
        while not (fold_dir / EVENTS_FILE).exists():  # the CV process is still preparing this fold
            if should_stop() or (read_manifest(cv_dir) or {}).get("status") in ("interrupted", "failed"):
                return
            time.sleep(poll_s)
        last = None
        checks = []
        for event in follow_events(fold_dir, should_stop, poll_s):
            last = event
            if isinstance(event, CollapseStatus):
                checks.append(event)
            yield event
        if not isinstance(last, RunFinished) or last.interrupted:
            return  # stopped here (resume with `mammo-tui cv --resume`), failed, or should_stop
        yield FoldFinished(fold=fold, folds=folds, status=last.status, best_epoch=last.best_epoch,
                           best_metrics=last.best_metrics, suggestions=_fixes(checks), time=last.time)
    while (summary := read_cv_summary(cv_dir)) is None:  # written just after the last fold
        if should_stop():
            return
        time.sleep(poll_s)
    code = EXIT_COLLAPSED if summary.get("collapsed_folds") else EXIT_OK
    yield CVFinished(cv_dir=str(cv_dir), summary=summary, exit_code=code)


def format_cv(summary: dict[str, Any]) -> str:
    lines = [f"{'fold':>4}  {'status':9}  {'kappa_q':>7}  {'bal_acc_adj':>11}  {'auc':>6}  recall A/B/C/D"]
    for row in summary["per_fold"]:
        m = row["best_metrics"]
        recall = "/".join("n/a" if r is None else f"{r:.2f}" for r in fold_recalls(m))
        auc = m.get("auc_macro")
        lines.append(f"{row['fold']:>4}  {row['status']:9}  {m.get('kappa_quadratic', 0):7.3f}  "
                     f"{m.get('balanced_accuracy_adjusted', 0):11.3f}  {'n/a' if auc is None else f'{auc:.3f}':>6}  {recall}")
    agg = summary["aggregate"]
    lines.append(f"mean ± std over {summary['folds']} folds: kappa_q {format_mean_std(agg['kappa_quadratic'])}, "
                 f"bal_acc_adj {format_mean_std(agg['balanced_accuracy_adjusted'])}, auc {format_mean_std(agg['auc_macro'])}")
    lines.append("recall: " + ", ".join(f"{n} {format_recall_stat(s)}" for n, s in agg["recall_per_class"].items()))
    if any(r is None for row in summary["per_fold"] for r in fold_recalls(row["best_metrics"])):
        lines.append("n/a: no images of that class in the fold's validation set; its mean is over the folds that have it")
    if summary["collapsed_folds"]:
        lines.append(f"COLLAPSED folds: {summary['collapsed_folds']}")
    return "\n".join(lines)
