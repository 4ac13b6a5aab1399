import io
import json
import threading
import time

from mammo_tui import events as ev
from mammo_tui.console import ConsolePrinter
from mammo_tui.runlog import RunLogWriter, follow_events, read_events


def _metrics():
    return {"accuracy": 0.5, "balanced_accuracy": 0.4, "balanced_accuracy_adjusted": 0.2, "kappa": 0.1,
            "kappa_quadratic": 0.3, "auc_macro": None, "recall_per_class": [0.0, 0.5, 0.9, 0.2],
            "precision_per_class": [0, 0.5, 0.5, 0.5], "f1_per_class": [0, 0.5, 0.6, 0.3],
            "prediction_distribution": [0.0, 0.2, 0.7, 0.1], "true_distribution": [0.1, 0.2, 0.5, 0.2],
            "confusion_matrix": [[0, 1, 1, 0]] * 4, "n": 10}


def sample_events():
    return [
        ev.RunStarted(run_dir="runs/x", run_name="x", config={"arch": "resnet18", "freeze": "none",
                      "warmup_epochs": 1, "sampler": "weighted", "class_weights": "none", "loss": "ce",
                      "lr": 1e-3, "batch_size": 8, "img_size": 32, "epochs": 2},
                      class_names=["A", "B", "C", "D"], n_train=8, n_val=4, train_counts=[1, 2, 3, 2],
                      val_counts=[1, 1, 1, 1], steps_per_epoch=1),
        ev.BatchProgress(epoch=1, batch=1, n_batches=1, loss=float("nan"), images_per_s=10, eta_s=3),
        ev.EpochMetrics(epoch=1, epochs=2, train_loss=1.2, val_loss=1.1, metrics=_metrics(), lr=1e-3,
                        trainable="head", epoch_time_s=1.0, images_per_s=10.0),
        ev.CollapseStatus(epoch=1, status="warning", reasons=["recall 0 for A"],
                          suggestions=[{"key": "sampler", "value": "weighted", "reason": "balance batches"}]),
        ev.CheckpointSaved(epoch=1, kind="best", path="runs/x/checkpoints/best.pt", score=[0.2, 0.3, -1.0]),
        ev.ConfigChanged(epoch=1, changes={"lr": [0.1, 0.01]}, reason="collapse"),
        ev.LogMessage("info", "hello"),
        ev.RunFinished(status="warning", best_epoch=1, best_metrics=_metrics(), epochs_completed=1),
    ]


def test_every_event_type_round_trips_through_the_jsonl_log(tmp_path):
    writer = RunLogWriter(tmp_path / "events.jsonl")
    originals = sample_events()
    for event in originals:
        writer(event)
    writer.close()
    replayed = read_events(tmp_path)
    assert [e.type for e in replayed] == [e.type for e in originals]
    assert replayed[2] == originals[2]
    assert replayed[1].loss is None  # NaN is written as null: the log stays valid JSON
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        assert "type" in json.loads(line)
    # data_progress goes to the screen only (before the run log exists): it round-trips as JSON
    progress = ev.DataProgress(stage="checking images", done=3, total=9, images_per_s=1.5, eta_s=4.0)
    assert ev.from_dict(json.loads(json.dumps(progress.to_dict()))) == progress
    assert set(ev.EVENT_TYPES) == ({e.type for e in originals} | {"failed", progress.type}
                                   | {e.type for e in cv_events()} | {e.type for e in sweep_events()})


def cv_events():
    return [ev.FoldStarted(fold=1, folds=3, cv_dir="runs/cv", run_dir="runs/cv/fold-1"),
            ev.FoldFinished(fold=1, folds=3, status="healthy", best_epoch=2, best_metrics=_metrics(), kept=True),
            ev.CVFinished(cv_dir="runs/cv", summary={"folds": 3, "per_fold": []}, exit_code=3)]


def test_cross_validation_events_round_trip_through_json():
    for event in cv_events():
        assert ev.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def sweep_events():
    return [ev.SweepRunStarted(index=1, total=4, run="focal-seed0", config_id="focal", seed=0,
                               run_dir="runs/s/focal-seed0", sweep_dir="runs/s", kept=True),
            ev.SweepRunFinished(index=1, total=4, run="focal-seed0", config_id="focal", seed=0, status="pruned",
                                best_metrics=_metrics(), kept=False, best_epoch=2, sweep_dir="runs/s"),
            ev.SweepFinished(sweep_dir="runs/s", exit_code=3, status="finished", best_config_id="focal",
                             best_status="collapsed", headline={"kappa_quadratic": 0.3})]


def test_sweep_events_round_trip_through_json():
    for event in sweep_events():
        assert ev.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_torn_last_line_is_ignored(tmp_path):
    writer = RunLogWriter(tmp_path / "events.jsonl")
    writer(ev.LogMessage("info", "complete"))
    writer.close()
    with open(tmp_path / "events.jsonl", "a") as handle:
        handle.write('{"type": "log", "level": "in')  # kill -9 mid-write
    assert [e.message for e in read_events(tmp_path)] == ["complete"]


def test_follow_sees_events_appended_later_and_stops_at_finish(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = RunLogWriter(path)
    seen = []

    def follow():
        seen.extend(follow_events(path, poll_s=0.02))

    thread = threading.Thread(target=follow)
    thread.start()
    for event in sample_events():
        writer(event)
        time.sleep(0.01)
    thread.join(timeout=5)
    writer.close()
    assert not thread.is_alive()
    assert [e.type for e in seen] == [e.type for e in sample_events()]


def test_console_printer_writes_plain_lines_without_cursor_codes_off_a_tty():
    out = io.StringIO()
    printer = ConsolePrinter(out, tty=False)
    for event in sample_events():
        printer(event)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert "epoch 1/2 [head]" in text and "kappa_q 0.300" in text
    assert "WARNING: recall 0 for A" in text and "--set sampler=weighted" in text
    assert "finished: warning; best epoch 1" in text


def test_follow_reads_past_the_interrupted_end_of_a_run_that_was_resumed(tmp_path):
    started = ev.RunStarted(run_dir=str(tmp_path), run_name="r", config={}, class_names=list("ABCD"),
                            n_train=8, n_val=2, train_counts=[2] * 4, val_counts=[1, 1, 0, 0],
                            steps_per_epoch=1)
    writer = RunLogWriter(tmp_path / "events.jsonl")
    for event in (started, ev.RunFinished("interrupted", None, {}, 0, interrupted=True),
                  started,
                  ev.LogMessage("info", "second session")):
        writer(event)
    seen = []
    thread = threading.Thread(target=lambda: seen.extend(follow_events(tmp_path, poll_s=0.02)))
    thread.start()
    time.sleep(0.2)
    writer(ev.RunFinished("healthy", 1, {}, 1))  # the resumed session ends: now it is over
    thread.join(timeout=5)
    writer.close()
    assert not thread.is_alive()
    assert [e.type for e in seen] == ["run_started", "finished", "run_started", "log", "finished"]
    assert seen[-1].status == "healthy"


def test_console_prints_fold_progress_and_kept_folds():
    out = io.StringIO()
    printer = ConsolePrinter(out, tty=False)
    printer(ev.FoldStarted(fold=2, folds=5, cv_dir="runs/cv", run_dir="runs/cv/fold-2"))
    printer(ev.FoldFinished(fold=1, folds=5, status="healthy", best_epoch=None, best_metrics={}, kept=True))
    printer(ev.FoldFinished(fold=2, folds=5, status="collapsed", best_epoch=3, best_metrics=_metrics()))
    lines = out.getvalue().splitlines()
    assert lines[0] == "── fold 2/5 (runs/cv/fold-2) ──"
    assert lines[1] == "fold 1/5 already finished (healthy); kept"
    assert lines[2].startswith("fold 2/5: collapsed; best epoch 3: kappa_q 0.300 bal_acc_adj 0.200")


# -- a log you can trust after kill -9 and a full disk --------------------------------------------

import pytest  # noqa: E402

from mammo_tui.errors import RunDirError  # noqa: E402


def test_a_torn_last_line_is_cut_off_when_the_log_is_opened_again(tmp_path):
    writer = RunLogWriter(tmp_path / "events.jsonl")
    writer(ev.LogMessage("info", "before the kill"))
    writer.close()
    with open(tmp_path / "events.jsonl", "a") as handle:
        handle.write('{"type": "log", "level": "in')  # kill -9 mid-write
    writer = RunLogWriter(tmp_path / "events.jsonl")
    assert "torn last line" in writer.repaired
    writer(ev.LogMessage("info", "after the resume"))
    writer.close()
    assert [e.message for e in read_events(tmp_path)] == ["before the kill", "after the resume"]


def test_a_whole_event_that_lost_only_its_line_end_is_kept(tmp_path):
    line = json.dumps(ev.LogMessage("info", "whole").to_dict())
    (tmp_path / "events.jsonl").write_text(line)
    writer = RunLogWriter(tmp_path / "events.jsonl")
    writer(ev.LogMessage("info", "next"))
    writer.close()
    assert [e.message for e in read_events(tmp_path)] == ["whole", "next"]
    assert RunLogWriter(tmp_path / "events.jsonl").repaired == ""  # a sound log is left alone


def test_a_full_disk_is_one_message_and_closing_the_writer_never_raises():
    writer = RunLogWriter("/dev/full")  # every write: ENOSPC
    with pytest.raises(RunDirError, match="the disk is full"):
        writer(ev.LogMessage("info", "x" * 100))
    with pytest.raises(RunDirError, match="the disk is full"):
        writer(ev.RunFailed(error="disk full", epoch=1, batch=None, exit_code=2))
    writer.close()  # no second error from a buffer that cannot be flushed
    writer.close()


def test_a_run_log_that_is_a_directory_is_a_message_for_writer_and_reader(tmp_path):
    (tmp_path / "events.jsonl").mkdir()
    with pytest.raises(RunDirError, match="events.jsonl.*directory"):
        RunLogWriter(tmp_path / "events.jsonl")
    with pytest.raises(RunDirError, match="events.jsonl.*directory"):
        read_events(tmp_path)
    with pytest.raises(OSError):  # still an OSError for callers that handle those (report)
        read_events(tmp_path)


def _event_classes(cls=ev.Event):
    for sub in cls.__subclasses__():
        yield sub
        yield from _event_classes(sub)


def test_every_event_class_has_its_own_type_tag_and_round_trips_by_it():
    classes = list(_event_classes())
    tags = [cls.type for cls in classes]
    assert len(tags) == len(set(tags)), f"duplicate event type tags: {sorted(tags)}"
    assert ev.Event.type not in tags
    assert ev.EVENT_TYPES == {cls.type: cls for cls in classes}


def test_dispatch_routes_by_class_and_ignores_what_nobody_handles():
    class Base:
        @ev.handles(ev.RunFinished, ev.RunFailed)
        def _end(self, event):
            return ("end", event)

        @ev.handles(ev.LogMessage)
        def _log(self, event):
            return ("log", event.message)

    class Consumer(Base):
        @ev.handles(ev.LogMessage)  # a subclass overrides its base's handler
        def _louder(self, event):
            return ("LOG", event.message.upper())

    consumer = Consumer()
    failed = ev.RunFailed(error="boom")
    assert ev.dispatch(consumer, failed) == ("end", failed)
    assert ev.dispatch(Base(), ev.LogMessage("info", "hi")) == ("log", "hi")
    assert ev.dispatch(consumer, ev.LogMessage("info", "hi")) == ("LOG", "HI")
    batch = ev.BatchProgress(epoch=1, batch=1, n_batches=2, loss=1.0, images_per_s=1.0, eta_s=1.0)
    assert ev.handler_for(consumer, batch) is None
    assert ev.dispatch(consumer, batch) is None  # not registered: ignored
    assert ev.dispatch(consumer, batch, default=set()) == set()

    class Renamed(ev.LogMessage):  # a subclass of a handled event reaches its parent's handler
        pass

    assert ev.dispatch(Base(), Renamed("info", "sub")) == ("log", "sub")
    with pytest.raises(TypeError):
        ev.handles("log")
    with pytest.raises(TypeError):
        ev.handles()


def test_every_on_handler_of_the_consumers_is_registered_for_its_event_class():
    """A handler named `_on_<type>` must be reached by dispatch (a forgotten @handles is silent)."""
    from mammo_tui.tracking.mlflow_sink import MlflowTracker
    from mammo_tui.tracking.tensorboard_sink import TensorBoardTracker
    from mammo_tui.tui.state import DashboardState
    from mammo_tui.tui.sweep import SweepState

    for consumer in (ConsolePrinter, DashboardState, SweepState, MlflowTracker, TensorBoardTracker):
        table = ev._handler_table(consumer)
        named = {name[4:] for name in dir(consumer) if name.startswith("_on_") and name[4:] in ev.EVENT_TYPES}
        assert named, consumer
        for tag in named:
            assert table.get(ev.EVENT_TYPES[tag]) == f"_on_{tag}", (consumer, tag)
