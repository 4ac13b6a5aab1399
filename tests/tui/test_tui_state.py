"""Pure parts of the TUI: event folding, renderers, config warnings, form parsing, run comparison."""

from __future__ import annotations

import math

import pytest

from mammo_tui.config import TrainConfig
from mammo_tui.events import BatchProgress, RunStarted
from mammo_tui.tui import render
from samples import sample_events
from mammo_tui.tui.state import EPOCH, LOG, PROGRESS, DashboardState, fmt, fmt_duration


def folded(events) -> DashboardState:
    state = DashboardState()
    for event in events:
        state.apply(event)
    return state


def test_fold_a_finished_healthy_run():
    state = folded(sample_events())
    assert state.run_name == "sample-healthy"
    assert [m.epoch for m in state.epochs] == [1, 2, 3, 4]
    assert state.best_epoch == 4 and state.done and state.status_word == "finished"
    assert state.collapse.status == "healthy" and state.suggestions() == []
    xs, ys = state.series("kappa_quadratic")
    assert xs == [1, 2, 3, 4] and ys == sorted(ys)  # the sample improves every epoch
    assert state.series("train_loss")[0] == [1, 2, 3, 4]
    assert any("run finished" in line.text for line in state.new_log)


def test_fold_a_collapsed_run_keeps_reasons_and_suggestions():
    state = folded(sample_events(collapsed=True))
    assert state.collapse.status == "collapsed"
    assert any("100 %" in reason for reason in state.collapse.reasons)
    keys = [s["key"] for s in state.suggestions()]
    # lr 0.1 on a backbone is the first thing to fix; then: no sampler and no weights
    assert keys[:2] == ["lr", "sampler"]
    assert any(line.level == "error" for line in state.new_log)


def test_apply_names_the_panels_an_event_changes():
    state = DashboardState()
    events = sample_events()
    assert PROGRESS in state.apply(events[0])
    batch = next(e for e in events if e.type == "batch")
    assert state.apply(batch) == {PROGRESS}  # batches never touch the heavy panels
    epoch = next(e for e in events if e.type == "epoch")
    assert {EPOCH, LOG} <= state.apply(epoch)


def test_a_resumed_run_drops_the_epochs_it_redoes():
    events = sample_events(finished=False)
    state = folded(events)
    start = events[0]
    state.apply(RunStarted(**{**start.__dict__, "start_epoch": 3}))
    assert [m.epoch for m in state.epochs] == [1, 2]
    assert not state.done


def test_a_new_run_on_the_same_dashboard_starts_over():
    state = folded(sample_events(collapsed=True))
    healthy = sample_events()
    state.apply(healthy[0])
    assert state.epochs == [] and state.collapse is None and state.run_name == "sample-healthy"


def test_progress_text_running_and_finished():
    events = sample_events(finished=False)
    state = folded(events[:3])  # run started + two batches of epoch 1
    text = render.progress_text(state, 80).plain
    assert "Epoch   1/4" in text and "Batch  20/40" in text and "img/s" in text and "ETA" in text
    done = render.progress_text(folded(sample_events()), 80).plain
    assert done.startswith("FINISHED") and "best epoch 4" in done


def test_banner_lists_each_rule_and_compacts_for_small_terminals():
    state = folded(sample_events(collapsed=True))
    status, text = render.banner_text(state)
    assert status == "collapsed"
    assert "COLLAPSED" in text.plain and text.plain.count("•") == len(state.collapse.reasons)
    _, compact = render.banner_text(state, compact=True)
    assert compact.no_wrap and compact.overflow == "ellipsis"
    assert render.banner_text(DashboardState())[0] == "waiting"


def test_bar_resolution_and_bounds():
    assert render.bar(0.0, 4) == "    "
    assert render.bar(1.0, 4) == "████"
    assert render.bar(0.5, 4) == "██  "
    assert render.bar(2.0, 3) == "███" and render.bar(None, 3) == "   "
    assert render.bar(float("nan"), 2) == "  "
    assert len(render.bar(0.33, 7)) == 7


def test_formatting_helpers():
    assert fmt(None) == "–" and fmt(float("nan")) == "–"
    assert fmt(-0.0001, 2) == "0.00"  # never "-0.00"
    assert fmt(0.5) == "0.500" and fmt(3) == "3"
    assert fmt_duration(5) == "5s" and fmt_duration(65) == "1m05s" and fmt_duration(3700) == "1h01m"
    assert fmt_duration(None) == "–"


def test_classes_and_confusion_tables_render():
    from rich.console import Console

    state = folded(sample_events(collapsed=True))
    console = Console(width=60, record=True, file=None)
    with console.capture() as capture:
        console.print(render.classes_table(state, 50))
        console.print(render.confusion_table(state))
        console.print(render.metrics_table(state))
    out = capture.get()
    assert "recall" in out and "true\\pred" in out and "170" in out and "bal-acc-adj" in out
    empty = DashboardState()
    assert "after the first epoch" in render.classes_table(empty, 40).plain


# -- wizard helpers ------------------------------------------------------------------------------

def test_config_warnings_name_the_collapse_risks():
    from mammo_tui.planner import config_warnings

    safe = TrainConfig(freeze="last_block", sampler="weighted", class_weights="none", lr=1e-4,
                       warmup_epochs=2, epochs=10)
    assert config_warnings(safe, 800, 21.0) == []
    full = config_warnings(safe.replace(freeze="none"), 800, 21.0)
    assert any("full fine-tuning" in w and "small, imbalanced" in w for w in full)
    unbalanced = config_warnings(safe.replace(sampler="none"), 800, 21.0)
    assert any("no sampler, no class weights" in w for w in unbalanced)
    assert any("double balancing" in w for w in config_warnings(
        safe.replace(class_weights="balanced", allow_double_balancing=True), 800, 21.0))
    assert any("lr 0.01" in w for w in config_warnings(safe.replace(lr=0.01), 800, 21.0))
    assert config_warnings(safe.replace(freeze="none"), 50000, 2.0) == []  # big and balanced: fine
    empty_class = config_warnings(safe.replace(sampler="none"), 800, math.inf)
    assert any("no sampler" in w for w in empty_class)  # an empty class is the worst imbalance


def test_spec_from_inputs(tmp_path):
    from mammo_tui.errors import DatasetError
    from mammo_tui.tui.wizard import spec_from_inputs

    csv = tmp_path / "labels.csv"
    assert spec_from_inputs("reference", str(csv), "").dicom_root == str(tmp_path)
    assert spec_from_inputs("reference", str(csv), "/data/dicom").dicom_root == "/data/dicom"
    assert spec_from_inputs("generic", str(csv), "ignored").dicom_root is None
    assert spec_from_inputs("reference", str(tmp_path), "").images == str(tmp_path)  # a folder
    with pytest.raises(DatasetError, match="ctrl\\+d"):
        spec_from_inputs("generic", "  ", "")


def test_decision_flow_lights_the_rule_that_fired():
    from mammo_tui.planner import plan
    from mammo_tui.tui.decision import flow_text, result_text

    p = plan(794, [20, 181, 425, 168])
    lines = flow_text(p).plain.splitlines()
    fired = [line for line in lines if line.rstrip().endswith("◀") and "─▶" in line]
    assert len(fired) == 1 and "highest" in fired[0]
    size = [line for line in lines if line.rstrip().endswith("◀") and "─▶" not in line]
    assert len(size) == 1 and "500-2000" in size[0]  # the size table's row, lit too
    assert "head_only" in result_text(p).plain
    big = plan(5000, [1000, 1500, 1500, 1000])
    fired = [line for line in flow_text(big).plain.splitlines()
             if line.rstrip().endswith("◀") and "─▶" in line]
    assert "low" in fired[0]


def test_compare_tables_show_metric_deltas_and_config_diff():
    from rich.console import Console

    from mammo_tui.tui.runs import compare_tables, config_diff

    a_cfg = TrainConfig(sampler="none").to_dict()
    b_cfg = TrainConfig(sampler="weighted").to_dict()
    assert config_diff(a_cfg, b_cfg) == {"sampler": ("none", "weighted")}
    assert config_diff({"arch": "x"}, {"arch": "y"}) == {"arch": ("x", "y")}  # not a valid config
    a = {"run_name": "a", "status": "collapsed", "config": a_cfg,
         "best_metrics": {"kappa_quadratic": 0.0, "recall_per_class": [0, 0, 1, 0]}}
    b = {"run_name": "b", "status": "healthy", "config": b_cfg,
         "best_metrics": {"kappa_quadratic": 0.5, "recall_per_class": [0.5, 0.6, 0.7, 0.6]}}
    metrics, config = compare_tables(a, b)
    console = Console(width=100, file=None)
    with console.capture() as capture:
        console.print(metrics)
        console.print(config)
    out = capture.get()
    assert "+0.500" in out and "sampler" in out and "weighted" in out and "recall A" in out


def test_sample_events_are_deterministic():
    first = [e.to_dict() for e in sample_events(collapsed=True)]
    again = [e.to_dict() for e in sample_events(collapsed=True)]
    assert first == again
    assert all(e["time"] >= 1_700_000_000 for e in first)


def test_batch_progress_for_a_later_epoch_shows_that_epoch():
    state = folded(sample_events(finished=False)[:1])
    state.apply(BatchProgress(epoch=1, batch=40, n_batches=40, loss=1.0, images_per_s=10, eta_s=0))
    assert "Batch  40/40" in render.progress_text(state, 100).plain


def test_a_config_change_updates_the_shown_config_to_the_new_values():
    from mammo_tui.events import ConfigChanged

    state = folded(sample_events(collapsed=True))
    assert state.config["sampler"] == "none"
    state.apply(ConfigChanged(epoch=2, changes={"sampler": ["none", "weighted"]}, reason="collapse"))
    assert state.config["sampler"] == "weighted"
    assert any("sampler=weighted" in line.text for line in state.new_log)


# -- cross-validation --------------------------------------------------------------------------


def plain(renderable, width: int = 60) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=__import__("io").StringIO())
    console.print(renderable)
    return console.export_text()


def test_a_cross_validation_folds_into_one_row_per_fold_and_a_summary():
    from samples import sample_cv_events

    state = folded(sample_cv_events())
    assert state.is_cv and state.folds_total == 5 and sorted(state.fold_results) == [1, 2, 3, 4, 5]
    assert state.fold_results[2].status == "collapsed" and state.cv_finished.exit_code == 3
    assert state.status_word == "finished"
    table = plain(render.folds_table(state, 50))
    assert [line.split()[:2] for line in table.splitlines()[1:6]] == [
        ["1", "healthy"], ["2", "collapsed"], ["3", "healthy"], ["4", "healthy"], ["5", "healthy"]]
    kappas = [r.best_metrics["kappa_quadratic"] for r in state.fold_results.values()]
    mean = sum(kappas) / 5
    assert f"{mean:.3f}" in table.splitlines()[6] and "mean" in table.splitlines()[6]
    assert "COLLAPSED" in plain(render.progress_text(state, 100)) and "collapsed folds: 2" in plain(
        render.progress_text(state, 120), 120)
    status, banner = render.banner_text(state)
    assert status == "collapsed" and "fold 2 of 5 collapsed" in banner.plain


def test_a_running_cross_validation_shows_the_fold_and_a_partial_mean():
    from samples import sample_cv_events

    state = folded(sample_cv_events(finished=False))
    assert state.fold == 3 and sorted(state.fold_results) == [1, 2] and not state.cv_finished
    assert state.epochs and all(m.epoch <= 2 for m in state.epochs)  # fold 3's own epochs only
    table = plain(render.folds_table(state, 50))
    assert "running" in table and table.count("pending") == 2 and "mean (2)" in table
    assert plain(render.progress_text(state, 100)).startswith("Fold 3/5 · Epoch")
    stats = state.fold_mean_std("kappa_quadratic")
    assert stats["n"] == 2 and stats["std"] > 0


def test_each_fold_starts_with_empty_panels_and_a_new_cv_clears_the_old_folds():
    from mammo_tui.events import FoldStarted
    from samples import sample_cv_events

    state = folded(sample_cv_events())
    changed = state.apply(FoldStarted(fold=1, folds=3, cv_dir="runs/another", run_dir="runs/another/fold-1"))
    assert state.fold_results == {} and state.cv_finished is None and state.folds_total == 3
    assert state.epochs == [] and state.collapse is None and state.finished is None
    assert {"folds", "epoch", "collapse"} <= changed


def test_narrow_fold_tables_drop_the_recall_column():
    from samples import sample_cv_events

    state = folded(sample_cv_events())
    assert "min recall" in plain(render.folds_table(state, 50))
    assert "min recall" not in plain(render.folds_table(state, 38))
    assert plain(render.folds_table(DashboardState(), 50)).strip() == ""  # not a CV: nothing


def test_cv_warning_names_classes_rarer_than_the_folds():
    from mammo_tui.tui.configure import cv_warnings

    assert cv_warnings(0, [2, 50, 50, 50]) == []
    assert cv_warnings(5, [5, 50, 50, 50]) == []
    warning = cv_warnings(5, [3, 50, 50, 0])
    assert len(warning) == 1 and "A (3)" in warning[0] and "D" not in warning[0]


def test_a_finished_cv_offers_its_worst_folds_fix():
    from samples import sample_cv_events

    events = sample_cv_events()
    state = folded(events)
    assert state.collapse.status == "healthy"  # the last fold is fine ...
    collapsed = state.fold_results[2]
    assert collapsed.status == "collapsed" and collapsed.suggestions
    assert state.suggestions() == collapsed.suggestions  # ... the fix offered is fold 2's
    before = folded(events[:-1])  # until the CV has finished, the current fold's own (none)
    assert before.suggestions() == []


def test_a_failed_fold_shows_as_failed_in_the_fold_table():
    from mammo_tui.events import RunFailed
    from samples import sample_cv_events

    state = folded(sample_cv_events(finished=False))
    state.apply(RunFailed(error="loss became nan at epoch 2, batch 3", epoch=2, batch=3))
    assert state.cv_stopped
    assert "failed" in [line.split()[1] for line in plain(render.folds_table(state, 50)).splitlines()[1:6]]
