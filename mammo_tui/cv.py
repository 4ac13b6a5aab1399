"""Patient-grouped stratified K-fold cross-validation with the same engine.

One directory per CV run, one sub-run per fold (`fold-1/` ... each a normal, watchable, resumable
run directory), and `cv_summary.json` with mean ± std over folds.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mammo_tui.events import EventSink, LogMessage
from mammo_tui.labels import CLASS_NAMES
from mammo_tui.rundir import new_run_name, read_summary, safe_run_name, write_json

CV_SUMMARY_FILE = "cv_summary.json"
FINISHED = ("healthy", "warning", "collapsed")
SCALARS = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy")


def mean_std(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": float(np.mean(present)), "std": std, "n": len(present)}


def aggregate(fold_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    best = [s.get("best_metrics") or {} for s in fold_summaries]
    out: dict[str, Any] = {k: mean_std([b.get(k) for b in best]) for k in SCALARS}
    out["recall_per_class"] = {
        name: mean_std([b["recall_per_class"][i] if b.get("recall_per_class") else None for b in best])
        for i, name in enumerate(CLASS_NAMES)
    }
    return out


def run_cv(request, folds: int, sink: EventSink = lambda e: None,
           cancel: threading.Event | None = None) -> tuple[Path, int, dict[str, Any]]:
    """Train every fold (skipping finished ones, resuming interrupted ones); returns (dir, exit code, summary)."""
    from mammo_tui.engine.trainer import EXIT_COLLAPSED, EXIT_INTERRUPTED, TrainRequest, train

    cancel = cancel or threading.Event()
    name = safe_run_name(request.run_name) if request.run_name else new_run_name(f"cv{folds}")
    cv_dir = Path(request.outdir) / name
    rows: list[dict[str, Any]] = []
    code = 0
    for fold in range(folds):
        fold_dir = cv_dir / f"fold-{fold + 1}"
        summary = read_summary(fold_dir)
        if summary and summary.get("status") in FINISHED:
            sink(LogMessage("info", f"fold {fold + 1}/{folds} already finished ({summary['status']}); kept"))
        else:
            sink(LogMessage("info", f"fold {fold + 1}/{folds}"))
            if (fold_dir / "config.toml").is_file():
                fold_request = TrainRequest(resume=str(fold_dir))
            else:
                fold_request = dataclasses.replace(request, outdir=str(cv_dir), run_name=fold_dir.name,
                                                   folds=folds, fold=fold, resume=None)
            result = train(fold_request, sink, cancel)
            summary = result.summary
            if result.exit_code == EXIT_INTERRUPTED:
                return cv_dir, EXIT_INTERRUPTED, {}
        if summary.get("status") == "collapsed":
            code = EXIT_COLLAPSED
        rows.append({"fold": fold + 1, "status": summary.get("status"), "best_epoch": summary.get("best_epoch"),
                     "best_metrics": summary.get("best_metrics") or {}})
    cv_summary = {"folds": folds, "per_fold": rows, "aggregate": aggregate(rows),
                  "collapsed_folds": [r["fold"] for r in rows if r["status"] == "collapsed"]}
    write_json(cv_dir / CV_SUMMARY_FILE, cv_summary)
    return cv_dir, code, cv_summary


def _pm(stat: dict[str, Any]) -> str:
    return "n/a" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def format_cv(summary: dict[str, Any]) -> str:
    lines = [f"{'fold':>4}  {'status':9}  {'kappa_q':>7}  {'bal_acc_adj':>11}  {'auc':>6}  recall A/B/C/D"]
    for row in summary["per_fold"]:
        m = row["best_metrics"]
        recall = "/".join(f"{r:.2f}" for r in m.get("recall_per_class", []))
        auc = m.get("auc_macro")
        lines.append(f"{row['fold']:>4}  {row['status']:9}  {m.get('kappa_quadratic', 0):7.3f}  "
                     f"{m.get('balanced_accuracy_adjusted', 0):11.3f}  {'n/a' if auc is None else f'{auc:.3f}':>6}  {recall}")
    agg = summary["aggregate"]
    lines.append(f"mean ± std over {summary['folds']} folds: kappa_q {_pm(agg['kappa_quadratic'])}, "
                 f"bal_acc_adj {_pm(agg['balanced_accuracy_adjusted'])}, auc {_pm(agg['auc_macro'])}")
    lines.append("recall: " + ", ".join(f"{n} {_pm(s)}" for n, s in agg["recall_per_class"].items()))
    if summary["collapsed_folds"]:
        lines.append(f"COLLAPSED folds: {summary['collapsed_folds']}")
    return "\n".join(lines)
