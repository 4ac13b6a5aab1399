import dataclasses
import json
import threading
import subprocess
import sys

import pytest

from mammo_tui.stats import aggregate, mean_std


def test_mean_std_ignores_missing_values():
    assert mean_std([0.5, 0.7, None]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414, abs=1e-4), "n": 2}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


@pytest.mark.slow
def test_cv_runs_every_fold_with_patient_disjoint_validation_sets(tiny_demo, tmp_path):
    args = [sys.executable, "-m", "mammo_tui", "cv", "--no-ui", "--folds", "3", "--csv", tiny_demo.csv, "--dicom-root",
            tiny_demo.dicom_root, "--preset", "demo", "--epochs", "1", "--no-pretrained", "--img-size", "32",
            "--set", "augment=false", "--set", "max_batches_per_epoch=2", "--set", "num_workers=0",
            "--outdir", str(tmp_path), "--run-name", "cv"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "mean ± std over 3 folds" in proc.stdout
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert [row["fold"] for row in summary["per_fold"]] == [1, 2, 3]
    val_groups = []
    for fold in (1, 2, 3):
        lines = (tmp_path / "cv" / f"fold-{fold}" / "splits.csv").read_text().splitlines()[1:]
        rows = [line.split(",") for line in lines]
        train = {r[2] for r in rows if r[3] == "train"}
        val = {r[2] for r in rows if r[3] == "val"}
        assert not train & val
        val_groups.append(val)
    assert not (val_groups[0] & val_groups[1]) and not (val_groups[1] & val_groups[2])
    expected = aggregate(summary["per_fold"])["kappa_quadratic"]["mean"]
    assert summary["aggregate"]["kappa_quadratic"]["mean"] == pytest.approx(expected)
    # running it again keeps the finished folds instead of retraining them
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.stdout.count("already finished") == 3


# -- in-process: events, the manifest, re-runs, resume ------------------------------------------

from mammo_tui.drivers.cv import (CV_FILE, follow_cv, read_cv_summary, read_manifest, resume_fields,  # noqa: E402
                          run_cv, worst_status)
from mammo_tui.errors import ConfigError, MammoError  # noqa: E402
from tui_helpers import tiny_config  # noqa: E402


def cv_request(spec, outdir, name="cv", **overrides):
    from mammo_tui.app import TrainRequest

    return TrainRequest(config=tiny_config(**overrides), dataset=spec, outdir=str(outdir), run_name=name,
                        preset="test")


def fold_view(events):
    """What a fold-level consumer sees: fold starts / ends and the final summary, without timestamps."""
    out = []
    for e in events:
        if e.type == "fold_started":
            out.append(("started", e.fold, e.folds, e.run_dir))
        elif e.type == "fold_finished":
            out.append(("finished", e.fold, e.status, e.best_epoch, e.best_metrics["kappa_quadratic"],
                        [(x["key"], x["value"]) for x in e.suggestions]))
        elif e.type == "cv_finished":
            out.append(("cv", e.summary["status"], e.summary["aggregate"]["kappa_quadratic"]["mean"], e.exit_code))
    return out


def test_worst_fold_decides_the_cv_status():
    assert worst_status(["healthy", "warning", "healthy"]) == "warning"
    assert worst_status(["healthy", "collapsed", "warning"]) == "collapsed"
    assert worst_status(["healthy", "healthy"]) == "healthy"


@pytest.mark.slow
def test_live_events_and_the_rebuilt_stream_of_a_finished_cv_agree(tiny_demo, tmp_path):
    live = []
    result = run_cv(cv_request(tiny_demo, tmp_path), 2, live.append)
    assert result.exit_code in (0, 3) and result.run_dir == tmp_path / "cv"
    assert read_manifest(result.run_dir)["status"] == "finished"
    assert read_cv_summary(result.run_dir) == result.summary
    watched = list(follow_cv(result.run_dir))
    assert fold_view(watched) == fold_view(live)
    assert [v[0] for v in fold_view(live)] == ["started", "finished", "started", "finished", "cv"]
    # the folds' own run events come through too, one run per fold, between its start and end
    starts = [e.run_dir for e in watched if e.type == "run_started"]
    assert starts == [str(tmp_path / "cv" / "fold-1"), str(tmp_path / "cv" / "fold-2")]
    assert [e.type for e in live].count("epoch") == [e.type for e in watched].count("epoch") == 2


@pytest.mark.slow
def test_a_re_run_must_match_the_cross_validation_it_continues(tiny_demo, tmp_path):
    stop = threading.Event()

    def sink(event):  # stop as soon as fold 2 begins: fold 1 stays finished
        if event.type == "fold_started" and event.fold == 2:
            stop.set()

    first = run_cv(cv_request(tiny_demo, tmp_path), 2, sink, stop)
    assert first.exit_code == 130 and first.summary == {}
    assert read_manifest(first.run_dir)["status"] == "interrupted"
    assert not (first.run_dir / "fold-2").exists()

    with pytest.raises(ConfigError, match="is a 2-fold cross-validation"):
        run_cv(cv_request(tiny_demo, tmp_path), 3)
    with pytest.raises(ConfigError, match=r"config differs .*lr"):
        run_cv(cv_request(tiny_demo, tmp_path, lr=0.5), 2)

    from mammo_tui.app import TrainRequest

    fields, folds = resume_fields(first.run_dir)
    assert folds == 2 and fields["config"] == tiny_config() and fields["run_name"] == "cv"
    events = []
    resumed = run_cv(TrainRequest(**fields), folds, events.append)
    finished = [e for e in events if e.type == "fold_finished"]
    assert [(e.fold, e.kept) for e in finished] == [(1, True), (2, False)]
    assert [e.type for e in events].count("run_started") == 1  # fold 1 was not trained again
    assert resumed.summary["folds"] == 2 and read_manifest(first.run_dir)["status"] == "finished"


def test_bad_fold_counts_and_bad_data_leave_nothing_behind(tmp_path):
    from mammo_tui.data.sources import DatasetSpec

    with pytest.raises(ConfigError, match="between 2 and"):
        run_cv(cv_request(None, tmp_path), 1)
    missing = DatasetSpec(csv=str(tmp_path / "nope.csv"))
    with pytest.raises(MammoError, match="nope.csv"):
        run_cv(cv_request(missing, tmp_path), 3)
    assert not (tmp_path / "cv").exists()  # no half-made CV directory to trip over later


def test_cv_resume_of_a_folder_that_is_not_a_cv_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "cv", "--no-ui", "--resume", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"not a cross-validation directory (no {CV_FILE})" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_resume_of_a_cv_folder_points_to_cv_resume(tmp_path):
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / CV_FILE).write_text('{"folds": 3}')
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--resume", str(tmp_path / "cv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"mammo-tui cv --resume {tmp_path / 'cv'}" in proc.stderr


def test_a_fold_is_resumed_by_its_cross_validation_never_alone(tmp_path):
    """`train --resume CV/fold-2` reopened one fold (even while its CV ran), leaving cv_summary.json
    stale; the CV's own resume of a fold still goes through (it says which fold it drives)."""
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.errors import RunDirError

    fold = tmp_path / "cv" / "fold-2"
    fold.mkdir(parents=True)
    (tmp_path / "cv" / CV_FILE).write_text('{"folds": 3}')
    with pytest.raises(RunDirError, match=rf"a fold of the cross-validation .*cv --resume {tmp_path / 'cv'}"):
        train(TrainRequest(resume=str(fold)))
    with pytest.raises(RunDirError, match="not a mammo-tui run directory"):  # past the fold check: the CV's way
        train(TrainRequest(resume=str(fold), folds=3, fold=1))


@pytest.mark.slow
def test_following_a_live_cv_sees_every_fold_as_it_happens(tiny_demo, tmp_path):
    """watch on a CV that is still training: fold folders appear one by one while it follows."""
    live = []
    worker = threading.Thread(target=lambda: run_cv(cv_request(tiny_demo, tmp_path, epochs=2), 2, live.append))
    cv_dir = tmp_path / "cv"
    worker.start()
    try:
        while not (cv_dir / CV_FILE).is_file():  # follow from the moment the CV folder exists
            assert worker.is_alive(), "the CV ended before it wrote cv.json"
            threading.Event().wait(0.02)
        assert not (cv_dir / "fold-2").exists()  # the follower really waits for folds to appear
        give_up = threading.Event()
        timer = threading.Timer(300, give_up.set)
        timer.start()
        watched = list(follow_cv(cv_dir, should_stop=give_up.is_set, poll_s=0.05))
        timer.cancel()
    finally:
        worker.join(timeout=300)
    assert fold_view(watched) == fold_view(live)
    assert [e.type for e in watched].count("epoch") == 4


@pytest.mark.slow
def test_a_collapsed_fold_carries_its_last_suggestions_live_kept_and_watched(tiny_demo, tmp_path):
    from mammo_tui.runlog import read_events
    from tui_helpers import collapse_config
    from mammo_tui.app import TrainRequest

    request = TrainRequest(config=collapse_config(), dataset=tiny_demo, outdir=str(tmp_path), run_name="cv",
                           preset="test")
    live = []
    run_cv(request, 2, live.append)
    finished = [e for e in live if e.type == "fold_finished"]
    for e in finished:
        checks = [c for c in read_events(tmp_path / "cv" / f"fold-{e.fold}") if c.type == "collapse"]
        expected = checks[-1].suggestions if checks[-1].status != "healthy" else []
        assert e.suggestions == expected
    assert any(e.suggestions for e in finished)  # the collapse config gets a fix to try
    assert fold_view(follow_cv(tmp_path / "cv")) == fold_view(live)
    again = []  # a re-run keeps both folds and reads their suggestions back from their logs
    run_cv(request, 2, again.append)
    kept = [e for e in again if e.type == "fold_finished"]
    assert all(e.kept for e in kept) and [e.suggestions for e in kept] == [e.suggestions for e in finished]


def test_a_failed_fold_stops_the_cv_without_a_summary(tiny_demo, tmp_path):
    # lr 1e30 with no clipping: the loss becomes NaN in fold 1 (as in the engine's NaN test)
    request = cv_request(tiny_demo, tmp_path, grad_clip=0.0, max_batches_per_epoch=6, epochs=2)
    request.config = dataclasses.replace(request.config, lr=1e30)  # past lr's range check on purpose
    events = []
    result = run_cv(request, 2, events.append)
    assert result.exit_code == 1 and result.summary == {}
    assert read_manifest(result.run_dir)["status"] == "failed"
    assert not (result.run_dir / "cv_summary.json").exists() and not (result.run_dir / "fold-2").exists()
    assert [e.type for e in events if e.type.startswith(("fold", "cv"))] == ["fold_started"]
    assert [e.type for e in follow_cv(result.run_dir) if e.type.startswith(("fold", "cv"))] == ["fold_started"]


# -- classes absent from a fold's validation set ----------------------------------------------------

from mammo_tui.drivers.cv import format_cv  # noqa: E402
from mammo_tui.runread import cv_details  # noqa: E402
from mammo_tui.rundir import CV_SUMMARY_FILE  # noqa: E402
from mammo_tui.stats import format_recall_stat  # noqa: E402
from mammo_tui.metrics import compute_metrics  # noqa: E402


def _fold_metrics(with_a: bool, recall_a_hits: int = 0):
    """Validation metrics of one fold: 10 each of B, C, D (8 right), and 5 of A when with_a."""
    y_true, y_pred = [], []
    for c in (1, 2, 3):
        y_true += [c] * 10
        y_pred += [c] * 8 + [(c % 3) + 1] * 2
    if with_a:
        y_true += [0] * 5
        y_pred += [0] * recall_a_hits + [1] * (5 - recall_a_hits)
    return compute_metrics(y_true, y_pred)


def _absent_a_summary():
    """5 folds; A is absent from folds 1 and 2 (recall 0 there by convention), 2/5, 3/5, 1/5 elsewhere."""
    metrics = [_fold_metrics(False), _fold_metrics(False), _fold_metrics(True, 2), _fold_metrics(True, 3),
               _fold_metrics(True, 1)]
    rows = [{"fold": i, "status": "healthy", "best_epoch": 1, "best_metrics": m} for i, m in enumerate(metrics, 1)]
    return {"folds": 5, "status": "healthy", "per_fold": rows, "aggregate": aggregate(rows), "collapsed_folds": []}


def test_recall_of_a_class_absent_from_a_fold_is_not_averaged_as_zero():
    summary = _absent_a_summary()
    assert [row["best_metrics"]["recall_per_class"][0] for row in summary["per_fold"]] == [0, 0, 0.4, 0.6, 0.2]
    a = summary["aggregate"]["recall_per_class"]["A"]
    assert a["mean"] == pytest.approx(0.4) and a["std"] == pytest.approx(0.2) and a["n"] == 3
    assert a["folds"] == 5
    b = summary["aggregate"]["recall_per_class"]["B"]
    assert b["mean"] == pytest.approx(0.8) and b["n"] == 5 == b["folds"]
    assert format_recall_stat(a) == "0.400 ± 0.200 (3 of 5 folds)"
    assert format_recall_stat(b) == "0.800 ± 0.000"  # present everywhere: nothing to say
    # the scalar metrics still average every fold
    assert summary["aggregate"]["kappa_quadratic"]["n"] == 5


def test_format_cv_says_n_a_for_an_absent_class_and_over_how_many_folds():
    text = format_cv(_absent_a_summary())
    lines = text.splitlines()
    assert lines[1].split()[-1] == "n/a/0.80/0.80/0.80"  # fold 1: no A images
    assert lines[3].split()[-1] == "0.40/0.80/0.80/0.80"
    recall = next(line for line in lines if line.startswith("recall: "))
    assert "A 0.400 ± 0.200 (3 of 5 folds)" in recall and "B 0.800 ± 0.000," in recall
    assert any(line.startswith("n/a: no images of that class") for line in lines)


def test_a_class_absent_from_every_fold_has_no_mean():
    rows = [{"fold": i, "status": "healthy", "best_metrics": _fold_metrics(False)} for i in (1, 2)]
    a = aggregate(rows)["recall_per_class"]["A"]
    assert a["mean"] is None and a["n"] == 0 and a["folds"] == 2
    assert format_recall_stat(a) == "n/a (in no fold)"


def test_metrics_without_true_counts_count_every_class_as_present():
    rows = [{"best_metrics": {"recall_per_class": [0.0, 0.5, 0.5, 0.5]}},
            {"best_metrics": {"recall_per_class": [0.5, 0.5, 0.5, 0.5]}}]
    a = aggregate(rows)["recall_per_class"]["A"]
    assert a["mean"] == pytest.approx(0.25) and a["n"] == 2


def test_cv_details_recomputes_recall_means_from_the_folds(tmp_path):
    summary = _absent_a_summary()
    summary["aggregate"]["recall_per_class"]["A"] = {"mean": 0.24, "std": 0.2, "n": 5}  # written by an older version
    (tmp_path / CV_SUMMARY_FILE).write_text(json.dumps(summary))
    (tmp_path / CV_FILE).write_text(json.dumps({"folds": 5, "status": "finished", "config": {}}))
    details = cv_details(tmp_path)
    assert details["best_metrics"]["recall_per_class"] == pytest.approx([0.4, 0.8, 0.8, 0.8])


def test_the_fold_table_lowest_recall_ignores_absent_classes():
    from rich.console import Console

    from mammo_tui.events import FoldFinished, FoldStarted
    from mammo_tui.tui import render
    from mammo_tui.tui.state import DashboardState

    state = DashboardState()
    summary = _absent_a_summary()
    state.apply(FoldStarted(fold=1, folds=5, cv_dir="runs/cv", run_dir="runs/cv/fold-1"))
    for row in summary["per_fold"]:
        state.apply(FoldFinished(fold=row["fold"], folds=5, status="healthy", best_epoch=1,
                                 best_metrics=row["best_metrics"]))
    console = Console(width=60, record=True, file=__import__("io").StringIO())
    console.print(render.folds_table(state, 60))
    rows = {line.split()[0]: line.split() for line in console.export_text().splitlines()[1:6]}
    assert [rows[str(f)][-1] for f in range(1, 6)] == ["0.800", "0.800", "0.400", "0.600", "0.200"]


def test_cv_resume_under_another_digest_secret_is_refused(tiny_demo, tmp_path, monkeypatch):
    # the remaining folds are computed from the patient digests: another secret, other folds
    from mammo_tui import privacy
    from mammo_tui.drivers.cv import _open_manifest

    request = cv_request(tiny_demo, tmp_path, name="cv")
    cv_dir = tmp_path / "cv"
    cv_dir.mkdir()
    manifest = {"folds": 2, "status": "running", "config": request.config.to_dict(),
                "group_key": privacy.secret_fingerprint()}
    (cv_dir / CV_FILE).write_text(json.dumps(manifest))
    assert _open_manifest(cv_dir, request, 2)["group_key"] == manifest["group_key"]  # same secret: continues
    secret = tmp_path / "team.secret"
    secret.write_text("ab" * 32)
    secret.chmod(0o600)
    monkeypatch.setenv(privacy.SECRET_FILE_ENV, str(secret))
    privacy.clear_cache()
    try:
        with pytest.raises(MammoError, match="another patient-digest secret.*MAMMO_TUI_GROUP_SECRET_FILE"):
            _open_manifest(cv_dir, request, 2)
    finally:
        monkeypatch.delenv(privacy.SECRET_FILE_ENV)
        privacy.clear_cache()


def test_a_cross_validation_never_takes_over_a_folder_that_is_not_one(tiny_demo, tmp_path):
    """`cv --run-name X` on an existing run (or sweep, or any folder) added cv.json and fold-*/ to
    it; `predict X` then used the CV ensemble and `train --resume X` was refused. Refused now, as
    train and sweep refuse, and the folder is left as it was."""
    from mammo_tui.errors import RunDirError

    run = tmp_path / "cv"  # the name cv_request asks for
    run.mkdir()
    (run / "events.jsonl").write_text("")
    (run / "summary.json").write_text("{}")
    with pytest.raises(RunDirError, match="already exists and is not a cross-validation"):
        run_cv(cv_request(tiny_demo, tmp_path), 2)
    assert sorted(p.name for p in run.iterdir()) == ["events.jsonl", "summary.json"]


def test_the_cv_macro_auc_averages_the_classes_every_fold_holds():
    """A fold without class A averages three one-vs-rest AUCs, the others four: the mean over folds
    mixed averages of different things (here 0.5625). It is the macro AUC over B, C, D in every fold."""
    from mammo_tui.stats import aggregate

    four = {"auc_macro": 0.625, "auc_per_class": [1.0, 0.5, 0.5, 0.5]}
    three = {"auc_macro": 0.5, "auc_per_class": [None, 0.5, 0.5, 0.5]}
    one_class = {"auc_macro": None, "auc_per_class": [None, None, None, None]}  # undefined: left out
    agg = aggregate([{"best_metrics": m} for m in (four, three, one_class)])["auc_macro"]
    assert agg["mean"] == pytest.approx(0.5) and agg["n"] == 2 and agg["classes"] == ["B", "C", "D"]
    older = aggregate([{"best_metrics": {"auc_macro": 0.625}}, {"best_metrics": {"auc_macro": 0.5}}])
    assert older["auc_macro"]["mean"] == pytest.approx(0.5625)  # metrics without per-class AUCs: as before
