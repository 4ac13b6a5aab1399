"""`mammo-tui report SWEEP_DIR`: the sweep's Markdown report (pure: no torch, no textual).

The leaderboard as a table, the best configuration with its mean ± std over seeds and the exact
`mammo-tui train` command line that trains it again, the configurations that collapsed, and every
member run with a link to its own report (each member is an ordinary run directory).

report.py dispatches here and writes the files (the member reports first); the Markdown pieces
both use live in markdown.py, so this module never imports report.py (no import cycle).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mammo_tui.drivers.leaderboard import Entry, best_entry, leaderboard
from mammo_tui.drivers.sweep_commands import reproduce_command
from mammo_tui.drivers.sweep_spec import format_value
from mammo_tui.errors import RunDirError
from mammo_tui.markdown import table, when as _when
from mammo_tui.rundir import group_kind, lock_held
from mammo_tui.runread import SweepRecord
from mammo_tui.stats import format_mean_std

RANKING = ("Ranked by the selection score of the mean over finished seeds: balanced accuracy adjusted "
           "(0 = chance, 1 = perfect), then quadratic kappa, then macro AUC; the same key that picks a "
           "run's best epoch. ± is the standard deviation over seeds. A configuration's status is its "
           "worst seed's (collapsed > warning > healthy). lowest recall: the smallest per-class recall "
           "of the best epoch, over the classes in the validation set.")


def _changes(entry: Entry) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in entry.changes.items()) or "(base)"


def _link(sweep_dir: Path, run: str, base: Path) -> str:
    target = os.path.relpath((sweep_dir / run / "report.md").resolve(), base.resolve())
    return f"[{run}]({target})"


def render_sweep_report(sweep_dir: str | Path, base: str | Path | None = None) -> str:
    """The report text; member links are relative to `base` (the folder the report goes to; None:
    the sweep folder)."""
    sweep_dir = Path(sweep_dir)
    base = Path(base) if base is not None else sweep_dir
    sweep = SweepRecord(sweep_dir)
    manifest = sweep.manifest
    if group_kind(sweep_dir) != "sweep" or not manifest:
        raise RunDirError(f"{sweep_dir}: not a sweep folder (no readable sweep.json)")
    entries = leaderboard(sweep_dir, manifest)
    best = best_entry(entries)
    spec = manifest.get("spec") or {}
    status = manifest.get("status", "unknown")
    if status == "running" and lock_held(sweep_dir) is False:  # killed: nothing will finish it
        status = "running in sweep.json, but no process holds it (stopped or killed)"
    runs = [m for m in manifest.get("members") or [] if isinstance(m, dict)]
    done = sum(e.seeds_done for e in entries)
    lines = [f"# Sweep report: {sweep_dir.name}", "",
             " · ".join([f"**Status: {status}**", f"{done}/{manifest.get('planned', len(runs))} runs finished",
                         f"started {_when(manifest.get('started'))}"]), ""]
    if spec.get("description"):
        lines += [str(spec["description"]), ""]
    lines += [f"Base: {spec.get('base', 'auto')} ({manifest.get('origin') or manifest.get('preset') or 'n/a'}); "
              f"seeds {', '.join(map(str, spec.get('seeds') or []))}; every run also sets "
              f"{', '.join(f'{k}={format_value(v)}' for k, v in (spec.get('set') or {}).items()) or 'nothing'}."]
    if status != "finished":
        lines += ["", f"Not finished: continue it with `mammo-tui sweep --resume {sweep_dir}` (finished runs "
                      "are kept); the table ranks the seeds finished so far."]
    rows = []
    for e in entries:
        rows.append([e.rank if e.rank is not None else "-", e.config_id, f"{e.seeds_done}/{e.seeds_planned}", e.status,
                     format_mean_std(e.kappa_quadratic, "-"), format_mean_std(e.balanced_accuracy_adjusted, "-"),
                     format_mean_std(e.auc_macro, "-"), format_mean_std(e.lowest_recall, "-"), _changes(e)])
    lines += ["", "## Leaderboard", "", RANKING, "",
              table(["rank", "configuration", "seeds", "status", "kappa_q", "bal_acc_adj", "AUC", "lowest recall",
                     "changes"], rows, right=(0,))]
    lines += ["", "## Best configuration", ""]
    if best is None:
        lines.append("No configuration has a finished seed yet.")
    else:
        lines += [f"**{best.config_id}** ({best.status}, {best.seeds_done} of {best.seeds_planned} seeds): "
                  f"kappa_q {format_mean_std(best.kappa_quadratic)}, bal_acc_adj "
                  f"{format_mean_std(best.balanced_accuracy_adjusted)}, AUC {format_mean_std(best.auc_macro)}, "
                  f"lowest recall {format_mean_std(best.lowest_recall)}.", "",
                  f"Changes on top of the base: {_changes(best)}.", "",
                  f"Train it again (seed {best.seeds[0]}; `--set seed=N` for the others):", "", "```sh",
                  reproduce_command(sweep_dir, best, manifest), "```"]
        if best.status == "collapsed":
            lines += ["", f"> **Even the best configuration collapsed on {best.collapsed} of its {best.seeds_done} "
                          "seeds**: none of these configurations is reliable on this data. See the runs' reports "
                          "for their collapse checks and suggestions."]
    skipped = [item for item in manifest.get("skipped") or [] if isinstance(item, dict)]
    if skipped:
        lines += ["", "## Skipped configurations", "", "Refused by the config rules on this base, so not trained:", ""]
        lines += [f"- {item.get('config_id')}: {item.get('reason')}" for item in skipped]
    collapsed = [e for e in entries if e.collapsed]
    lines += ["", "## Collapses", ""]
    if collapsed:
        lines.append("A collapsed run's best checkpoint predicts (almost) one class. With on_collapse = \"warn\" "
                     "(as in the built-in defenses sweep) a collapse is shown, not repaired, so it counts here.")
        lines += [""] + [f"- {e.config_id}: {e.collapsed} of {e.seeds_done} seeds collapsed "
                         f"({', '.join(r for r, s in zip(e.runs, _statuses(sweep, e)) if s == 'collapsed')})"
                         for e in collapsed]
    else:
        lines.append("No finished run collapsed.")
    member_rows = []
    for member in runs:
        summary = sweep.run(member["run"]).summary or {}
        m = summary.get("best_metrics") or {}
        state = "pruned" if member.get("pruned") else (summary.get("status") or
                                                        ("not started" if not (sweep_dir / member["run"]).is_dir() else "running"))
        name = _link(sweep_dir, member["run"], base) if (sweep_dir / member["run"]).is_dir() else member["run"]
        member_rows.append([name, member.get("config_id", ""), member.get("seed", ""), state,
                            summary.get("best_epoch") if summary.get("best_epoch") is not None else "-",
                            _num(m.get("kappa_quadratic")), _num(m.get("balanced_accuracy_adjusted"))])
    lines += ["", "## Runs", "", "In queue order (seed-major: every configuration with the first seed, then the next).",
              "", table(["run", "configuration", "seed", "status", "best epoch", "kappa_q", "bal_acc_adj"], member_rows,
                        right=(2, 4, 5, 6))]
    if spec.get("search"):
        search = spec["search"]
        lines += ["", "## Search", "", f"Optuna {search.get('sampler')} sampler, {search.get('trials')} trials over "
                  f"{', '.join(search.get('space') or {})}{', median pruning' if search.get('prune') else ''}; the "
                  "study is in optuna.db (objective: the mean over seeds of the best epoch's balanced accuracy "
                  "adjusted)."]
    return "\n".join(lines) + f"\n\n---\nWritten by mammo-tui on {_when(time.time())}.\n"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _statuses(sweep: SweepRecord, entry: Entry) -> list[str]:
    return [(sweep.run(run).summary or {}).get("status", "") for run in entry.runs]


def reported_members(sweep_dir: str | Path) -> list[Path]:
    """The member runs that have a report to write (started: their event log exists)."""
    sweep = SweepRecord(sweep_dir)
    return [sweep.path / m["run"] for m in sweep.members() if sweep.run(m["run"]).has_log]
