"""`mammo-tui report`: the Markdown report of a real tiny run, an interrupted one, and bad inputs."""

import json
import shutil
import threading

import pytest

from mammo_tui import config
from mammo_tui.engine.trainer import TrainRequest, train
from mammo_tui.errors import MammoError
from mammo_tui.events import CollapseStatus, ConfigChanged
from mammo_tui.report import (FIGURE_FILE, REPORT_FILE, build_report, matplotlib_available, table,
                              write_report)
from mammo_tui.rundir import read_summary
from mammo_tui.runlog import RunLogWriter

TINY = {"arch": "resnet18", "pretrained": False, "img_size": 32, "batch_size": 16, "augment": False,
        "epochs": 2, "max_batches_per_epoch": 2, "num_workers": 0, "early_stop_patience": 0}


def _train(spec, outdir, name, cancel=None):
    request = TrainRequest(config=config.resolve("demo", TINY), dataset=spec, outdir=str(outdir),
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
