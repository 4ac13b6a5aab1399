"""Tracking to MLflow and TensorBoard, against the real libraries: a tiny run tracked live, read back
with MlflowClient and EventAccumulator and compared with its own events.jsonl; the same run exported
afterwards; a tracker that fails; a resumed run that continues its MLflow run."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mammo_tui.app import TrainRequest, train
from mammo_tui.runlog import read_events
from mammo_tui.tracking.export import export
from mammo_tui.tracking.spec import TrackingError

mlflow = pytest.importorskip("mlflow")  # the dev extra installs both; a bare install skips
pytest.importorskip("tensorboard")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from conftest import make_tiny_config as tiny_config  # noqa: E402

CLASSES = "ABCD"


@pytest.fixture(autouse=True, scope="module")
def _file_store_allowed():
    # the tracker sets it for itself; the tests' own MlflowClient reads the store before / without one
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield


def client_for(folder: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=folder.absolute().as_uri())


def only_run(folder: Path, experiment: str):
    client = client_for(folder)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {folder}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def expected_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """From events.jsonl alone: metric -> {epoch: value} (what both trackers must hold)."""
    out: dict[str, dict[int, float]] = {}
    for event in read_events(run_dir):
        if event.type == "epoch":
            m = event.metrics
            values = {"train_loss": event.train_loss, "val_loss": event.val_loss, "lr": event.lr,
                      "kappa_quadratic": m["kappa_quadratic"], "accuracy": m["accuracy"],
                      "balanced_accuracy_adjusted": m["balanced_accuracy_adjusted"], "auc_macro": m["auc_macro"]}
            for i, name in enumerate(CLASSES):
                if m["true_counts"][i]:
                    values[f"recall_{name}"] = m["recall_per_class"][i]
                values[f"pred_share_{name}"] = m["prediction_counts"][i] / m["n"]
        elif event.type == "collapse":
            values = {"collapse": {"healthy": 0, "warning": 1, "collapsed": 2}[event.status]}
        else:
            continue
        for key, value in values.items():
            if value is not None:
                out.setdefault(key, {})[event.epoch] = value
    return out


def tb_scalars(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_text(acc: EventAccumulator, tag: str) -> list[str]:
    from tensorboard.util import tensor_util

    return [tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(f"{tag}/text_summary")]


@pytest.fixture(scope="module")
def live(tiny_demo, tmp_path_factory):
    """One tiny run tracked live to MLflow and TensorBoard (2 epochs, 2 batches each)."""
    root = tmp_path_factory.mktemp("live")
    screen = []
    result = train(TrainRequest(config=tiny_config(epochs=2), dataset=tiny_demo, outdir=str(root / "runs"),
                                run_name="tracked", preset="demo",
                                track=[f"mlflow:{root / 'mlruns'}", f"tensorboard:{root / 'tb'}"]),
                   screen.append)
    assert result.status in ("healthy", "warning", "collapsed"), result
    return root, result.run_dir, screen


@pytest.mark.slow
def test_mlflow_holds_the_config_the_metrics_of_each_epoch_the_status_and_the_artifacts(live):
    root, run_dir, screen = live
    said = [e.message for e in screen if e.type == "log" and "tracking" in e.message]
    assert said == [f"tracking to mlflow:{root / 'mlruns'}, tensorboard:{root / 'tb'}"]  # and nothing went wrong
    client, run = only_run(root / "mlruns", "runs")  # experiment: the folder holding the run
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"

    started = next(e for e in read_events(run_dir) if e.type == "run_started")
    params = {k: str(v) for k, v in started.config.items() if k != "track"}
    params.update(n_train=str(started.n_train), n_val=str(started.n_val), device=started.device, preset="demo")
    assert run.data.params == params

    expected = expected_scalars(run_dir)
    assert {"recall_A", "pred_share_D", "collapse", "kappa_quadratic"} <= set(expected)
    for key, by_epoch in expected.items():
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == sorted(by_epoch.items()), key

    summary = json.loads((run_dir / "summary.json").read_text())
    last_check = [e for e in read_events(run_dir) if e.type == "collapse"][-1]
    tags = run.data.tags
    assert tags["status"] == summary["status"] and tags["best_epoch"] == str(summary["best_epoch"])
    assert tags["collapse_status"] == last_check.status
    assert tags["collapse_reasons"] == ("; ".join(last_check.reasons) or "none")
    assert float(run.data.metrics["best_kappa_quadratic"]) == summary["best_metrics"]["kappa_quadratic"]

    files = {a.path: a for a in client.list_artifacts(run.info.run_id)}
    files.update({a.path: a for a in client.list_artifacts(run.info.run_id, "checkpoints")})
    assert files["checkpoints/best.pt"].file_size == (run_dir / "checkpoints" / "best.pt").stat().st_size
    local = Path(client.download_artifacts(run.info.run_id, "report.md", str(root / "dl")))
    assert local.read_text().startswith("# Run report: tracked")
    local = Path(client.download_artifacts(run.info.run_id, "summary.json", str(root / "dl")))
    assert json.loads(local.read_text()) == summary
    # tracking.json: where the run is tracked, so a --resume continues that MLflow run
    recorded = json.loads((run_dir / "tracking.json").read_text())
    assert recorded[f"mlflow:{(root / 'mlruns').absolute().as_uri()}"]["run_id"] == run.info.run_id


def test_tensorboard_holds_the_same_scalars_and_the_texts(live):
    root, run_dir, _ = live
    acc = tb_scalars(root / "tb" / "tracked")
    for key, by_epoch in expected_scalars(run_dir).items():
        points = acc.Scalars(key)
        assert [p.step for p in points] == sorted(by_epoch), key
        assert [p.value for p in points] == pytest.approx([by_epoch[s] for s in sorted(by_epoch)], rel=1e-6), key
    assert "| arch | resnet18 |" in tb_text(acc, "config")[0] and "| n_train |" in tb_text(acc, "config")[0]
    checks = [e for e in read_events(run_dir) if e.type == "collapse"]
    texts = tb_text(acc, "collapse")
    assert len(texts) == len(checks) and all(texts[i].startswith(f"**{c.status}** at epoch {c.epoch}")
                                             for i, c in enumerate(checks))
    assert tb_text(acc, "status")[0].startswith(f"**{json.loads((run_dir / 'summary.json').read_text())['status']}**")
    assert tb_text(acc, "report")[0].startswith("# Run report: tracked")


def test_export_logs_what_live_tracking_logged_and_twice_is_not_twice(live, tmp_path):
    root, run_dir, _ = live
    done = export(run_dir, "mlflow", str(tmp_path / "mlruns"))
    assert len(done) == 1 and done[0].complete
    live_client, live_run = only_run(root / "mlruns", "runs")
    client, run = only_run(tmp_path / "mlruns", "runs")
    assert run.data.params == live_run.data.params
    assert run.data.tags == live_run.data.tags
    for key in live_run.data.metrics:  # values, steps and timestamps (the events' own times)
        ours = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
        theirs = live_client.get_metric_history(live_run.info.run_id, key)
        assert ours == [(m.step, m.value, m.timestamp) for m in theirs], key
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert artifacts == ["checkpoints", "report.md", "summary.json"]

    export(run_dir, "mlflow", str(tmp_path / "mlruns"))  # again: the same MLflow run, nothing logged twice
    _, again = only_run(tmp_path / "mlruns", "runs")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "kappa_quadratic")) == 2
    # ... also without tracking.json (a read-only copy of the run): found by its run-key tag
    records = json.loads((run_dir / "tracking.json").read_text())
    (run_dir / "tracking.json").unlink()
    try:
        export(run_dir, "mlflow", str(tmp_path / "mlruns"))
    finally:
        (run_dir / "tracking.json").write_text(json.dumps(records))
    assert only_run(tmp_path / "mlruns", "runs")[1].info.run_id == run.info.run_id
    assert len(client.get_metric_history(run.info.run_id, "kappa_quadratic")) == 2

    export(run_dir, "tensorboard", str(tmp_path / "tb"))
    ours, theirs = tb_scalars(tmp_path / "tb" / "tracked"), tb_scalars(root / "tb" / "tracked")
    assert ours.Tags()["scalars"] == theirs.Tags()["scalars"]
    for key in theirs.Tags()["scalars"]:
        assert [(p.step, p.value, p.wall_time) for p in ours.Scalars(key)] == \
            [(p.step, p.value, p.wall_time) for p in theirs.Scalars(key)], key
    with pytest.raises(TrackingError, match="already holds TensorBoard events"):
        export(run_dir, "tensorboard", str(tmp_path / "tb"))


@pytest.mark.slow
def test_a_failing_tracker_warns_once_and_training_goes_on(tiny_demo, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    specs = [f"mlflow:{blocker / 'store'}", f"tensorboard:{blocker / 'tb'}"]
    screen = []
    result = train(TrainRequest(config=tiny_config(epochs=2), dataset=tiny_demo, outdir=str(tmp_path / "runs"),
                                run_name="r", track=specs), screen.append)
    assert result.exit_code in (0, 3) and result.status != "failed"
    assert [e.epoch for e in read_events(result.run_dir) if e.type == "epoch"] == [1, 2]
    for spec in specs:  # said once, in the run log and on the screen, with the way to export later
        logged = [e.message for e in read_events(result.run_dir) if e.type == "log" and e.level == "warning"
                  and spec in e.message]
        shown = [e.message for e in screen if e.type == "log" and e.level == "warning" and spec in e.message]
        assert len(logged) == 1 and shown == logged, logged
        assert "stopped: NotADirectoryError" in logged[0] and "training goes on" in logged[0]
        assert f"mammo-tui export {result.run_dir.absolute()} --to {spec.split(':')[0]}" in logged[0]
    assert not (blocker.parent / "store").exists()


@pytest.mark.slow
def test_a_failed_run_is_failed_in_mlflow_with_its_error(tiny_demo, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(tiny_config(epochs=1), lr=1e30)  # past the range check: a NaN loss at once
    result = train(TrainRequest(config=cfg, dataset=tiny_demo, outdir=str(tmp_path / "runs"), run_name="r",
                                track=[f"mlflow:{tmp_path / 'mlruns'}", f"tensorboard:{tmp_path / 'tb'}"]))
    assert result.status == "failed"
    client, run = only_run(tmp_path / "mlruns", "runs")
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert run.data.tags["error"].startswith("non-finite loss")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.md"]  # no epoch, no summary yet
    assert tb_text(tb_scalars(tmp_path / "tb" / "r"), "status")[0].startswith("**failed**: non-finite loss")
    # exported afterwards, the summary the trainer wrote after the failure goes with it
    export(result.run_dir, "mlflow", str(tmp_path / "mlruns"))
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["status"] == "failed" and summary["error"] == run.data.tags["error"]
    assert only_run(tmp_path / "mlruns", "runs")[1].info.status == "FAILED"


@pytest.mark.slow
def test_resume_continues_the_mlflow_run_and_appends_to_tensorboard(tiny_demo, tmp_path):
    store, board = tmp_path / "mlruns", tmp_path / "tb"
    cancel = threading.Event()

    def stop_after_epoch_1(event):
        if event.type == "epoch" and event.epoch == 1:
            cancel.set()

    first = train(TrainRequest(config=tiny_config(epochs=2), dataset=tiny_demo, outdir=str(tmp_path / "runs"),
                               run_name="r", track=[f"mlflow:{store}", f"tensorboard:{board}"]),
                  stop_after_epoch_1, cancel)
    assert first.status == "interrupted"
    client, run = only_run(store, "runs")
    assert run.info.status == "KILLED"
    # the config's `track` changes on resume: not refused (it is not how the model trains), and kept
    second = train(TrainRequest(resume=str(first.run_dir), overrides={"track": f"mlflow:{store}"},
                                track=[f"tensorboard:{board}"]))
    assert second.status != "interrupted" and second.exit_code in (0, 3)
    assert f'track = "mlflow:{store}"' in (first.run_dir / "config.toml").read_text()
    client, resumed = only_run(store, "runs")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kappa_quadratic")] == [1, 2]
    assert len(list((board / "r").glob("events.out.tfevents.*"))) == 2  # one file per session
    assert [p.step for p in tb_scalars(board / "r").Scalars("kappa_quadratic")] == [1, 2]


@pytest.mark.slow
def test_a_copied_run_gets_its_own_mlflow_run_and_never_writes_into_the_original(tiny_demo, tmp_path):
    """A copy carries tracking.json: resuming the copy logged its epochs into the original's MLflow
    run. A copy (the original folder still there) now gets a run of its own."""
    import shutil

    store = tmp_path / "mlruns"
    cancel = threading.Event()
    first = train(TrainRequest(config=tiny_config(epochs=2), dataset=tiny_demo, outdir=str(tmp_path / "runs"),
                               run_name="r", track=[f"mlflow:{store}"]),
                  lambda e: cancel.set() if e.type == "epoch" else None, cancel)
    _, original = only_run(store, "runs")
    copy = tmp_path / "copies" / "r"
    shutil.copytree(first.run_dir, copy)
    train(TrainRequest(resume=str(copy), track=[f"mlflow:{store}"]))
    client = client_for(store)
    assert [m.step for m in client.get_metric_history(original.info.run_id, "kappa_quadratic")] == [1]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2
    (theirs,) = [r for r in runs if r.info.run_id != original.info.run_id]
    # what the copy trained in this session (`mammo-tui export` sends a whole history)
    assert [m.step for m in client.get_metric_history(theirs.info.run_id, "kappa_quadratic")] == [2]


def test_a_missing_mlflow_run_is_made_again_not_reused(live, tmp_path):
    """A recorded run id that no longer exists in the store (another store at the same path, a
    deleted run) does not break the export: a new MLflow run is made."""
    root, run_dir, _ = live
    export(run_dir, "mlflow", str(tmp_path / "mlruns"))
    client, run = only_run(tmp_path / "mlruns", "runs")
    client.delete_run(run.info.run_id)
    export(run_dir, "mlflow", str(tmp_path / "mlruns"))
    _, fresh = only_run(tmp_path / "mlruns", "runs")
    assert fresh.info.run_id != run.info.run_id


def test_cli_export_of_a_cross_validation_folder_exports_each_fold_where_it_lies_now(live, tmp_path):
    """`mammo-tui export CV_DIR`: every member run, read from where it is now (a copy here, without
    its checkpoints), named after the CV folder (experiment) and the fold (run)."""
    import shutil

    from corpus import assert_clean, mammo

    _, run_dir, _ = live
    cv_dir = tmp_path / "cv-copied"
    shutil.copytree(run_dir, cv_dir / "fold-1", ignore=shutil.ignore_patterns("checkpoints", "tracking.json", ".lock"))
    (cv_dir / "cv.json").write_text(json.dumps({"folds": 1, "status": "finished"}))
    out = assert_clean(mammo("export", cv_dir, "--to", "mlflow", "--dir", tmp_path / "mlruns", cwd=tmp_path), 0,
                       f"exported {cv_dir / 'fold-1'} -> MLflow run")
    client, run = only_run(tmp_path / "mlruns", "cv-copied")
    assert run.info.run_name == "fold-1" and run.data.tags["mammo_tui.run_dir"] == str(cv_dir / "fold-1")
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["report.md", "summary.json"]
    assert "experiment 'cv-copied'" in out
