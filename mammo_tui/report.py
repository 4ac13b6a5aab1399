"""`mammo-tui report RUN_DIR`: one Markdown file that explains a run (pure: no torch, no textual).

Everything comes from the run directory, read through runread.RunRecord: summary.json (status, best
epoch and its metrics), events.jsonl (per-epoch metrics, collapse checks, config changes,
checkpoints, warnings), config.toml and dataset.json. Curves are plotext text plots inside ```
fences, so the same file reads well in a terminal (`less report.md`) and on GitHub. Tables are
padded so their columns line up in plain text too. A run that was interrupted, failed or never
finished an epoch still gets a report that says so; only a folder that is not a run directory is
an error.

A cross-validation directory gets one report over its folds (cv_report.py) and a sweep folder its
leaderboard report (drivers/sweep_report.py); this module dispatches to them and writes the files.
"""

from __future__ import annotations

import importlib.util
import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

from mammo_tui.collapse import format_distribution, format_percent
from mammo_tui.cv_report import render_cv_report
from mammo_tui.errors import RunDirError
from mammo_tui.events import CheckpointSaved, CollapseStatus, LogMessage, RunFailed, RunStarted
from mammo_tui.markdown import table, when as _when
from mammo_tui.outputs import check_output
from mammo_tui.report_parts import (REPORT_FILE, STATUS_MEANING, change_lines, class_names_of, collapse_lines,
                                    config_table, evaluations_section, fmt_duration, fmt_num, fmt_value)
from mammo_tui.rundir import (CHECKPOINT_DIR, CONFIG_FILE, DATASET_FILE, SPLITS_FILE, SUMMARY_FILE,
                              atomic_write_text, group_kind, is_cv_dir)
from mammo_tui.runlog import EVENTS_FILE
from mammo_tui.runread import CVRecord, RunRecord

FIGURE_FILE = "report-curves.png"
PLOT_WIDTH, PLOT_HEIGHT = 72, 16  # fits an 80-column terminal with the fence and some margin
MAX_PROBLEM_EXAMPLES = 5
MAX_LOG_LINES = 30

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "." * (width - filled)


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


def _status_section(run: RunRecord) -> list[str]:
    s = run.summary or {}
    status = run.status
    starts = run.of_type(RunStarted)
    started = s.get("started") or (starts[0].time if starts else None)
    device = s.get("device") or (starts[-1].device if starts else "n/a")
    facts = [f"**Status: {status}**",
             f"epochs {s.get('epochs_completed', len(run.epochs))}/{s.get('epochs', run.config.get('epochs', '?'))}",
             f"best epoch {run.best_epoch if run.best_epoch is not None else 'none'}",
             f"device {device}", f"started {_when(started)}"]
    if s.get("finished") and started:
        facts.append(f"took {fmt_duration(s['finished'] - started)}")
    lines = [" · ".join(facts), "", f"{status.capitalize()}: {STATUS_MEANING.get(status, 'unknown status.')}"]
    error = s.get("error") or next((e.error for e in reversed(run.events) if isinstance(e, RunFailed)), "")
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


def _headline_section(run: RunRecord) -> list[str]:
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
    rows = [[label, fmt_num(best.get(key))] + ([fmt_num(last.get(key))] if show_last else [])
            for label, key in rows_spec]
    lines = ["## Headline metrics", "",
             "The best checkpoint is chosen by balanced accuracy (adjusted), then quadratic kappa, "
             "then AUC; never by raw accuracy.", "",
             table(headers, rows, right=range(1, len(headers)))]
    test = (run.summary or {}).get("test_metrics")
    if test:  # the dataset's official test side: touched once, by the best checkpoint
        lines += ["", f"On the dataset's official test side ({test['n_images']} images, {test['n_patients']} patients; "
                  "never seen in training or selection), the best checkpoint scores:", "",
                  table(["metric", "test"], [[label, fmt_num(test.get(key))] for label, key in rows_spec[:4]],
                        right=(1,))]
    return lines


def _config_section(run: RunRecord) -> list[str]:
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
    lines += ["", *config_table(final, launched), *_history_lines(summary.get("config_history") or [])]
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
        changes = ", ".join(f"{k} {fmt_value(a)} -> {fmt_value(b)}" for k, (a, b) in segment.get("changes", {}).items())
        rows.append([epochs, changes or "launch config", segment.get("reason", "")])
    return ["", "Config history (which config trained which epochs):", "",
            table(["epochs", "config", "why"], rows)]


def _dataset_section(run: RunRecord) -> list[str]:
    info = run.dataset
    if not info:
        return ["## Dataset", "", f"No dataset record ({DATASET_FILE} is missing)."]
    fp = info.get("fingerprint") or {}
    report = info.get("report") or {}
    lines = ["## Dataset", "", f"Source: {fp.get('source') or report.get('source', 'n/a')}"
             + (" (the built-in demo dataset)" if info.get("demo") else ""), ""]
    counts = fp.get("class_counts") or []
    started = run.of_type(RunStarted)
    header = ["class", "images"]
    split = started[0] if started else None
    if split:
        header += ["train", "val"]
    rows = []
    for i, name in enumerate(class_names_of(len(counts))):
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
             f"{fmt_num(ratio, 1) if ratio is not None else 'infinite (a class has no images)'}",
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


def _curves_section(run: RunRecord) -> list[str]:
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
    status_of = {e.epoch: e.status for e in run.of_type(CollapseStatus)}
    best = run.best_epoch
    rows = [[f"{e.epoch}{' *' if e.epoch == best else ''}", e.trainable, fmt_num(e.train_loss, 4),
             fmt_num(e.val_loss, 4), fmt_num(e.metrics.get("kappa_quadratic")), fmt_num(e.metrics.get("balanced_accuracy_adjusted")),
             fmt_num(e.metrics.get("auc_macro")), f"{e.lr:.2g}", status_of.get(e.epoch, "n/a"),
             format_distribution(e.metrics.get("prediction_distribution") or [])]
            for e in epochs]
    lines += [table(["epoch", "trained", "train loss", "val loss", "kappa_q", "bal_acc_adj", "AUC", "lr",
                     "status", "predictions"], rows, right=(2, 3, 4, 5, 6, 7)),
              "", "`*` marks the best epoch."]
    return lines


def _best_epoch_section(run: RunRecord) -> list[str]:
    epoch = run.best_epoch
    metrics = run.metrics_of(epoch)
    title = f"## Best epoch ({epoch}): validation in detail" if epoch is not None else "## Best epoch"
    if not metrics or not metrics.get("confusion_matrix"):
        return [title, "", "No best epoch yet: no confusion matrix or per-class metrics."]
    matrix = metrics["confusion_matrix"]
    names = class_names_of(len(matrix))
    rows = [[names[i], *row, sum(row)] for i, row in enumerate(matrix)]
    rows.append(["total", *[sum(col) for col in zip(*matrix)], sum(map(sum, matrix))])
    lines = [title, "", "### Confusion matrix", "",
             "Rows are the true class, columns the predicted class.", "",
             table(["true \\ predicted", *names, "total"], rows, right=range(1, len(names) + 2)), ""]
    per_class = [[names[i], metrics["true_counts"][i], metrics["prediction_counts"][i],
                  fmt_num(metrics["precision_per_class"][i]), fmt_num(metrics["recall_per_class"][i]),
                  fmt_num(metrics["f1_per_class"][i])] for i in range(len(names))]
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


def _collapse_section(run: RunRecord) -> list[str]:
    lines = ["## Collapse checks", "", *collapse_lines(run)]
    if run.of_type(CollapseStatus):  # no check in the log: the summary's short list says it all
        lines += ["", "### Config changes during the run", "", *change_lines(run)]
    return lines


def _log_section(run: RunRecord) -> list[str]:
    notable = [e for e in run.of_type(LogMessage) if e.level in ("warning", "error")]
    if not notable:
        return []
    lines = ["## Warnings from the run", ""]
    for e in notable[:MAX_LOG_LINES]:
        where = f"epoch {e.epoch}: " if e.epoch is not None else ""
        lines.append(f"- {e.level}: {where}{e.message}")
    if len(notable) > MAX_LOG_LINES:
        lines.append(f"- ... and {len(notable) - MAX_LOG_LINES} more in {EVENTS_FILE}")
    return lines


def _files_section(run: RunRecord) -> list[str]:
    saved = {e.kind: e for e in run.of_type(CheckpointSaved)}
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


def render_report(run: RunRecord, figures: Sequence[str] = ()) -> str:
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
        evaluations_section(run.path),
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
        cv = CVRecord.read(run_dir)
        return render_cv_report(cv, cv.path)
    return render_report(RunRecord.read(run_dir))


# ---------------------------------------------------------------------------------------------
# optional PNG figures (matplotlib is not a dependency: used only when it is installed)


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_figures(run: RunRecord, folder: Path) -> list[str]:
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


def write_report(run_dir: str | Path, out: str | Path | None = None, figures: bool = True,
                 force: bool = False) -> Path:
    """Write the report (default RUN_DIR/report.md; `out` may be a file or a folder); return its path.
    `out` is never a run's own file, nor (without `force`) an existing file other than this run's
    report.md (outputs.check_output).

    For a cross-validation directory it also (re)writes every started fold's own fold-N/report.md,
    always, not only missing ones: a fold report written while that fold was running would be stale,
    and the CV report links to them (relative to wherever the CV report goes)."""
    sweep = Path(run_dir).expanduser() if group_kind(run_dir) == "sweep" else None
    cv = CVRecord.read(run_dir) if not sweep and is_cv_dir(run_dir) else None
    run = None if cv or sweep else RunRecord.read(run_dir)
    default = (sweep or (cv or run).path) / REPORT_FILE
    target = Path(out).expanduser() if out else default
    if target.is_dir():
        target = target / REPORT_FILE
    if out:
        target = check_output(target, force=force, replaceable=default)
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
