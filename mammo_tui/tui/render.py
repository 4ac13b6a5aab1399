"""Rich renderables for the panels (pure functions of data: easy to test, no widget state)."""

from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table
from rich.text import Text

from mammo_tui.drivers.cv import fold_recalls
from mammo_tui.tui.state import DashboardState, fmt, fmt_duration, fmt_pm

_PARTIAL = " ▏▎▍▌▋▊▉"

# Named ANSI colours degrade cleanly to 256 / 16 colour terminals.
STATUS_STYLE = {"healthy": "bold green", "warning": "bold yellow", "collapsed": "bold red",
                "interrupted": "bold magenta", "failed": "bold red", "finished": "bold green",
                "stopped": "bold magenta"}  # interrupted is resumable, not a warning: its own colour
CLASS_COLOURS = ("cyan", "green", "yellow", "magenta")


def bar(fraction: float | None, width: int) -> str:
    """A left-aligned block bar of `width` cells, 1/8-cell resolution."""
    width = max(width, 1)
    fraction = 0.0 if fraction is None or fraction != fraction else min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    text = "█" * full + (_PARTIAL[part] if part and full < width else "")
    return text.ljust(width)


def pct(value: float | None) -> str:
    return "  – " if value is None else f"{value * 100:3.0f}%"


def progress_text(state: DashboardState, width: int) -> Text:
    """Two lines: epoch bar + ETA + throughput, batch bar + loss + what trains.
    In a cross-validation the first line starts with the fold; at its end, the folds' summary."""
    if state.cv_finished is not None:
        return cv_progress_text(state, width)
    prefix = f"Fold {state.fold}/{state.folds_total} · " if state.is_cv else ""
    bar_w = max(10, min(40, width - 52 - len(prefix)))
    last, batch = state.last, state.batch
    total = state.epochs_total or (last.epochs if last else 0)
    done_epochs = last.epoch if last else 0
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(prefix, style="bold")
    if state.starting and not state.done:
        return starting_text(state, text)
    if state.done:
        word = state.status_word
        style = STATUS_STYLE.get(word, "bold")
        text.append(f"{word.upper():<11}", style=style)
        text.append(f" {done_epochs}/{total} epochs ▕")
        text.append(bar(done_epochs / total if total else 0, bar_w), style=style)
        text.append("▏")
        if state.best_epoch is not None:
            text.append(f" best epoch {state.best_epoch}")
        if state.failed:
            text.append(f"\n{state.failed.error}", style="red")
        elif last:
            text.append(f"\n{'':<11} last epoch {fmt_duration(last.epoch_time_s)}, "
                        f"{last.images_per_s:.0f} img/s, trainable {last.trainable}")
        return text
    # An epoch event means that epoch is over; a batch event shows the one in progress.
    in_epoch = batch is not None and batch.epoch > done_epochs
    current = batch.epoch if in_epoch else done_epochs
    within = batch.batch / batch.n_batches if in_epoch and batch.n_batches else 0.0
    done = (current - 1 + within) if in_epoch else done_epochs
    frac = min(done / total, 1.0) if total else 0.0
    text.append(f"Epoch {current:>3}/{total:<3} ▕")
    text.append(bar(frac, bar_w), style="bold blue")
    text.append(f"▏{frac * 100:3.0f}%")
    eta = batch.eta_s if batch else None
    rate = batch.images_per_s if batch else (last.images_per_s if last else None)
    text.append(f"  ETA {'~' if eta_is_rough(state, current) else ''}{fmt_duration(eta)}")
    text.append(f"  {rate:.0f} img/s" if rate else "  – img/s")
    if state.device:
        text.append(f"  {state.device}", style="dim")
    if state.resumed_at:
        text.append(f"  resumed at epoch {state.resumed_at}", style="bold cyan")
    elif eta_is_rough(state, current):
        for note in ("  (ETA rough until the backbone trains)", "  (rough)"):
            if text.cell_len + len(note) <= width:  # one line: the note only where it fits
                text.append(note, style="dim")
                break
    text.append("\n")
    if in_epoch:
        text.append(f"Batch {batch.batch:>3}/{batch.n_batches:<3} ▕")
        text.append(bar(within, bar_w), style="blue")
        text.append(f"▏ loss {fmt(batch.loss)}")
    else:
        text.append("Batch   –/–   ▕" + " " * bar_w + "▏", style="dim")
    if last:
        text.append(f"  lr {last.lr:.1e}  {last.trainable}", style="dim")
    return text


def starting_text(state: DashboardState, text: Text) -> Text:
    """Before the first RunStarted: what the engine is doing, and the last thing it said."""
    text.append("STARTING   ", style="bold blue")
    text.append(state.starting)
    if state.log_tail:
        text.append(f"\n{'':<11}{state.log_tail}", style="dim")
    return text


def eta_is_rough(state: DashboardState, epoch: int) -> bool:
    """During head-only warmup epochs the backbone does not train yet, so the engine's ETA (from
    the epochs so far) is far too low for the epochs that will train it."""
    cfg = state.config
    warmup = int(cfg.get("warmup_epochs") or 0)
    return bool(warmup) and epoch <= warmup and cfg.get("freeze") not in (None, "head")


def cv_progress_text(state: DashboardState, width: int) -> Text:
    """A finished cross-validation: every fold done, mean ± std of the headline metrics."""
    summary = state.cv_finished.summary
    word = summary.get("status", "finished")
    style = STATUS_STYLE.get(word, "bold")
    folds = summary.get("folds", state.folds_total)
    agg = summary.get("aggregate", {})
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"CV {word.upper():<9}", style=style)
    text.append(f" {folds}/{folds} folds ▕")
    text.append(bar(1.0, max(10, min(40, width - 60))), style=style)
    text.append(f"▏ κq {fmt_pm(agg.get('kappa_quadratic'))}")
    collapsed = summary.get("collapsed_folds") or []
    text.append(f"\n{'':<12} bal-acc-adj {fmt_pm(agg.get('balanced_accuracy_adjusted'))}  "
                f"AUC {fmt_pm(agg.get('auc_macro'))}  ")
    text.append(f"collapsed folds: {', '.join(map(str, collapsed))}" if collapsed else "no fold collapsed",
                style="bold red" if collapsed else "green")
    return text


def cv_banner_text(state: DashboardState, compact: bool = False) -> tuple[str, Text]:
    """A cross-validation is as healthy as its worst fold."""
    summary = state.cv_finished.summary
    status = summary.get("status", "healthy")
    icon = {"healthy": "●", "warning": "▲", "collapsed": "✖"}.get(status, "●")
    text = Text(f" {icon} {status.upper()} ", style="reverse bold")
    rows = summary.get("per_fold", [])
    flagged = [(word, [r["fold"] for r in rows if r.get("status") == word]) for word in ("collapsed", "warning")]
    parts = [f"{'folds' if len(folds) > 1 else 'fold'} {', '.join(map(str, folds))} of {len(rows)} {word}"
             for word, folds in flagged if folds]
    text.append(" " + "; ".join(parts) if parts else f" all {len(rows)} folds healthy")
    source = state.suggesting_fold
    if source is not None:
        text.append(f": fold {source.fold}'s suggestions are listed")
    if compact:
        text.no_wrap, text.overflow = True, "ellipsis"
    return status, text


def folds_table(state: DashboardState, width: int) -> Table | Text:
    """One row per fold (status, best-epoch κq, bal-acc-adj, lowest recall among the classes in the
    fold's validation set), then mean / std."""
    if not state.is_cv:
        return Text("")
    wide = width >= 44
    table = Table(box=None, padding=(0, 1), collapse_padding=True, show_edge=False, pad_edge=False)
    table.add_column("fold", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("κq", justify="right", no_wrap=True)
    table.add_column("bal-acc-adj", justify="right", no_wrap=True)
    if wide:
        table.add_column("min recall", justify="right", no_wrap=True)
    for fold in range(1, state.folds_total + 1):
        result = state.fold_results.get(fold)
        if result is not None:
            m = result.best_metrics
            # classes absent from the fold's validation set have no recall (0 by convention): skip them
            recall = [r for r in fold_recalls(m) if r is not None]
            cells = [Text(result.status, style=STATUS_STYLE.get(result.status, "")),
                     fmt(m.get("kappa_quadratic")), fmt(m.get("balanced_accuracy_adjusted")),
                     fmt(min(recall)) if recall else "–"]
        elif fold == state.fold and not state.cv_finished:
            word = ("failed" if state.failed else "stopped") if state.cv_stopped else "running"
            cells = [Text(word, style="bold yellow" if state.cv_stopped else "bold blue"), "", "", ""]
        else:
            cells = [Text("pending", style="dim"), "", "", ""]
        table.add_row(str(fold), *cells[:4 if wide else 3])
    if state.fold_results:
        keys = ("kappa_quadratic", "balanced_accuracy_adjusted")
        agg = state.cv_finished.summary.get("aggregate", {}) if state.cv_finished else {
            key: state.fold_mean_std(key) for key in keys}
        n = len(state.fold_results)
        for row, stat in (("mean", "mean"), ("std", "std")):
            values = [fmt(agg.get(key, {}).get(stat)) for key in keys]
            label = Text(f"{row}" + (f" ({n})" if row == "mean" and n < state.folds_total else ""),
                         style="bold")
            table.add_row("", label, *values, *([""] if wide else []), style="bold")
    return table


def banner_text(state: DashboardState, compact: bool = False) -> tuple[str, Text]:
    """(status, text) for the collapse banner: status drives the CSS class (colour).
    compact: one line per rule, cut at the edge (80x24; the event log has the full text)."""
    if state.cv_finished is not None:
        return cv_banner_text(state, compact)
    c = state.collapse
    last = state.last
    if state.failed is not None and not state.is_cv:
        return "collapsed", failed_banner(state, compact)
    if state.stale and not state.done:
        text = Text(" ▲ STALE? ", style="reverse bold")
        text.append(f" {state.stale}")
        return "warning", text
    if c is None:
        status = "waiting" if not last else "healthy"
        msg = Text("● waiting for the first validation epoch" if not last else "● no collapse check yet")
        return status, msg
    icon = {"healthy": "●", "warning": "▲", "collapsed": "✖"}.get(c.status, "●")
    text = Text(f" {icon} {c.status.upper()} ", style="reverse bold")
    text.append(f" epoch {c.epoch}")
    if last:
        m = last.metrics
        text.append(f" · κq {fmt(m.get('kappa_quadratic'), 2)} · bal-acc-adj "
                    f"{fmt(m.get('balanced_accuracy_adjusted'), 2)}")
    dominance = dominance_text(last) if c.status != "healthy" and last and last.epoch == c.epoch else ""
    if dominance and not any("%" in r and "prediction" in r for r in c.reasons):
        text.append(f" · {dominance}", style="bold")
    for reason in c.reasons:
        text.append(f"\n  • {reason}")
    if compact:
        text.no_wrap, text.overflow = True, "ellipsis"
    return c.status, text


DOMINANCE_SHARE = 0.8  # one class taking this share of the predictions is worth naming


def dominance_text(epoch) -> str:
    """"97 % of predictions on D" when one class takes most of the predictions."""
    shares = list(epoch.metrics.get("prediction_distribution") or [])
    if not shares:
        return ""
    top = max(range(len(shares)), key=lambda i: shares[i])
    if shares[top] < DOMINANCE_SHARE:
        return ""
    from mammo_tui.labels import CLASS_NAMES

    name = CLASS_NAMES[top] if top < len(CLASS_NAMES) else str(top)
    return f"{shares[top] * 100:.0f} % of predictions on {name}"


def failed_banner(state: DashboardState, compact: bool) -> Text:
    text = Text(" ✖ FAILED ", style="reverse bold")
    text.append(f" {state.failed.error}")
    if state.hint:
        text.append(f"\n  → {state.hint}", style="bold")
    if compact:
        text.no_wrap, text.overflow = True, "ellipsis"
    return text


def classes_table(state: DashboardState, width: int) -> Table | Text:
    """Per-class recall bars, and the predicted share beside the true validation share."""
    last = state.last
    if last is None:
        return Text("per-class recall and prediction share appear after the first epoch", style="dim")
    m = last.metrics
    recall = list(m.get("recall_per_class") or [])
    pred = list(m.get("prediction_distribution") or [])
    true = list(m.get("true_distribution") or [])
    bar_w = max(4, (width - 26) // 3)
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("recall", no_wrap=True)
    table.add_column("predicted", no_wrap=True)
    table.add_column("true (val)", no_wrap=True)
    for i, name in enumerate(state.class_names):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        r = recall[i] if i < len(recall) else None
        p = pred[i] if i < len(pred) else None
        t = true[i] if i < len(true) else None
        r_style = "bold red" if r == 0 else colour
        table.add_row(
            Text(name, style="bold"),
            Text(bar(r, bar_w), style=r_style) + Text(f" {fmt(r, 2)}"),
            Text(bar(p, bar_w), style=colour) + Text(pct(p)),
            Text(bar(t, bar_w), style="dim " + colour) + Text(pct(t)),
        )
    return table


def confusion_table(state: DashboardState) -> Table | Text:
    last = state.last
    matrix = last.metrics.get("confusion_matrix") if last else None
    if not matrix:
        return Text("confusion matrix appears after the first epoch", style="dim")
    names = state.class_names
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("true\\pred", style="bold", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("recall", justify="right", no_wrap=True)
    recall = last.metrics.get("recall_per_class") or []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            if i == j:
                style = "bold green" if share >= 0.5 else "green"
            else:
                style = "bold red" if share >= 0.5 else ("yellow" if share >= 0.2 else "dim")
            cells.append(Text(str(count), style=style))
        r = recall[i] if i < len(recall) else None
        table.add_row(names[i] if i < len(names) else str(i), *cells, fmt(r, 2))
    return table


SPIKE_FACTOR = 4.0  # a value this many times the median is a spike, not the curve's scale


def spike_limit(values: Sequence[float]) -> float | None:
    """An upper y limit that leaves spikes off the scale; None when no value is a spike."""
    finite = sorted(v for v in values if v == v and abs(v) != float("inf"))
    if len(finite) < 2:
        return None
    median = finite[(len(finite) - 1) // 2]  # the lower median: with two points, the smaller
    if median <= 0 or finite[-1] <= SPIKE_FACTOR * median:
        return None
    kept = [v for v in finite if v <= SPIKE_FACTOR * median]
    return max(kept) * 1.15


def clip_note(limit: float, data) -> str:
    """`  [y clipped at 1.6: val 25.5 at epoch 2]` for the plot's border title."""
    spikes = [f"{label} {y:.3g} at epoch {x}" for (xs, ys), label, _ in data
              for x, y in zip(xs, ys) if y > limit]
    shown = ", ".join(spikes[:2]) + (f" +{len(spikes) - 2}" if len(spikes) > 2 else "")
    return f"  [bold yellow]y clipped at {limit:.3g}: {shown}[/]"


def change_text(s: dict[str, Any]) -> str:
    """`sampler = weighted, sampler_power = 0.5`: every key a suggestion changes."""
    from mammo_tui.collapse import suggestion_changes

    changes = suggestion_changes(s)
    return ", ".join(f"{k} = {v}" for k, v in changes.items())


def suggestion_label(s: dict[str, Any]) -> str:
    return f"{change_text(s)}: {s.get('reason', '')}"


def suggestion_prompt(index: int, s: dict[str, Any]) -> Text:
    text = Text(f"{index}. ", style="bold")
    text.append(change_text(s), style="bold cyan")
    text.append(f"  {s.get('reason', '')}", style="dim")
    return text


METRIC_NAMES = (("balanced_accuracy_adjusted", "bal-acc-adj"), ("kappa_quadratic", "κ quadratic"),
                ("auc_macro", "AUC macro"), ("kappa", "κ (Cohen)"),
                ("balanced_accuracy", "bal-acc"), ("accuracy", "accuracy"))


def metrics_table(state: DashboardState) -> Table | Text:
    """Latest and best epoch side by side, in the order the best-checkpoint rule ranks them."""
    last = state.last
    if last is None:
        return Text("metrics appear after the first epoch", style="dim")
    best = state.best_metrics
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column(f"epoch {last.epoch}", justify="right", no_wrap=True)
    best_label = f"best ({state.best_epoch})" if state.best_epoch is not None else "best"
    table.add_column(best_label, justify="right", no_wrap=True, style="bold")
    for key, label in METRIC_NAMES:
        table.add_row(label, fmt(last.metrics.get(key)), fmt(best.get(key)) if best else "–")
    return table


def count_bars(names: Sequence[str], counts: Sequence[int], width: int) -> Table:
    """Class counts as horizontal bars (fingerprint screen)."""
    top = max(counts) if counts else 0
    total = sum(counts) or 1
    table = Table(box=None, padding=(0, 1), show_header=False, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    bar_w = max(8, width - 22)
    for i, (name, count) in enumerate(zip(names, counts)):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        style = "bold red" if count == 0 else colour
        table.add_row(Text(name, style="bold"), Text(bar(count / top if top else 0, bar_w), style=style),
                      str(count), f"{count / total * 100:.0f}%")
    return table
