"""`mammo-tui report RUN_DIR`: one Markdown file that explains a run (pure: no torch, no textual).

Everything comes from the run directory: summary.json (status, best epoch and its metrics),
events.jsonl (per-epoch metrics, collapse checks, config changes, checkpoints, warnings),
config.toml and dataset.json. Curves are plotext text plots inside ``` fences, so the same file
reads well in a terminal (`less report.md`) and on GitHub. Tables are padded so their columns line
up in plain text too. A run that was interrupted, failed or never finished an epoch still gets a
report that says so; only a folder that is not a run directory is an error.

A cross-validation directory (cv.json, fold-1/ ... fold-K/) gets one report over its folds: a
per-fold table with mean ± std from cv_summary.json, each fold's collapse checks and config changes
in short, and links to the folds' own reports; an unfinished CV says how to continue it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mammo_tui.collapse import format_distribution, format_percent
from mammo_tui.drivers.cv import (CV_FILE, CV_SUMMARY_FILE, FINISHED, aggregate, fold_recalls, format_mean_std,
                          is_cv_dir, read_cv_summary, read_manifest, worst_status)
from mammo_tui.errors import RunDirError
from mammo_tui.labels import CLASS_NAMES
from mammo_tui.markdown import table, when as _when
from mammo_tui.rundir import (CHECKPOINT_DIR, CONFIG_FILE, DATASET_FILE, SPLITS_FILE, SUMMARY_FILE,
                              atomic_write_text, group_kind)
from mammo_tui.runlog import EVENTS_FILE, read_events

REPORT_FILE = "report.md"
FIGURE_FILE = "report-curves.png"
PLOT_WIDTH, PLOT_HEIGHT = 72, 16  # fits an 80-column terminal with the fence and some margin
MAX_PROBLEM_EXAMPLES = 5
MAX_LOG_LINES = 30

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

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------
# reading the run directory


@dataclass
class RunData:
    """Everything the report needs, read once from the run directory."""

    path: Path
    summary: dict[str, Any] | None
    events: list[Any]
    config_launched: dict[str, Any]
    dataset: dict[str, Any] | None
    read_notes: list[str] = field(default_factory=list)  # files that exist but cannot be read

    def of_type(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    @property
    def name(self) -> str:
        return (self.summary or {}).get("run_name") or self.path.name

    @property
    def config(self) -> dict[str, Any]:
        """The config at the end of the run (a recovery may have changed the launched one)."""
        if self.summary and self.summary.get("config"):
            return self.summary["config"]
        started = self.of_type("run_started")
        return started[-1].config if started else self.config_launched

    @property
    def epochs(self) -> list[Any]:
        """Epoch events, one per epoch: a resume after a kill -9 may repeat one; the last wins."""
        by_epoch = {e.epoch: e for e in self.of_type("epoch")}
        return [by_epoch[k] for k in sorted(by_epoch)]

    @property
    def status(self) -> str:
        if self.summary and self.summary.get("status"):
            return self.summary["status"]
        terminal = [e for e in self.events if e.type in ("finished", "failed")]
        if terminal:
            return "failed" if terminal[-1].type == "failed" else terminal[-1].status
        return "running"

    @property
    def best_epoch(self) -> int | None:
        if self.summary is not None:
            return self.summary.get("best_epoch")
        best = [e for e in self.of_type("checkpoint") if e.kind == "best"]
        return best[-1].epoch if best else None

    def metrics_of(self, epoch: int | None) -> dict[str, Any]:
        if epoch is None:
            return {}
        if self.summary and self.summary.get("best_epoch") == epoch and self.summary.get("best_metrics"):
            return self.summary["best_metrics"]
        found = [e for e in self.epochs if e.epoch == epoch]
        return found[0].metrics if found else {}


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({exc.__class__.__name__}); it is left out")
        return None
    return data if isinstance(data, dict) else None


def _read_toml(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({exc.__class__.__name__}); it is left out")
        return {}


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; RunDirError when it is missing or not a mammo-tui run."""
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise RunDirError(f"{path}: no such run directory. List runs with `mammo-tui runs`.")
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory; pass a run directory such as runs/<run-name>")
    markers = (SUMMARY_FILE, EVENTS_FILE, CONFIG_FILE)
    if not any((path / name).is_file() for name in markers):
        raise RunDirError(f"{path}: not a mammo-tui run directory (none of {', '.join(markers)} is "
                          "there). Run directories are created by `mammo-tui train` under runs/.")
    notes: list[str] = []
    summary = _read_json(path / SUMMARY_FILE, notes)
    events: list[Any] = []
    if (path / EVENTS_FILE).is_file():
        try:
            events = read_events(path)
        except OSError as exc:
            notes.append(f"{EVENTS_FILE} cannot be read ({exc.strerror or exc}); curves are left out")
    return RunData(path=path, summary=summary, events=events,
                   config_launched=_read_toml(path / CONFIG_FILE, notes),
                   dataset=_read_json(path / DATASET_FILE, notes), read_notes=notes)


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value in ("", None):
        return '""' if value == "" else "n/a"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "." * (width - filled)


def _class_names(n: int) -> list[str]:
    return list(CLASS_NAMES) if n == len(CLASS_NAMES) else [str(i) for i in range(n)]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def text_plot(title: str, xs: Sequence[int], series: Sequence[tuple[str, Sequence[Any], str]],
              width: int = PLOT_WIDTH, height: int = PLOT_HEIGHT) -> str:
    """A plotext line plot as plain text (no colour codes). series: (label, ys, marker)."""
    import plotext as plt

    plt.clear_figure()
    plt.theme("clear")
    plt.plot_size(width, height)
    for label, ys, marker in series:
        points = [(x, y) for x, y in zip(xs, map(_finite, ys)) if y is not None]
        if points:
            plt.plot([p[0] for p in points], [p[1] for p in points], label=label, marker=marker)
    plt.title(title)
    plt.xlabel("epoch")
    if len(xs) <= 15:
        plt.xticks(list(xs), [str(x) for x in xs])  # whole epochs, not 1.50
    # theme('clear') still emits reset codes; a report file must hold plain text
    text = _ANSI.sub("", plt.build())
    plt.clear_figure()
    return "\n".join(line.rstrip() for line in text.splitlines())


# ---------------------------------------------------------------------------------------------
# sections


def _status_section(run: RunData) -> list[str]:
    s = run.summary or {}
    status = run.status
    starts = run.of_type("run_started")
    started = s.get("started") or (starts[0].time if starts else None)
    device = s.get("device") or (starts[-1].device if starts else "n/a")
    facts = [f"**Status: {status}**",
             f"epochs {s.get('epochs_completed', len(run.epochs))}/{s.get('epochs', run.config.get('epochs', '?'))}",
             f"best epoch {run.best_epoch if run.best_epoch is not None else 'none'}",
             f"device {device}", f"started {_when(started)}"]
    if s.get("finished") and started:
        facts.append(f"took {_duration(s['finished'] - started)}")
    lines = [" · ".join(facts), "", f"{status.capitalize()}: {STATUS_MEANING.get(status, 'unknown status.')}"]
    error = s.get("error") or next((e.error for e in reversed(run.events) if e.type == "failed"), "")
    if error:
        lines += ["", f"Error: {error}"]
    resume = f"`mammo-tui train --no-ui --resume {run.path}`"
    if status in ("interrupted", "failed"):
        lines += ["", f"Continue it with {resume}."]
    elif status == "running":
        lines += ["", f"Follow it live with `mammo-tui watch {run.path}`; if its process is gone, "
                      f"continue it with {resume}."]
    if starts[1:]:
        lines += ["", "Resumed at epoch " + ", ".join(str(e.start_epoch) for e in starts[1:]) + "."]
    if run.best_epoch is not None and s.get("last_status") == "collapsed" and status != "collapsed":
        lines += ["", f"The last epoch collapsed; `checkpoints/best.pt` (epoch {run.best_epoch}) is "
                      "the one to use."]
    lines += [line for note in run.read_notes for line in ("", f"Note: {note}")]
    return lines


def _headline_section(run: RunData) -> list[str]:
    best_epoch = run.best_epoch
    best = run.metrics_of(best_epoch)
    epochs = run.epochs
    if not best and not epochs:
        return ["## Headline metrics", "", "No epoch finished, so there are no validation metrics yet."]
    last_epoch = epochs[-1].epoch if epochs else (run.summary or {}).get("epochs_completed")
    last = (run.summary or {}).get("last_metrics") or (epochs[-1].metrics if epochs else {})
    rows_spec = [("kappa (quadratic weights) - headline", "kappa_quadratic"),
                 ("balanced accuracy, adjusted", "balanced_accuracy_adjusted"),
                 ("balanced accuracy", "balanced_accuracy"),
                 ("macro AUC (one-vs-rest)", "auc_macro"),
                 ("kappa (unweighted, collapse rule)", "kappa"),
                 ("accuracy (misleading on imbalanced data)", "accuracy"),
                 ("validation images", "n")]
    headers = ["metric", f"best (epoch {best_epoch})"]
    show_last = last and last_epoch != best_epoch
    if show_last:
        headers.append(f"last (epoch {last_epoch})")
    rows = [[label, _num(best.get(key))] + ([_num(last.get(key))] if show_last else [])
            for label, key in rows_spec]
    lines = ["## Headline metrics", "",
             "The best checkpoint is chosen by balanced accuracy (adjusted), then quadratic kappa, "
             "then AUC; never by raw accuracy.", "",
             table(headers, rows, right=range(1, len(headers)))]
    test = (run.summary or {}).get("test_metrics")
    if test:  # the dataset's official test side: touched once, by the best checkpoint
        lines += ["", f"On the dataset's official test side ({test['n_images']} images, {test['n_patients']} patients; "
                  "never seen in training or selection), the best checkpoint scores:", "",
                  table(["metric", "test"], [[label, _num(test.get(key))] for label, key in rows_spec[:4]],
                        right=(1,))]
    return lines


def _config_section(run: RunData) -> list[str]:
    final, launched = run.config, run.config_launched or run.config
    if not final:
        return ["## Configuration", "", f"No configuration found ({CONFIG_FILE} is missing)."]
    summary, dataset = run.summary or {}, run.dataset or {}
    preset = summary.get("preset") or dataset.get("preset") or "not recorded"
    origin = summary.get("origin") or dataset.get("origin")
    lines = ["## Configuration", "", f"Preset: `{preset}`" + (f" ({origin})" if origin else "")
             + f". Every key is in `{CONFIG_FILE}`; reuse it with `--preset <run>/config.toml`."]
    parent = summary.get("parent_run") or dataset.get("parent_run")
    if parent:
        lines += ["", f"Started by applying a fix to the run `{parent}`."]
    lines += ["", *_config_table(final, launched), *_history_lines(summary.get("config_history") or [])]
    reasons = (dataset.get("plan") or {}).get("reasons") or []
    if reasons:
        lines += ["", "Why the decision flow picked it:", "", *[f"- {r}" for r in reasons]]
    return lines


def _history_lines(history: list[dict[str, Any]]) -> list[str]:
    """Which config trained which epochs (summary.json's config_history), when it changed."""
    if len(history) < 2:
        return []
    rows = []
    for segment in history:
        first, last = segment["epochs"]
        epochs = f"{first}-{last}" if last > first else (str(first) if last == first else f"{first}- (none yet)")
        changes = ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, (a, b) in segment.get("changes", {}).items())
        rows.append([epochs, changes or "launch config", segment.get("reason", "")])
    return ["", "Config history (which config trained which epochs):", "",
            table(["epochs", "config", "why"], rows)]


def _config_table(final: dict[str, Any], launched: dict[str, Any]) -> list[str]:
    """The collapse-relevant keys (launched -> final where a recovery changed one); shared with CV."""
    rows = []
    for key in CONFIG_TABLE_KEYS:
        if key not in final and key not in launched:
            continue
        before, after = launched.get(key, final.get(key)), final.get(key, launched.get(key))
        shown = _value(after) if before == after else f"{_value(before)} -> {_value(after)} (changed during the run)"
        rows.append([key, shown])
    lines = [table(["key", "value"], rows)]
    if final.get("sampler") == "weighted" and final.get("class_weights") == "balanced":
        lines += ["", "Note: weighted sampler and class weights are both on (double balancing)."]
    return lines


def _dataset_section(run: RunData) -> list[str]:
    info = run.dataset
    if not info:
        return ["## Dataset", "", f"No dataset record ({DATASET_FILE} is missing)."]
    fp = info.get("fingerprint") or {}
    report = info.get("report") or {}
    lines = ["## Dataset", "", f"Source: {fp.get('source') or report.get('source', 'n/a')}"
             + (" (the built-in demo dataset)" if info.get("demo") else ""), ""]
    counts = fp.get("class_counts") or []
    started = run.of_type("run_started")
    header = ["class", "images"]
    split = started[0] if started else None
    if split:
        header += ["train", "val"]
    rows = []
    for i, name in enumerate(_class_names(len(counts))):
        row = [name, counts[i]]
        if split:
            row += [split.train_counts[i], split.val_counts[i]]
        rows.append(row)
    if counts:
        total = ["total", sum(counts)] + ([split.n_train, split.n_val] if split else [])
        lines += [table(header, rows + [total], right=range(1, len(header))), ""]
    ratio = fp.get("imbalance_ratio")
    facts = [f"images: {fp.get('n_images', 'n/a')}, patients (groups): {fp.get('n_patients', 'n/a')}",
             f"imbalance ratio (largest / smallest class): "
             f"{_num(ratio, 1) if ratio is not None else 'infinite (a class has no images)'}",
             f"rows read: {fp.get('rows_read', 'n/a')}, rows usable: {fp.get('rows_usable', 'n/a')}"]
    for key, label in (("width", "width px"), ("height", "height px")):
        stats = fp.get(key)
        if stats:
            facts.append(f"{label}: min {stats['min']}, median {stats['median']:g}, max {stats['max']}")
    for key in ("formats", "photometric", "transfer_syntaxes", "modalities", "views"):
        if fp.get(key):
            facts.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in fp[key].items()))
    if fp.get("layout"):
        facts.insert(0, f"layout: {fp['layout']} ({report.get('mapped', '')})")
    if fp.get("left_out"):
        facts.append("left out (no usable label, an excluded view, not downloaded): "
                     + "; ".join(f"{k} {v}" for k, v in fp["left_out"].items()))
    facts += [note for note in fp.get("group_notes") or []]
    lines += [f"- {fact}" for fact in facts]
    lines += ["", *_problem_lines(report, bool(info.get("skip_bad_rows")))]
    return lines


def _problem_lines(report: dict[str, Any], skipped: bool) -> list[str]:
    counts = report.get("problem_counts") or {}
    if not counts:
        lines = ["Validation: no problems found."]
    else:
        verb = "left out (--skip-bad-rows)" if skipped else "reported"
        lines = [f"Validation: {sum(counts.values())} problems {verb}:", ""]
        problems = report.get("problems") or []
        for kind, n in counts.items():
            lines.append(f"- {kind}: {n}")
            examples = [p for p in problems if p.get("kind") == kind][:MAX_PROBLEM_EXAMPLES]
            lines += [f"  - {p.get('message', '')}" for p in examples]
            if n > len(examples):
                lines.append(f"  - ... and {n - len(examples)} more (all in {DATASET_FILE})")
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    return lines


def _curves_section(run: RunData) -> list[str]:
    epochs = run.epochs
    lines = ["## Training curves", ""]
    if not epochs:
        return lines + ["No epoch finished: nothing to plot yet."]
    xs = [e.epoch for e in epochs]
    loss = text_plot("loss (* train, o validation)", xs,
                     [("train loss", [e.train_loss for e in epochs], "*"),
                      ("val loss", [e.val_loss for e in epochs], "o")])
    quality = text_plot("validation (* kappa quadratic, o balanced acc. adj.)", xs,
                        [("kappa_quadratic", [e.metrics.get("kappa_quadratic") for e in epochs], "*"),
                         ("bal_acc_adj", [e.metrics.get("balanced_accuracy_adjusted") for e in epochs], "o")])
    lines += ["```text", loss, "```", "", "```text", quality, "```", ""]
    status_of = {e.epoch: e.status for e in run.of_type("collapse")}
    best = run.best_epoch
    rows = [[f"{e.epoch}{' *' if e.epoch == best else ''}", e.trainable, _num(e.train_loss, 4), _num(e.val_loss, 4),
             _num(e.metrics.get("kappa_quadratic")), _num(e.metrics.get("balanced_accuracy_adjusted")),
             _num(e.metrics.get("auc_macro")), f"{e.lr:.2g}", status_of.get(e.epoch, "n/a"),
             format_distribution(e.metrics.get("prediction_distribution") or [])]
            for e in epochs]
    lines += [table(["epoch", "trained", "train loss", "val loss", "kappa_q", "bal_acc_adj", "AUC", "lr",
                     "status", "predictions"], rows, right=(2, 3, 4, 5, 6, 7)),
              "", "`*` marks the best epoch."]
    return lines


def _best_epoch_section(run: RunData) -> list[str]:
    epoch = run.best_epoch
    metrics = run.metrics_of(epoch)
    title = f"## Best epoch ({epoch}): validation in detail" if epoch is not None else "## Best epoch"
    if not metrics or not metrics.get("confusion_matrix"):
        return [title, "", "No best epoch yet: no confusion matrix or per-class metrics."]
    matrix = metrics["confusion_matrix"]
    names = _class_names(len(matrix))
    rows = [[names[i], *row, sum(row)] for i, row in enumerate(matrix)]
    rows.append(["total", *[sum(col) for col in zip(*matrix)], sum(map(sum, matrix))])
    lines = [title, "", "### Confusion matrix", "",
             "Rows are the true class, columns the predicted class.", "",
             table(["true \\ predicted", *names, "total"], rows, right=range(1, len(names) + 2)), ""]
    per_class = [[names[i], metrics["true_counts"][i], metrics["prediction_counts"][i],
                  _num(metrics["precision_per_class"][i]), _num(metrics["recall_per_class"][i]),
                  _num(metrics["f1_per_class"][i])] for i in range(len(names))]
    lines += ["### Per-class metrics", "",
              table(["class", "true", "predicted", "precision", "recall", "F1"], per_class, right=(1, 2, 3, 4, 5)),
              ""]
    absent = [names[i] for i, n in enumerate(metrics["true_counts"]) if n == 0]
    if absent:
        lines += [f"Class {', '.join(absent)} has no validation images: its recall and F1 mean nothing.", ""]
    true_d, pred_d = metrics["true_distribution"], metrics["prediction_distribution"]
    dist = [[names[i], format_percent(true_d[i]), _bar(true_d[i]), format_percent(pred_d[i]), _bar(pred_d[i])]
            for i in range(len(names))]
    lines += ["### Predictions vs truth", "",
              table(["class", "true", "", "predicted", ""], dist, right=(1, 3)), "",
              f"True: {format_distribution(true_d)}; predicted: {format_distribution(pred_d)}."]
    return lines


def _collapse_section(run: RunData) -> list[str]:
    lines = ["## Collapse checks", "", *_collapse_lines(run)]
    if run.of_type("collapse"):  # no check in the log: the summary's short list says it all
        lines += ["", "### Config changes during the run", "", *_change_lines(run)]
    return lines


def _collapse_lines(run: RunData, suggestions: bool = True) -> list[str]:
    """One bullet per flagged epoch (with the suggested fixes unless `suggestions` is off), or a
    one-line verdict; the CV report lists each fold's with suggestions off."""
    checks = {e.epoch: e for e in run.of_type("collapse")}  # the last check per epoch wins
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
            lines.append(f"  - suggested `--set {s['key']}={_value(s['value'])}`: {s['reason']}")
    return lines


def _change_lines(run: RunData) -> list[str]:
    changes = [(e.epoch, e.changes, e.reason) for e in run.of_type("config_changed")]
    if not changes:
        changes = [(c["epoch"], c["changes"], c["reason"]) for c in (run.summary or {}).get("changes") or []]
    if not changes:
        return ["None: the config stayed as launched."]
    lines = []
    for epoch, diff, reason in changes:
        listing = ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, (a, b) in diff.items()) or "no key changed"
        lines.append(f"- after epoch {epoch}: {listing} ({reason})")
    return lines


def _log_section(run: RunData) -> list[str]:
    notable = [e for e in run.of_type("log") if e.level in ("warning", "error")]
    if not notable:
        return []
    lines = ["## Warnings from the run", ""]
    for e in notable[:MAX_LOG_LINES]:
        where = f"epoch {e.epoch}: " if e.epoch is not None else ""
        lines.append(f"- {e.level}: {where}{e.message}")
    if len(notable) > MAX_LOG_LINES:
        lines.append(f"- ... and {len(notable) - MAX_LOG_LINES} more in {EVENTS_FILE}")
    return lines


def _evaluations_section(folder: Path) -> list[str]:
    """The eval-*.json files in a run's (or a CV's) folder; a CV's are the folds' ensemble."""
    rows = []
    cv = False
    for path in sorted(folder.glob("eval-*.json")):
        data = _read_json(path, [])
        if data is None:
            continue
        spread = ""
        if data.get("ensemble"):  # ensemble metrics, plus how much the folds alone vary
            cv = True
            spread = format_mean_std((data.get("aggregate") or {}).get("kappa_quadratic"))
        rows.append([path.name, data.get("dataset", "n/a"), data.get("n", "n/a"),
                     _num(data.get("kappa_quadratic")), _num(data.get("balanced_accuracy_adjusted")),
                     _num(data.get("auc_macro")), format_distribution(data.get("prediction_distribution") or []),
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


def _files_section(run: RunData) -> list[str]:
    saved = {e.kind: e for e in run.of_type("checkpoint")}
    rows = []
    for kind in ("best", "last"):
        path = run.path / CHECKPOINT_DIR / f"{kind}.pt"
        if path.is_file():
            epoch = saved[kind].epoch if kind in saved else "n/a"
            rows.append([f"`{CHECKPOINT_DIR}/{kind}.pt`", epoch, f"{path.stat().st_size / 1e6:.1f} MB"])
    lines = ["## Files", ""]
    if rows:
        lines += [table(["checkpoint", "epoch", "size"], rows, right=(1, 2)), ""]
    else:
        lines += ["No checkpoint yet (none is written before the first epoch finishes).", ""]
    lines.append(f"Run directory: `{run.path.resolve()}`")
    for name, what in ((CONFIG_FILE, "the resolved config"), (EVENTS_FILE, "every engine event"),
                       (SPLITS_FILE, "the train/val split"), (DATASET_FILE, "fingerprint + validation report"),
                       (SUMMARY_FILE, "status and best metrics")):
        if (run.path / name).is_file():
            lines.append(f"- `{name}`: {what}")
    if (run.path / CHECKPOINT_DIR / "best.pt").is_file():
        lines += ["", "Use the best checkpoint:", "",
                  "```bash",
                  f"mammo-tui evaluate {run.path} --csv other.csv [--dicom-root DIR | --images DIR]",
                  f"mammo-tui predict {run.path} IMAGE... --out predictions.csv",
                  "```"]
    return lines


def render_report(run: RunData, figures: Sequence[str] = ()) -> str:
    """The Markdown text; `figures`: image files (relative to the report) to embed."""
    sections = [
        [f"# Run report: {run.name}", "", *_status_section(run)],
        _headline_section(run),
        _config_section(run),
        _dataset_section(run),
        _curves_section(run),
        ["## Figures", "", *[f"![training curves]({name})" for name in figures]] if figures else [],
        _best_epoch_section(run),
        _collapse_section(run),
        _log_section(run),
        _evaluations_section(run.path),
        _files_section(run),
    ]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return body + f"\n\n---\nWritten by mammo-tui on {_when(time.time())}.\n"


def build_report(run_dir: str | Path) -> str:
    """The Markdown report of one run or of a cross-validation directory (fold links relative to it);
    RunDirError when run_dir is neither."""
    if group_kind(run_dir) == "sweep":  # laid out by drivers/sweep_report.py with this module's tables
        from mammo_tui.drivers.sweep_report import render_sweep_report

        return render_sweep_report(run_dir)
    if is_cv_dir(run_dir):
        cv = load_cv(run_dir)
        return render_cv_report(cv, cv.path)
    return render_report(load_run(run_dir))


# ---------------------------------------------------------------------------------------------
# cross-validation: one report over the folds, each fold keeping its own run report


@dataclass
class CVData:
    """cv.json, cv_summary.json (None until every fold finished) and each fold's run (None: not started)."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any] | None
    folds: dict[int, RunData | None]

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def rows(self) -> list[dict[str, Any]]:
        """One row per fold: cv_summary.json's when there is one, else each fold's summary.json."""
        if self.summary:
            return list(self.summary.get("per_fold") or [])
        rows = []
        for fold, run in self.folds.items():
            s = (run.summary if run else None) or {}
            rows.append({"fold": fold, "status": s.get("status"),
                         "best_epoch": s.get("best_epoch"), "best_metrics": s.get("best_metrics") or {}})
        return rows

    @property
    def status(self) -> str:
        if self.summary:
            return self.summary.get("status") or worst_status([r["status"] for r in self.rows()])
        return self.manifest.get("status") or "running"  # running, interrupted or failed

    @property
    def collapsed_folds(self) -> list[int]:
        if self.summary:
            return list(self.summary.get("collapsed_folds") or [])
        return [r["fold"] for r in self.rows() if r["status"] == "collapsed"]


def load_cv(cv_dir: str | Path) -> CVData:
    path = Path(cv_dir).expanduser()
    manifest, summary = read_manifest(path) or {}, read_cv_summary(path)
    count = int(manifest.get("folds") or (summary or {}).get("folds") or 0)
    if not count:
        raise RunDirError(f"{path}: {CV_FILE} and {CV_SUMMARY_FILE} cannot be read; not a usable "
                          "cross-validation directory")
    folds: dict[int, RunData | None] = {}
    for fold in range(1, count + 1):
        try:
            folds[fold] = load_run(path / f"fold-{fold}")
        except RunDirError:  # not started yet (or its folder holds nothing of a run)
            folds[fold] = None
    return CVData(path=path, manifest=manifest, summary=summary, folds=folds)


def _fold_link(cv: CVData, fold: int, base: Path) -> str:
    """A link to the fold's report.md, relative to the folder the CV report is written in."""
    target = os.path.relpath((cv.path / f"fold-{fold}" / REPORT_FILE).resolve(), base.resolve())
    target = Path(target).as_posix()
    return f"[{target}]({target})"


def _cv_status_section(cv: CVData) -> list[str]:
    rows = cv.rows()
    done = [r for r in rows if r["status"] in FINISHED]
    started = cv.manifest.get("started")
    facts = [f"**Status: {cv.status}**", f"{len(done)}/{len(cv.folds)} folds finished",
             f"started {_when(started)}"]
    ends = [run.summary.get("finished") for run in cv.folds.values() if run and run.summary]
    if cv.finished and started and all(ends):
        facts.append(f"took {_duration(max(ends) - started)}")
    lines = [" · ".join(facts), ""]
    collapsed = cv.collapsed_folds
    if collapsed:  # one collapsed fold makes the method unreliable on this data: say it first
        lines += [f"> **COLLAPSED: fold {', '.join(map(str, collapsed))}.** Its best checkpoint predicts "
                  "(almost) only one class, so this configuration is not reliable on this data; see its "
                  "collapse checks under *Folds* and its own report.", ""]
    if cv.finished:
        lines.append(f"{cv.status.capitalize()}, the worst fold's status (a cross-validation is as healthy "
                     f"as its worst fold): {STATUS_MEANING.get(cv.status, 'unknown status.')}")
    else:
        lines.append(f"Not finished: {len(cv.folds) - len(done)} of {len(cv.folds)} folds have no result "
                     "yet, so there is no mean ± std over the folds.")
        resume = f"`mammo-tui cv --resume {cv.path}`"
        if cv.status == "running":
            lines += ["", f"Follow it live with `mammo-tui watch {cv.path}`; if its process is gone, "
                          f"continue it with {resume}."]
        else:
            lines += ["", f"Continue it with {resume} (finished folds are kept)."]
    return lines


def _cv_folds_section(cv: CVData) -> list[str]:
    rows = []
    absent = False
    for r in cv.rows():
        m = r.get("best_metrics") or {}
        run = cv.folds.get(r["fold"])
        status = r["status"] if r["status"] in FINISHED else \
            "not finished" + (f" ({run.status})" if run and run.status != "running" else "")
        recall = fold_recalls(m)  # None (n/a) for a class absent from the fold's validation set
        absent = absent or (bool(m) and None in recall)
        rows.append([r["fold"], status, _value(r.get("best_epoch")), _num(m.get("kappa_quadratic")),
                     _num(m.get("balanced_accuracy_adjusted")), _num(m.get("auc_macro")),
                     *[_num(v) for v in (recall + [None] * len(CLASS_NAMES))[:len(CLASS_NAMES)]]])
    # recomputed from the rows: a cv_summary.json written before absent classes were left out of
    # the recall means averaged their zeros in
    agg = aggregate(cv.rows()) if cv.summary else None
    if agg:  # mean and std as two rows keep the table narrow enough for a terminal
        stats = [agg.get(k) or {} for k in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro")]
        stats += [(agg.get("recall_per_class") or {}).get(name) or {} for name in CLASS_NAMES]
        for label in ("mean", "std"):
            rows.append([label, "", "", *[_num(st.get(label)) for st in stats]])
    headers = ["fold", "status", "best epoch", "kappa_q", "bal_acc_adj", "AUC",
               *[f"recall {name}" for name in CLASS_NAMES]]
    intro = "Validation metrics of each fold's best checkpoint."
    if absent:
        intro += (" n/a: the fold's validation set has no image of that class (no recall to measure); "
                  "that class's mean is over the folds that have it.")
    lines = ["## Folds", "", intro, "", table(headers, rows, right=range(2, len(headers)))]
    if agg:
        spec = [("kappa (quadratic weights) - headline", agg.get("kappa_quadratic")),
                ("balanced accuracy, adjusted", agg.get("balanced_accuracy_adjusted")),
                ("macro AUC (one-vs-rest)", agg.get("auc_macro")),
                ("accuracy (misleading on imbalanced data)", agg.get("accuracy")),
                *[(f"recall {name}", st) for name, st in (agg.get("recall_per_class") or {}).items()]]

        def folds(st: dict[str, Any] | None) -> str:  # "3 of 5" where a class is absent from some folds
            st = st or {}
            if st.get("folds") is not None and st.get("n", 0) < st["folds"]:
                return f"{st.get('n', 0)} of {st['folds']}"
            return _value(st.get("n"))

        summary = [[label, format_mean_std(st), folds(st)] for label, st in spec]
        lines += ["", "### Mean ± std over the folds", "",
                  table(["metric", "mean ± std", "folds"], summary, right=(1, 2))]
    return lines


def _cv_fold_details(cv: CVData, base: Path) -> list[str]:
    """Each fold's collapse checks and config changes in short (no suggestions: the fold report
    has them), and where its own report is."""
    lines = ["## Collapse checks and config changes per fold", ""]
    for fold, run in cv.folds.items():
        if run is None:
            lines.append(f"- **fold {fold}**: not started; no report yet.")
            continue
        lines.append(f"- **fold {fold}** ({run.status}, best epoch {_value(run.best_epoch)}): "
                     f"{_fold_link(cv, fold, base)}")
        for line in [*_collapse_lines(run, suggestions=False), *_change_lines(run)]:
            lines.append("  " + (line if line.startswith("- ") else f"- {line}"))
    return lines


def _cv_config_section(cv: CVData) -> list[str]:
    config = cv.manifest.get("config") or {}
    data = cv.manifest.get("dataset") or {}
    if cv.manifest.get("demo"):
        source = "the built-in demo dataset" + (f" (size {_value(cv.manifest['demo_size'])})"
                                                if cv.manifest.get("demo_size") is not None else "")
    else:
        source = ", ".join(f"{key} `{value}`" for key, value in data.items() if value) or "not recorded"
    fp = next(((run.dataset or {}).get("fingerprint") for run in cv.folds.values()
               if run and (run.dataset or {}).get("fingerprint")), None) or {}
    counts = fp.get("class_counts") or []
    lines = ["## Dataset and configuration", "", f"- dataset: {source}"]
    if fp:
        lines.append(f"- images: {fp.get('n_images', 'n/a')}, patients (groups): {fp.get('n_patients', 'n/a')}"
                     + (", classes: " + ", ".join(f"{n} {c}" for n, c in zip(_class_names(len(counts)), counts))
                        if counts else ""))
    lines += [f"- preset: `{cv.manifest.get('preset') or 'not recorded'}`",
              f"- folds: {len(cv.folds)}, patient-grouped and stratified: every patient's images are in "
              "one fold's validation set", ""]
    if not config:
        return lines + [f"No configuration found ({CV_FILE} is missing or unreadable)."]
    return lines + [f"Every fold trains with this config (all keys in `{CV_FILE}`); a change made by "
                    "`--on-collapse recover` is listed under that fold above.", "", *_config_table(config, config)]


def render_cv_report(cv: CVData, base: Path) -> str:
    """The Markdown text of a cross-validation; `base`: the folder the report goes to (for links)."""
    sections = [[f"# Cross-validation report: {cv.path.name}", "", *_cv_status_section(cv)],
                _cv_folds_section(cv), _evaluations_section(cv.path), _cv_fold_details(cv, base),
                _cv_config_section(cv),
                ["## Files", "", f"Cross-validation directory: `{cv.path.resolve()}`",
                 *[f"- `{name}`: {what}" for name, what in
                   ((CV_FILE, "what to train, where it stands (for --resume)"),
                    (CV_SUMMARY_FILE, "per-fold results and mean ± std")) if (cv.path / name).is_file()],
                 "- `fold-N/`: each fold's own run directory (`mammo-tui watch`, `evaluate`, `predict`, `report`)"]]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return body + f"\n\n---\nWritten by mammo-tui on {_when(time.time())}.\n"


# ---------------------------------------------------------------------------------------------
# optional PNG figures (matplotlib is not a dependency: used only when it is installed)


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_figures(run: RunData, folder: Path) -> list[str]:
    """report-curves.png next to the report when matplotlib is installed; else nothing."""
    epochs = run.epochs
    if not epochs or not matplotlib_available():
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display over SSH
    import matplotlib.pyplot as pyplot

    xs = [e.epoch for e in epochs]
    fig, (ax_loss, ax_metrics) = pyplot.subplots(1, 2, figsize=(10, 4))
    for label, ys in (("train loss", [e.train_loss for e in epochs]), ("val loss", [e.val_loss for e in epochs])):
        ax_loss.plot(xs, [_finite(y) if _finite(y) is not None else math.nan for y in ys], marker="o", label=label)
    for key in ("kappa_quadratic", "balanced_accuracy_adjusted"):
        ys = [_finite(e.metrics.get(key)) for e in epochs]
        ax_metrics.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_metrics, "validation")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / FIGURE_FILE, dpi=120)
    pyplot.close(fig)
    return [FIGURE_FILE]


def write_report(run_dir: str | Path, out: str | Path | None = None, figures: bool = True) -> Path:
    """Write the report (default RUN_DIR/report.md; `out` may be a file or a folder); return its path.

    For a cross-validation directory it also (re)writes every started fold's own fold-N/report.md,
    always, not only missing ones: a fold report written while that fold was running would be stale,
    and the CV report links to them (relative to wherever the CV report goes)."""
    sweep = Path(run_dir).expanduser() if group_kind(run_dir) == "sweep" else None
    cv = load_cv(run_dir) if not sweep and is_cv_dir(run_dir) else None
    run = None if cv or sweep else load_run(run_dir)
    target = Path(out).expanduser() if out else (sweep or (cv or run).path) / REPORT_FILE
    if target.is_dir():
        target = target / REPORT_FILE
    if not target.parent.is_dir():
        raise RunDirError(f"cannot write the report to {target}: folder {target.parent} does not exist")
    if sweep:  # every started member's own report too: the sweep report links to them
        from mammo_tui.drivers.sweep_report import render_sweep_report, reported_members

        for member in reported_members(sweep):
            write_report(member, figures=figures)
        text = render_sweep_report(sweep, target.parent)
    elif cv:
        for fold_run in filter(None, cv.folds.values()):
            write_report(fold_run.path, figures=figures)
        text = render_cv_report(cv, target.parent)
    else:
        text = render_report(run, write_figures(run, target.parent) if figures else [])
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise RunDirError(f"cannot write the report to {target}: {exc.strerror or exc}") from None
    return target
