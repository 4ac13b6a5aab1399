"""`mammo-tui report CV_DIR`: a cross-validation's Markdown report (pure: no torch, no textual).

One report over the folds: a per-fold table with mean ± std from cv_summary.json, each fold's
collapse checks and config changes in short, and links to the folds' own reports; an unfinished
CV says how to continue it.

report.py dispatches here and writes the files (every fold's own report first); the pieces shared
with a run's report live in report_parts.py, so this module never imports report.py (no import
cycle), as drivers/sweep_report.py does for a sweep.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mammo_tui.labels import CLASS_NAMES
from mammo_tui.markdown import table, when as _when
from mammo_tui.report_parts import (REPORT_FILE, STATUS_MEANING, change_lines, class_names_of, collapse_lines,
                                    config_table, evaluations_section, fmt_duration, fmt_num, fmt_value)
from mammo_tui.rundir import CV_FILE, CV_SUMMARY_FILE
from mammo_tui.runread import CVRecord
from mammo_tui.stats import FINISHED, aggregate, fold_recalls, format_mean_std


def _fold_link(cv: CVRecord, fold: int, base: Path) -> str:
    """A link to the fold's report.md, relative to the folder the CV report is written in."""
    target = os.path.relpath((cv.path / f"fold-{fold}" / REPORT_FILE).resolve(), base.resolve())
    target = Path(target).as_posix()
    return f"[{target}]({target})"


def _cv_status_section(cv: CVRecord) -> list[str]:
    rows = cv.rows()
    done = [r for r in rows if r["status"] in FINISHED]
    started = cv.manifest.get("started")
    facts = [f"**Status: {cv.status}**", f"{len(done)}/{len(cv.folds)} folds finished",
             f"started {_when(started)}"]
    ends = [run.summary.get("finished") for run in cv.folds.values() if run and run.summary]
    if cv.finished and started and all(ends):
        facts.append(f"took {fmt_duration(max(ends) - started)}")
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


def _cv_folds_section(cv: CVRecord) -> list[str]:
    rows = []
    absent = False
    for r in cv.rows():
        m = r.get("best_metrics") or {}
        run = cv.folds.get(r["fold"])
        status = r["status"] if r["status"] in FINISHED else \
            "not finished" + (f" ({run.status})" if run and run.status != "running" else "")
        recall = fold_recalls(m)  # None (n/a) for a class absent from the fold's validation set
        absent = absent or (bool(m) and None in recall)
        rows.append([r["fold"], status, fmt_value(r.get("best_epoch")), fmt_num(m.get("kappa_quadratic")),
                     fmt_num(m.get("balanced_accuracy_adjusted")), fmt_num(m.get("auc_macro")),
                     *[fmt_num(v) for v in (recall + [None] * len(CLASS_NAMES))[:len(CLASS_NAMES)]]])
    # recomputed from the rows: a cv_summary.json written before absent classes were left out of
    # the recall means averaged their zeros in
    agg = aggregate(cv.rows()) if cv.summary else None
    if agg:  # mean and std as two rows keep the table narrow enough for a terminal
        stats = [agg.get(k) or {} for k in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro")]
        stats += [(agg.get("recall_per_class") or {}).get(name) or {} for name in CLASS_NAMES]
        for label in ("mean", "std"):
            rows.append([label, "", "", *[fmt_num(st.get(label)) for st in stats]])
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
                (_auc_label(agg.get("auc_macro")), agg.get("auc_macro")),
                ("accuracy (misleading on imbalanced data)", agg.get("accuracy")),
                *[(f"recall {name}", st) for name, st in (agg.get("recall_per_class") or {}).items()]]

        def folds(st: dict[str, Any] | None) -> str:  # "3 of 5" where a class is absent from some folds
            st = st or {}
            if st.get("folds") is not None and st.get("n", 0) < st["folds"]:
                return f"{st.get('n', 0)} of {st['folds']}"
            return fmt_value(st.get("n"))

        summary = [[label, format_mean_std(st), folds(st)] for label, st in spec]
        lines += ["", "### Mean ± std over the folds", "",
                  table(["metric", "mean ± std", "folds"], summary, right=(1, 2))]
    return lines


def _cv_fold_details(cv: CVRecord, base: Path) -> list[str]:
    """Each fold's collapse checks and config changes in short (no suggestions: the fold report
    has them), and where its own report is."""
    lines = ["## Collapse checks and config changes per fold", ""]
    for fold, run in cv.folds.items():
        if run is None:
            lines.append(f"- **fold {fold}**: not started; no report yet.")
            continue
        lines.append(f"- **fold {fold}** ({run.status}, best epoch {fmt_value(run.best_epoch)}): "
                     f"{_fold_link(cv, fold, base)}")
        for line in [*collapse_lines(run, suggestions=False), *change_lines(run)]:
            lines.append("  " + (line if line.startswith("- ") else f"- {line}"))
    return lines


def _cv_config_section(cv: CVRecord) -> list[str]:
    config = cv.manifest.get("config") or {}
    data = cv.manifest.get("dataset") or {}
    if cv.manifest.get("demo"):
        source = "the built-in demo dataset" + (f" (size {fmt_value(cv.manifest['demo_size'])})"
                                                if cv.manifest.get("demo_size") is not None else "")
    else:
        source = ", ".join(f"{key} `{value}`" for key, value in data.items() if value) or "not recorded"
    fp = next(((run.dataset or {}).get("fingerprint") for run in cv.folds.values()
               if run and (run.dataset or {}).get("fingerprint")), None) or {}
    counts = fp.get("class_counts") or []
    lines = ["## Dataset and configuration", "", f"- dataset: {source}"]
    if fp:
        lines.append(f"- images: {fp.get('n_images', 'n/a')}, patients (groups): {fp.get('n_patients', 'n/a')}"
                     + (", classes: " + ", ".join(f"{n} {c}" for n, c in zip(class_names_of(len(counts)), counts))
                        if counts else ""))
    lines += [f"- preset: `{cv.manifest.get('preset') or 'not recorded'}`",
              f"- folds: {len(cv.folds)}, patient-grouped and stratified: every patient's images are in "
              "one fold's validation set", ""]
    if not config:
        return lines + [f"No configuration found ({CV_FILE} is missing or unreadable)."]
    return lines + [f"Every fold trains with this config (all keys in `{CV_FILE}`); a change made by "
                    "`--on-collapse recover` is listed under that fold above.", "", *config_table(config, config)]


def _auc_label(stat: dict[str, Any] | None) -> str:
    """The macro AUC row; "over B, C, D" when a class is absent from some fold (stats.aggregate)."""
    classes = (stat or {}).get("classes")
    if classes is not None and len(classes) < len(CLASS_NAMES):
        return f"macro AUC (one-vs-rest, over {', '.join(classes) or 'no class'}: the classes every fold holds)"
    return "macro AUC (one-vs-rest)"


def render_cv_report(cv: CVRecord, base: Path) -> str:
    """The Markdown text of a cross-validation; `base`: the folder the report goes to (for links)."""
    sections = [[f"# Cross-validation report: {cv.path.name}", "", *_cv_status_section(cv)],
                _cv_folds_section(cv), evaluations_section(cv.path), _cv_fold_details(cv, base),
                _cv_config_section(cv),
                ["## Files", "", f"Cross-validation directory: `{cv.path.resolve()}`",
                 *[f"- `{name}`: {what}" for name, what in
                   ((CV_FILE, "what to train, where it stands (for --resume)"),
                    (CV_SUMMARY_FILE, "per-fold results and mean ± std")) if (cv.path / name).is_file()],
                 "- `fold-N/`: each fold's own run directory (`mammo-tui watch`, `evaluate`, `predict`, `report`)"]]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return body + f"\n\n---\nWritten by mammo-tui on {_when(time.time())}.\n"
