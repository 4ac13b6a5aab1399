"""The pieces of a run's report that the cross-validation report reuses (pure: no torch, no textual).

report.py (a run) and cv_report.py (a cross-validation over its folds) both build on these: how a
number or a config value is printed, what each status means, the config table, a run's collapse
checks and config changes in short, and the evaluations on other data. Neither report module is
imported here, so report.py can dispatch to cv_report.py without an import cycle.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mammo_tui.collapse import format_distribution
from mammo_tui.events import CollapseStatus, ConfigChanged
from mammo_tui.labels import CLASS_NAMES
from mammo_tui.markdown import table
from mammo_tui.runread import RunRecord, read_json_file
from mammo_tui.stats import format_mean_std

REPORT_FILE = "report.md"

# The settings that decide whether a run collapses, in the order a reader checks them.
CONFIG_TABLE_KEYS = (
    "arch", "pretrained", "weights", "freeze", "warmup_epochs", "sampler", "class_weights", "loss",
    "focal_gamma", "la_tau", "lr", "weight_decay", "scheduler", "epochs", "batch_size", "img_size",
    "augment", "early_stop_patience", "val_fraction", "seed", "on_collapse", "device",
)

STATUS_MEANING = {
    "healthy": "the best checkpoint passed every collapse check.",
    "warning": "the best checkpoint shows warning signs of collapse (see *Collapse checks*).",
    "collapsed": "the best checkpoint predicts (almost) only one class: do not use it; see the "
                 "suggested config changes under *Collapse checks*.",
    "interrupted": "stopped before the last epoch; everything up to the last finished epoch is saved.",
    "failed": "training failed; the last good checkpoints are kept.",
    "running": "no final summary yet: the run is still going, or its process was killed "
               "(kill -9, power loss) before it could finish.",
}


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value in ("", None):
        return '""' if value == "" else "n/a"
    return str(value)


def fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def class_names_of(n: int) -> list[str]:
    return list(CLASS_NAMES) if n == len(CLASS_NAMES) else [str(i) for i in range(n)]


def config_table(final: dict[str, Any], launched: dict[str, Any]) -> list[str]:
    """The collapse-relevant keys (launched -> final where a recovery changed one); shared with CV."""
    rows = []
    for key in CONFIG_TABLE_KEYS:
        if key not in final and key not in launched:
            continue
        before, after = launched.get(key, final.get(key)), final.get(key, launched.get(key))
        shown = (fmt_value(after) if before == after
                 else f"{fmt_value(before)} -> {fmt_value(after)} (changed during the run)")
        rows.append([key, shown])
    lines = [table(["key", "value"], rows)]
    if final.get("sampler") == "weighted" and final.get("class_weights") == "balanced":
        lines += ["", "Note: weighted sampler and class weights are both on (double balancing)."]
    return lines


def collapse_lines(run: RunRecord, suggestions: bool = True) -> list[str]:
    """One bullet per flagged epoch (with the suggested fixes unless `suggestions` is off), or a
    one-line verdict; the CV report lists each fold's with suggestions off."""
    checks = {e.epoch: e for e in run.of_type(CollapseStatus)}  # the last check per epoch wins
    if not checks:
        summary_events = (run.summary or {}).get("collapse_events") or []
        if not summary_events:
            return ["No collapse check ran (no epoch finished)." if not run.epochs
                    else "Every epoch passed the collapse checks."]
        return [f"- epoch {c['epoch']}: **{c['status']}**" for c in summary_events]
    flagged = [checks[k] for k in sorted(checks) if checks[k].status != "healthy"]
    lines = [] if flagged else [f"All {len(checks)} checked epochs were healthy."]
    shown: tuple = ()
    shown_at = None
    for check in flagged:
        lines.append(f"- epoch {check.epoch}: **{check.status}**: {'; '.join(check.reasons)}")
        top = tuple((s["key"], str(s["value"])) for s in check.suggestions[:3])
        if not suggestions:
            continue
        if top and top == shown:  # a run stuck in one state repeats itself; say it once
            lines.append(f"  - same suggestions as epoch {shown_at}")
            continue
        shown, shown_at = top, check.epoch
        for s in check.suggestions[:3]:
            lines.append(f"  - suggested `--set {s['key']}={fmt_value(s['value'])}`: {s['reason']}")
    return lines


def change_lines(run: RunRecord) -> list[str]:
    changes = [(e.epoch, e.changes, e.reason) for e in run.of_type(ConfigChanged)]
    if not changes:
        changes = [(c["epoch"], c["changes"], c["reason"]) for c in (run.summary or {}).get("changes") or []]
    if not changes:
        return ["None: the config stayed as launched."]
    lines = []
    for epoch, diff, reason in changes:
        listing = (", ".join(f"{k} {fmt_value(a)} -> {fmt_value(b)}" for k, (a, b) in diff.items())
                   or "no key changed")
        lines.append(f"- after epoch {epoch}: {listing} ({reason})")
    return lines


def evaluations_section(folder: Path) -> list[str]:
    """The eval-*.json files in a run's (or a CV's) folder; a CV's are the folds' ensemble."""
    rows = []
    cv = False
    for path in sorted(folder.glob("eval-*.json")):
        data = read_json_file(path, [])
        if data is None:
            continue
        spread = ""
        if data.get("ensemble"):  # ensemble metrics, plus how much the folds alone vary
            cv = True
            spread = format_mean_std((data.get("aggregate") or {}).get("kappa_quadratic"))
        rows.append([path.name, data.get("dataset", "n/a"), data.get("n", "n/a"),
                     fmt_num(data.get("kappa_quadratic")), fmt_num(data.get("balanced_accuracy_adjusted")),
                     fmt_num(data.get("auc_macro")), format_distribution(data.get("prediction_distribution") or []),
                     spread])
    if not rows:
        return []
    headers = ["file", "dataset", "n", "kappa_q", "bal_acc_adj", "AUC", "predictions"]
    if cv:
        return ["## Evaluations on other data", "",
                "Metrics of the folds' ensemble (mean of their probabilities); the last column is "
                "kappa_q of the fold models alone, mean ± std.", "",
                table([*headers, "folds kappa_q"], rows, right=(2, 3, 4, 5, 7))]
    return ["## Evaluations on other data", "", table(headers, [r[:-1] for r in rows], right=(2, 3, 4, 5))]
