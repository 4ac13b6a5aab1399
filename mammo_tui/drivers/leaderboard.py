"""A sweep's leaderboard: one row per configuration, ranked (pure: no torch, no textual).

Read from disk only (sweep.json's members + each member run's summary.json, through
runread.SweepRecord), so the live sweep, a
`watch` of it, the TUI leaderboard screen, `--no-ui` output and the report all show the same
numbers, and every value equals the run's own summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path
from typing import Any

from mammo_tui.events import RunStarted
from mammo_tui.metrics import better_score, selection_score
from mammo_tui.rundir import FINISHED_STATUSES
from mammo_tui.runread import RunRecord, SweepRecord
from mammo_tui.stats import SEVERITY, fold_recalls, format_mean_std, mean_std, worst_status

METRICS = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro")


@dataclass
class Entry:
    """One configuration of a sweep, over its seeds. Field names are a contract (TUI, report).

    rank             1 = best; None while no seed has finished (such rows come last, in queue order)
    config_id        e.g. "focal+lr=0.0003" (variant name, then grid / search values)
    changes          the config keys this configuration sets on top of the sweep's base
    runs             its member run folder names, one per seed, in queue order
    run_dirs         the same as paths (those that do not exist yet included)
    seeds            the seeds, in the order of `runs`
    seeds_done       seeds whose run finished with a result (healthy | warning | collapsed)
    seeds_planned    len(seeds)
    status           worst over the finished seeds (healthy < warning < collapsed); with none
                     finished: "running" (a seed is training), "interrupted" (a seed stopped
                     part-way: the sweep was stopped), "failed" (a seed failed), "pruned" (an
                     Optuna trial the pruner stopped), else "pending" (nothing started)
    collapsed        finished seeds that collapsed
    failed           seeds whose run failed (NaN loss, disk full)
    kappa_quadratic, balanced_accuracy_adjusted, auc_macro, lowest_recall
                     {"mean", "std", "n"} over the finished seeds (stats.mean_std: std with
                     ddof=1, 0.0 for one seed; mean None when n == 0). Each seed's value is its
                     summary.json best_metrics value; lowest_recall is the smallest recall over the
                     classes present in that run's validation set (stats.fold_recalls)
    score            metrics.selection_score of the means (bal_acc_adj, kappa_q, auc; auc -1 when
                     missing): the ranking key; None while no seed finished
    epoch, epochs    for a configuration with a run training now: that run's completed epochs and
                     planned epochs (from its summary.json / event log); else None
    running_run      that run's folder name ("" when none)
    """

    rank: int | None
    config_id: str
    changes: dict[str, Any]
    runs: list[str]
    run_dirs: list[Path]
    seeds: list[int]
    seeds_done: int
    seeds_planned: int
    status: str
    collapsed: int = 0
    failed: int = 0
    kappa_quadratic: dict[str, Any] = field(default_factory=lambda: mean_std([]))
    balanced_accuracy_adjusted: dict[str, Any] = field(default_factory=lambda: mean_std([]))
    auc_macro: dict[str, Any] = field(default_factory=lambda: mean_std([]))
    lowest_recall: dict[str, Any] = field(default_factory=lambda: mean_std([]))
    score: tuple[float, float, float] | None = None
    epoch: int | None = None
    epochs: int | None = None
    running_run: str = ""

    def means(self) -> dict[str, Any]:
        """The mean of each metric (None when no seed finished): the headline of sweep.json."""
        return {key: getattr(self, key)["mean"] for key in (*METRICS, "lowest_recall")}


def lowest_recall(metrics: dict[str, Any]) -> float | None:
    """The smallest recall over the classes present in the validation set (None: no recalls)."""
    present = [r for r in fold_recalls(metrics) if r is not None]
    return min(present) if present else None


def _live_epoch(run: RunRecord) -> tuple[int, int | None]:
    """(completed epochs, planned epochs) of a run that is training: summary.json is rewritten
    after every epoch; before the first one only the event log exists (epoch 0)."""
    if run.summary:
        return int(run.summary.get("epochs_completed") or 0), run.summary.get("epochs")
    first = run.first_event()
    return 0, (first.config or {}).get("epochs") if isinstance(first, RunStarted) else None


def _member_state(run: RunRecord, member: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """A member run's state: a finished status, "interrupted", "failed", "pruned", "running" or
    "pending"."""
    summary = run.summary
    if member.get("pruned") and not (summary and summary.get("status") in FINISHED_STATUSES):
        return "pruned", summary
    if summary:
        return str(summary.get("status") or "running"), summary
    return ("running" if run.has_log else "pending"), None


def leaderboard(sweep_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[Entry]:
    """The sweep's configurations, best first (see Entry). Ranking: the selection score of the
    mean over finished seeds (balanced accuracy adjusted, then quadratic kappa, then AUC), the same
    key that picks a run's best epoch; equal scores go to the healthier status (a healthy
    configuration above a warning one), then keep queue order. Configurations with no finished
    seed follow, unranked, in queue order."""
    sweep = SweepRecord(sweep_dir, manifest)
    groups: dict[str, list[dict[str, Any]]] = {}
    for member in sweep.members():
        groups.setdefault(str(member.get("config_id") or member["run"]), []).append(member)
    entries = [_entry(sweep, config_id, members) for config_id, members in groups.items()]
    # better_score: scores within float noise tie and the next key decides; a full tie goes to the
    # healthier status, then keeps queue order (sorted is stable)
    def compare(a: Entry, b: Entry) -> int:
        if better_score(a.score, b.score):
            return -1
        if better_score(b.score, a.score):
            return 1
        return SEVERITY.get(a.status, len(SEVERITY)) - SEVERITY.get(b.status, len(SEVERITY))

    order = cmp_to_key(compare)
    ranked = sorted((e for e in entries if e.score is not None), key=order)
    for number, entry in enumerate(ranked, 1):
        entry.rank = number
    return ranked + [e for e in entries if e.score is None]


def _entry(sweep: SweepRecord, config_id: str, members: list[dict[str, Any]]) -> Entry:
    runs = [m["run"] for m in members]
    finished: list[dict[str, Any]] = []
    states = []
    epoch = epochs = None
    running_run = ""
    for member in members:
        name = member["run"]
        state, summary = _member_state(sweep.run(name), member)
        states.append(state)
        if state in FINISHED_STATUSES:
            finished.append(summary)
        elif state == "running" and not running_run:
            running_run = name
            epoch, epochs = _live_epoch(sweep.run(name))
    best = [s.get("best_metrics") or {} for s in finished]
    stats = {key: mean_std([b.get(key) for b in best]) for key in METRICS}
    if finished:
        status = worst_status([s["status"] for s in finished])
    else:
        status = next((s for s in ("running", "interrupted", "failed", "pruned") if s in states), "pending")
    score = None
    if finished:
        score = selection_score({key: stat["mean"] for key, stat in stats.items()})
    return Entry(rank=None, config_id=config_id, changes=dict(members[0].get("changes") or {}), runs=runs,
                 run_dirs=[sweep.path / name for name in runs], seeds=[m.get("seed") for m in members],
                 seeds_done=len(finished), seeds_planned=len(members), status=status,
                 collapsed=sum(s["status"] == "collapsed" for s in finished),
                 failed=states.count("failed"), **stats,
                 lowest_recall=mean_std([lowest_recall(b) for b in best]), score=score,
                 epoch=epoch, epochs=epochs, running_run=running_run)


def best_entry(entries: list[Entry]) -> Entry | None:
    """The rank-1 configuration (None while nothing finished)."""
    return entries[0] if entries and entries[0].rank == 1 else None


def format_leaderboard(entries: list[Entry]) -> str:
    """A plain-text table (for --no-ui, `watch` without a terminal, the report's code block)."""
    if not entries:
        return "(no configurations)"
    width = max(13, *(len(e.config_id) for e in entries))
    header = (f"{'rank':>4}  {'configuration':{width}}  {'seeds':>5}  {'status':16}  {'kappa_q':>13}  "
              f"{'bal_acc_adj':>13}  {'auc':>13}  {'lowest recall':>13}")
    lines = [header]
    for e in entries:
        status = e.status
        if e.running_run:  # a seed is training now: how far it is
            status += f" ep {e.epoch}/{e.epochs or '?'}"
        lines.append(f"{e.rank if e.rank is not None else '-':>4}  {e.config_id:{width}}  "
                     f"{e.seeds_done:>2}/{e.seeds_planned:<2}  {status:16}  "
                     f"{format_mean_std(e.kappa_quadratic, '-'):>13}  "
                     f"{format_mean_std(e.balanced_accuracy_adjusted, '-'):>13}  "
                     f"{format_mean_std(e.auc_macro, '-'):>13}  {format_mean_std(e.lowest_recall, '-'):>13}")
    collapsed = [e for e in entries if e.collapsed]
    if collapsed:
        lines.append("collapsed seeds: " + ", ".join(f"{e.config_id} ({e.collapsed} of {e.seeds_done})"
                                                     for e in collapsed))
    return "\n".join(lines)
