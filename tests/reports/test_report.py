"""`mammo-tui report`: the Markdown report of a real tiny run, an interrupted one, bad inputs, and of
a cross-validation directory (finished, stopped before its last fold, with a collapsed fold)."""

import json
import re
import shutil
import subprocess
import sys
import threading

import pytest

from mammo_tui.drivers.cv import read_cv_summary, run_cv
from mammo_tui.app import TrainRequest, train
from mammo_tui.errors import MammoError
from mammo_tui.events import CollapseStatus, ConfigChanged
from mammo_tui.report import (FIGURE_FILE, REPORT_FILE, build_report, matplotlib_available, table,
                              write_report)
from mammo_tui.rundir import CV_SUMMARY_FILE, read_summary
from mammo_tui.runlog import RunLogWriter
from tui_helpers import tiny_config

from conftest import make_tiny_config


def _train(spec, outdir, name, cancel=None):
    request = TrainRequest(config=make_tiny_config(epochs=2), dataset=spec, outdir=str(outdir),
                           run_name=name, preset="demo")
    return train(request, cancel=cancel)


@pytest.fixture(scope="module")
def finished_run(tiny_demo, tmp_path_factory):
    return _train(tiny_demo, tmp_path_factory.mktemp("runs"), "finished").run_dir


@pytest.fixture(scope="module")
def interrupted_run(tiny_demo, tmp_path_factory):
    cancel = threading.Event()
    cancel.set()  # stops before the first batch: an interrupted run with 0 epochs
    result = _train(tiny_demo, tmp_path_factory.mktemp("runs"), "interrupted", cancel)
    assert result.status == "interrupted"
    return result.run_dir


def _section(text, start, end):
    return text[text.index(start):text.index(end, text.index(start))]


def _table_rows(block):
    """Markdown table body rows as lists of stripped cells (header and rule skipped)."""
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_report_shows_the_config_and_the_best_epochs_real_confusion_matrix(finished_run):
    text = build_report(finished_run)
    summary = read_summary(finished_run)
    best = summary["best_metrics"]
    assert text.startswith("# Run report: finished")
    assert f"**Status: {summary['status']}**" in text
    config_rows = {row[0]: row[1] for row in _table_rows(_section(text, "## Configuration", "## Dataset"))}
    assert config_rows["arch"] == "resnet18" and config_rows["img_size"] == "32"
    assert config_rows["pretrained"] == "false"
    assert "Preset: `demo`" in text

    rows = _table_rows(_section(text, "### Confusion matrix", "### Per-class"))
    by_class = {row[0]: [int(v) for v in row[1:5]] for row in rows if row[0] in "ABCD"}
    assert [by_class[c] for c in "ABCD"] == best["confusion_matrix"]
    assert int(rows[-1][-1]) == best["n"]  # the total cell
    assert f"## Best epoch ({summary['best_epoch']})" in text


def test_per_class_table_and_distributions_match_the_summary(finished_run):
    text = build_report(finished_run)
    best = read_summary(finished_run)["best_metrics"]
    rows = _table_rows(_section(text, "### Per-class metrics", "### Predictions vs truth"))
    assert [row[0] for row in rows] == list("ABCD")
    for i, row in enumerate(rows):
        assert int(row[1]) == best["true_counts"][i] and int(row[2]) == best["prediction_counts"][i]
        assert row[3:6] == [f"{best[k][i]:.3f}" for k in ("precision_per_class", "recall_per_class", "f1_per_class")]
    assert "predicted: [A " in text


def test_curves_are_plain_text_plots_in_fences_with_one_table_row_per_epoch(finished_run):
    text = build_report(finished_run)
    curves = _section(text, "## Training curves", "## Best epoch")
    assert curves.count("```text") == 2 and "loss (* train, o validation)" in curves
    assert "kappa_quadratic" in curves and "bal_acc_adj" in curves
    assert "\x1b" not in text  # no colour codes in a file meant for GitHub and `less`
    epochs = [row[0] for row in _table_rows(curves.split("```")[-1])]
    assert [e.rstrip(" *") for e in epochs] == ["1", "2"]


def test_write_report_writes_report_md_and_skips_png_without_matplotlib(finished_run, tmp_path):
    path = write_report(finished_run)
    assert path == finished_run / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    assert "### Confusion matrix" in text and "`checkpoints/best.pt`" in text
    if not matplotlib_available():
        assert not (finished_run / FIGURE_FILE).exists() and "## Figures" not in text
    assert write_report(finished_run, out=tmp_path) == tmp_path / REPORT_FILE


def test_interrupted_run_with_no_epochs_gets_a_clear_report(interrupted_run):
    text = write_report(interrupted_run).read_text(encoding="utf-8")
    assert "**Status: interrupted**" in text and "epochs 0/2" in text
    assert f"--resume {interrupted_run}" in text
    assert "No epoch finished: nothing to plot yet." in text
    assert "No best epoch yet" in text
    assert "No checkpoint yet" in text
    assert "| arch " in text  # the config is still there


def test_a_run_killed_before_its_summary_is_reported_from_the_event_log(finished_run, tmp_path):
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("events.jsonl", "config.toml", "dataset.json"):
        shutil.copy(finished_run / name, killed / name)
    # drop the final event: as if the process died after the last epoch
    lines = (killed / "events.jsonl").read_text().splitlines()
    (killed / "events.jsonl").write_text("\n".join(line for line in lines if '"type":"finished"' not in line) + "\n")
    text = build_report(killed)
    best = read_summary(finished_run)
    assert "**Status: running**" in text and "```text" in text
    rows = _table_rows(_section(text, "### Confusion matrix", "### Per-class"))
    assert [[int(v) for v in row[1:5]] for row in rows[:4]] == best["best_metrics"]["confusion_matrix"]


def test_a_failed_run_shows_its_error(finished_run, tmp_path):
    failed = tmp_path / "failed"
    shutil.copytree(finished_run, failed, ignore=shutil.ignore_patterns("*.pt"))
    summary = read_summary(failed)
    summary.update(status="failed", error="non-finite loss (nan) at epoch 2, batch 1")
    (failed / "summary.json").write_text(json.dumps(summary))
    text = build_report(failed)
    assert "**Status: failed**" in text and "Error: non-finite loss (nan) at epoch 2, batch 1" in text


def test_collapse_checks_and_config_changes_during_the_run_are_listed(finished_run, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(finished_run, changed, ignore=shutil.ignore_patterns("*.pt"))
    writer = RunLogWriter(changed / "events.jsonl")  # the events a `--on-collapse recover` run writes
    writer(CollapseStatus(epoch=2, status="collapsed", reasons=["C takes 100 % of predictions"],
                          suggestions=[{"key": "sampler", "value": "weighted", "reason": "no sampler"}]))
    writer(ConfigChanged(epoch=2, changes={"sampler": ["none", "weighted"]}, reason="collapse: no sampler"))
    writer.close()
    summary = read_summary(changed)
    summary["config"]["sampler"] = "weighted"
    (changed / "config.toml").write_text((changed / "config.toml").read_text().replace(
        'sampler = "weighted"', 'sampler = "none"'))
    (changed / "summary.json").write_text(json.dumps(summary))
    text = build_report(changed)
    collapse = _section(text, "## Collapse checks", "## Files")
    assert "- epoch 2: **collapsed**: C takes 100 % of predictions" in collapse
    assert "suggested `--set sampler=weighted`: no sampler" in collapse
    assert "- after epoch 2: sampler none -> weighted (collapse: no sampler)" in collapse
    assert "| sampler             | none -> weighted (changed during the run) |" in text


def test_missing_or_foreign_directories_raise_a_clear_error(tmp_path):
    with pytest.raises(MammoError, match="no such run directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(MammoError, match="not a mammo-tui run directory"):
        build_report(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MammoError, match="not a directory"):
        write_report(tmp_path / "file.txt")


def test_table_pads_columns_and_escapes_pipes():
    text = table(["k", "value"], [["a|b", 1], ["c", 22]], right=[1])
    assert text.splitlines() == ["| k    | value |", "|------|------:|", "| a\\|b |     1 |", "| c    |    22 |"]


# -- cross-validation ---------------------------------------------------------------------------------


def _cv(spec, outdir, sink=lambda e: None, cancel=None):
    request = TrainRequest(config=tiny_config(), dataset=spec, outdir=str(outdir), run_name="cv", preset="test")
    return run_cv(request, 2, sink, cancel)


@pytest.fixture(scope="module")
def finished_cv(tiny_demo, tmp_path_factory):
    result = _cv(tiny_demo, tmp_path_factory.mktemp("cv"))
    assert result.summary
    return result.run_dir


@pytest.fixture(scope="module")
def stopped_cv(tiny_demo, tmp_path_factory):
    cancel = threading.Event()

    def sink(event):  # stop as fold 2 starts: fold-1 finished, fold-2 never created
        if event.type == "fold_started" and event.fold == 2:
            cancel.set()

    result = _cv(tiny_demo, tmp_path_factory.mktemp("cv"), sink, cancel)
    assert not result.summary and not (result.run_dir / "fold-2").exists()
    return result.run_dir


def _copy_cv(cv_dir, tmp_path):
    copy = tmp_path / cv_dir.name
    shutil.copytree(cv_dir, copy, ignore=shutil.ignore_patterns("*.pt", REPORT_FILE))
    return copy


def _fold_rows(text):
    return {row[0]: row for row in _table_rows(_section(text, "## Folds", "## Collapse checks and config"))}


def _pm(stat):
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


@pytest.mark.slow
def test_cv_report_has_each_folds_metrics_and_the_mean_and_std_over_folds(finished_cv):
    text = build_report(finished_cv)
    summary = read_cv_summary(finished_cv)
    assert text.startswith("# Cross-validation report: cv")
    assert f"**Status: {summary['status']}** · 2/2 folds finished" in text
    rows = _fold_rows(text)
    for fold in summary["per_fold"]:
        m = fold["best_metrics"]
        row = rows[str(fold["fold"])]
        assert row[1:3] == [fold["status"], str(fold["best_epoch"])]
        assert row[3:6] == [f"{m[k]:.3f}" for k in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro")]
        assert row[6:10] == [f"{r:.3f}" for r in m["recall_per_class"]]
    agg = summary["aggregate"]
    assert rows["mean"][3] == f"{agg['kappa_quadratic']['mean']:.3f}"
    assert rows["std"][3] == f"{agg['kappa_quadratic']['std']:.3f}"
    assert [rows["mean"][6 + i] for i in range(4)] == [f"{agg['recall_per_class'][c]['mean']:.3f}" for c in "ABCD"]
    stats = {row[0]: row[1:] for row in _table_rows(_section(text, "### Mean ± std", "## Collapse"))}
    assert stats["kappa (quadratic weights) - headline"] == [_pm(agg["kappa_quadratic"]), "2"]
    assert stats["macro AUC (one-vs-rest)"] == [_pm(agg["auc_macro"]), "2"]
    for c in "ABCD":
        assert stats[f"recall {c}"] == [_pm(agg["recall_per_class"][c]), "2"]
    assert "COLLAPSED" not in text and "cv --resume" not in text
    config_rows = {row[0]: row[1] for row in _table_rows(_section(text, "## Dataset and configuration", "## Files"))}
    assert config_rows["arch"] == "resnet18" and config_rows["img_size"] == "32"
    assert "- preset: `test`" in text and "labels.csv" in text and "images: 81" in text


def test_write_report_on_a_cv_writes_every_fold_report_and_links_to_them(finished_cv, tmp_path):
    for fold in (1, 2):
        (finished_cv / f"fold-{fold}" / REPORT_FILE).unlink(missing_ok=True)
    path = write_report(finished_cv, figures=False)
    assert path == finished_cv / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    links = re.findall(r"\[([^]]+)\]\(([^)]+)\)", text)
    assert links == [("fold-1/report.md", "fold-1/report.md"), ("fold-2/report.md", "fold-2/report.md")]
    for fold, (_, target) in enumerate(links, 1):
        fold_text = (path.parent / target).read_text(encoding="utf-8")
        assert fold_text.startswith(f"# Run report: fold-{fold}") and "### Confusion matrix" in fold_text
    # written elsewhere, the links still lead to the folds' reports
    other = write_report(finished_cv, out=tmp_path, figures=False)
    targets = re.findall(r"\]\(([^)]+)\)", other.read_text(encoding="utf-8"))
    assert len(targets) == 2 and not targets[0].startswith("fold-1")
    assert [(tmp_path / t).resolve() for t in targets] == [
        (finished_cv / f"fold-{n}" / REPORT_FILE).resolve() for n in (1, 2)]


def test_a_stopped_cv_lists_its_finished_fold_and_says_how_to_resume(stopped_cv):
    path = write_report(stopped_cv, figures=False)
    text = path.read_text(encoding="utf-8")
    best = read_summary(stopped_cv / "fold-1")["best_metrics"]
    assert "**Status: interrupted** · 1/2 folds finished" in text
    assert f"Continue it with `mammo-tui cv --resume {stopped_cv}`" in text
    rows = _fold_rows(text)
    assert rows["1"][3] == f"{best['kappa_quadratic']:.3f}" and rows["1"][6:10] == [
        f"{r:.3f}" for r in best["recall_per_class"]]
    assert rows["2"][1] == "not finished" and rows["2"][3] == "n/a"
    assert "mean" not in rows and "### Mean ± std" not in text and not (stopped_cv / CV_SUMMARY_FILE).exists()
    assert "- **fold 2**: not started; no report yet." in text
    assert "[fold-1/report.md](fold-1/report.md)" in text and "fold-2/report.md" not in text
    assert (stopped_cv / "fold-1" / REPORT_FILE).is_file() and not (stopped_cv / "fold-2").exists()


def test_a_collapsed_fold_is_called_out_with_its_collapse_checks_and_config_changes(finished_cv, tmp_path):
    cv = _copy_cv(finished_cv, tmp_path)
    summary = read_cv_summary(cv)
    summary["per_fold"][1]["status"] = "collapsed"
    summary.update(status="collapsed", collapsed_folds=[2])
    (cv / CV_SUMMARY_FILE).write_text(json.dumps(summary))
    writer = RunLogWriter(cv / "fold-2" / "events.jsonl")  # what a `--on-collapse recover` fold writes
    writer(CollapseStatus(epoch=1, status="collapsed", reasons=["D takes 100 % of predictions"],
                          suggestions=[{"key": "sampler", "value": "weighted", "reason": "no sampler"}]))
    writer(ConfigChanged(epoch=1, changes={"lr": [0.0001, 1e-05]}, reason="collapse: lower lr"))
    writer.close()
    text = build_report(cv)
    assert "**Status: collapsed**" in text and "> **COLLAPSED: fold 2.**" in text
    assert _fold_rows(text)["2"][1] == "collapsed"
    details = _section(text, "## Collapse checks and config changes per fold", "## Dataset")
    fold2 = details[details.index("- **fold 2**"):]
    assert "  - epoch 1: **collapsed**: D takes 100 % of predictions" in fold2
    assert "  - after epoch 1: lr 0.0001 -> 1e-05 (collapse: lower lr)" in fold2
    assert "suggested `--set" not in details  # the short form; the fold's own report has the suggestions
    assert "None: the config stayed as launched." in details[:details.index("- **fold 2**")]


def test_cli_report_on_a_cv_dir_writes_it(finished_cv, tmp_path):
    cv = _copy_cv(finished_cv, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "report", str(cv)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report written: {cv / REPORT_FILE}" in proc.stdout
    text = (cv / REPORT_FILE).read_text(encoding="utf-8")
    assert text.startswith("# Cross-validation report: cv") and (cv / "fold-2" / REPORT_FILE).is_file()


@pytest.mark.slow
def test_a_cv_report_lists_its_ensemble_evaluations(finished_cv, tiny_demo, tmp_path):
    from mammo_tui.evaluate import evaluate

    copy = tmp_path / finished_cv.name
    shutil.copytree(finished_cv, copy, ignore=shutil.ignore_patterns(REPORT_FILE))
    result = evaluate(copy, tiny_demo, name="external")
    text = build_report(copy)
    section = _section(text, "## Evaluations on other data", "## Collapse checks and config")
    row = {r[0]: r for r in _table_rows(section)}["eval-external.json"]
    assert row[3] == f"{result['kappa_quadratic']:.3f}"  # the ensemble's
    assert row[-1] == _pm(result["aggregate"]["kappa_quadratic"])  # the folds alone
    assert "ensemble" in section


def test_cv_report_leaves_a_class_absent_from_a_fold_out_of_its_recall_mean(tmp_path):
    """Folds 1 and 2 have no class A validation images: their A recall is n/a, and A's mean is over
    the 3 folds that have it (0.4), not over 5 with two zeros (0.24), also for a cv_summary.json
    whose aggregate was written that way."""
    from mammo_tui.rundir import CV_FILE
    from mammo_tui.stats import aggregate
    from mammo_tui.metrics import compute_metrics

    def fold_metrics(a_hits):  # 10 each of B, C, D (8 right); 5 of A unless a_hits is None
        y_true = [1] * 10 + [2] * 10 + [3] * 10
        y_pred = [1] * 8 + [2] * 2 + [2] * 8 + [3] * 2 + [3] * 8 + [1] * 2
        if a_hits is not None:
            y_true += [0] * 5
            y_pred += [0] * a_hits + [1] * (5 - a_hits)
        return compute_metrics(y_true, y_pred)

    rows = [{"fold": i, "status": "healthy", "best_epoch": 1, "best_metrics": fold_metrics(hits)}
            for i, hits in enumerate([None, None, 2, 3, 1], 1)]
    old = aggregate(rows)
    old["recall_per_class"]["A"] = {"mean": 0.24, "std": 0.2608, "n": 5}  # zeros averaged in
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / CV_FILE).write_text(json.dumps({"folds": 5, "status": "finished", "config": {}}))
    (cv / CV_SUMMARY_FILE).write_text(json.dumps({"folds": 5, "status": "healthy", "per_fold": rows,
                                                  "aggregate": old, "collapsed_folds": []}))
    text = build_report(cv)
    folds = _fold_rows(text)
    assert [folds[str(f)][6] for f in range(1, 6)] == ["n/a", "n/a", "0.400", "0.600", "0.200"]
    assert folds["mean"][6:10] == ["0.400", "0.800", "0.800", "0.800"]
    assert folds["std"][6] == "0.200"
    assert "n/a: the fold's validation set has no image of that class" in text
    stats = {row[0]: row[1:] for row in _table_rows(_section(text, "### Mean ± std", "## Collapse"))}
    assert stats["recall A"] == ["0.400 ± 0.200", "3 of 5"]
    assert stats["recall B"] == ["0.800 ± 0.000", "5"]


def test_a_cv_report_says_which_classes_its_macro_auc_averages(tmp_path):
    """With class A absent from one fold's validation set, the CV's macro AUC is over B, C, D in
    every fold, and the report's row says so."""
    import numpy as np

    from mammo_tui.metrics import compute_metrics
    from mammo_tui.rundir import CV_FILE
    from mammo_tui.stats import aggregate

    def fold_metrics(with_a):
        y_true = [1, 2, 3] * 4 + ([0] * 3 if with_a else [])
        probs = np.full((len(y_true), 4), 0.1)
        for row, label in enumerate(y_true):
            probs[row, label] = 0.7
        return compute_metrics(y_true, list(y_true), probs)

    rows = [{"fold": i, "status": "healthy", "best_epoch": 1, "best_metrics": fold_metrics(with_a)}
            for i, with_a in enumerate([True, False], 1)]
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / CV_FILE).write_text(json.dumps({"folds": 2, "status": "finished", "config": {}}))
    (cv / CV_SUMMARY_FILE).write_text(json.dumps({"folds": 2, "status": "healthy", "per_fold": rows,
                                                  "aggregate": aggregate(rows), "collapsed_folds": []}))
    assert "macro AUC (one-vs-rest, over B, C, D: the classes every fold holds)" in build_report(cv)
