"""Evaluate / predict with a real tiny run's best checkpoint, through the training decode path."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_tui.data.sources import DatasetSpec
from mammo_tui.app import TrainRequest, train
from mammo_tui.errors import DatasetError, MammoError
from mammo_tui.evaluate import evaluate, load_run_model, predict
from mammo_tui.metrics import compute_metrics
from mammo_tui.rundir import read_summary

@pytest.fixture(scope="module")
def run_dir(tiny_demo, tmp_path_factory, tiny_config):
    request = TrainRequest(config=tiny_config(epochs=2), dataset=tiny_demo,
                           outdir=str(tmp_path_factory.mktemp("runs")), run_name="tiny")
    return train(request).run_dir


@pytest.fixture(scope="module")
def val_split(run_dir):
    """(paths, labels 0..3) of the run's validation images, from splits.csv."""
    with open(run_dir / "splits.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "val"]
    return [row["path"] for row in rows], ["ABCD".index(row["label"]) for row in rows]


def _val_spec(val_paths, tiny_demo, folder: Path, extra_rows=()):
    """A reference-layout CSV listing the validation accessions (a patient's exam is never split)."""
    accessions = dict.fromkeys(Path(path).parent.name for path in val_paths)  # ordered, unique
    with open(tiny_demo.csv, newline="") as handle:
        letter_of = {row["AccessionNumber"]: row["Classification"] for row in csv.DictReader(handle)}
    csv_path = folder / "val.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["AccessionNumber", "Classification"])
        writer.writerows([accession, letter_of[accession]] for accession in accessions)
        writer.writerows(extra_rows)
    return DatasetSpec(csv=str(csv_path), dicom_root=tiny_demo.dicom_root)


@pytest.mark.slow
def test_load_run_model_needs_no_flags(run_dir):
    model, checkpoint = load_run_model(run_dir)
    assert not model.training
    assert checkpoint["class_names"] == ["A", "B", "C", "D"] and checkpoint["img_size"] == 32
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_evaluate_on_the_validation_split_reproduces_the_best_epochs_metrics(run_dir, val_split, tiny_demo, tmp_path):
    paths, labels = val_split
    result = evaluate(run_dir, _val_spec(paths, tiny_demo, tmp_path), name="val")
    best = read_summary(run_dir)["best_metrics"]
    assert result["n"] == len(paths) == best["n"]
    assert result["confusion_matrix"] == best["confusion_matrix"]
    for key, value in best.items():
        if key != "confusion_matrix":  # compared exactly above; approx takes flat lists only
            assert result[key] == pytest.approx(value, abs=1e-6), key
    assert result["overlap"] == {"train": 0, "val": len(paths)}
    assert any("validation split" in w for w in result["warnings"])
    saved = json.loads((run_dir / "eval-val.json").read_text())
    assert saved["confusion_matrix"] == result["confusion_matrix"] and saved["output"] == str(run_dir / "eval-val.json")


def test_predictions_agree_with_evaluate_and_an_independent_compute_metrics(run_dir, val_split, tiny_demo, tmp_path):
    paths, labels = val_split
    result = evaluate(run_dir, _val_spec(paths, tiny_demo, tmp_path), name="val-again")
    out = predict(run_dir, paths, tmp_path / "pred.csv")
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    probs = np.array([[float(row[f"prob_{c}"]) for c in "ABCD"] for row in rows])
    preds = ["ABCD".index(row["prediction"]) for row in rows]
    independent = compute_metrics(labels, preds, probs)
    assert independent["confusion_matrix"] == result["confusion_matrix"]
    assert independent["kappa_quadratic"] == pytest.approx(result["kappa_quadratic"], abs=1e-6)
    assert independent["auc_macro"] == pytest.approx(result["auc_macro"], abs=1e-4)  # CSV keeps 6 digits


def _predicted(run_dir, paths, out):
    with open(predict(run_dir, paths, out), newline="") as handle:
        return np.array([[float(row[f"prob_{c}"]) for c in "ABCD"] for row in csv.DictReader(handle)])


def test_eval_and_predict_preprocess_as_the_checkpoint_says(run_dir, val_split, tmp_path):
    import shutil

    from mammo_tui.data.cache import PreprocessCache
    from mammo_tui.evaluate import predict_probabilities

    model, checkpoint = load_run_model(run_dir)
    assert checkpoint["crop_breast"] is True and checkpoint["config"]["crop_breast"] is True  # the default

    def probs_with(crop: bool) -> np.ndarray:
        cache = PreprocessCache(32, root=tmp_path / "cache", crop_breast=crop)
        return predict_probabilities(model, checkpoint, np.stack([cache.load(p) for p in paths]))

    paths = val_split[0][:8]
    got = _predicted(run_dir, paths, tmp_path / "crop.csv")
    np.testing.assert_allclose(got, probs_with(True), atol=1e-5)
    assert not np.allclose(got, probs_with(False), atol=1e-4)  # fails if predict ignores crop_breast
    # a checkpoint from before crop_breast existed trained on uncropped images
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    path = old / "checkpoints" / "best.pt"
    legacy = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "crop_breast"}
    torch.save(legacy, path)
    np.testing.assert_allclose(_predicted(old, paths, tmp_path / "old.csv"), probs_with(False), atol=1e-5)


def test_evaluate_on_the_whole_dataset_counts_every_image_and_flags_the_overlap(run_dir, tiny_demo):
    spec = DatasetSpec(csv=str(tiny_demo.csv), dicom_root=str(tiny_demo.dicom_root))
    result = evaluate(run_dir, spec)
    assert result["n"] == result["validation"]["n_images"] == sum(map(sum, result["confusion_matrix"]))
    assert result["overlap"]["train"] + result["overlap"]["val"] == result["n"]
    assert any("training split" in w for w in result["warnings"])
    assert Path(result["output"]).is_file() and Path(result["output"]).name.startswith("eval-")


def test_bad_rows_stop_the_evaluation_unless_skipped(run_dir, val_split, tiny_demo, tmp_path):
    spec = _val_spec(val_split[0], tiny_demo, tmp_path, extra_rows=[["NO-SUCH-EXAM", "B"]])
    with pytest.raises(DatasetError, match="--skip-bad-rows"):
        evaluate(run_dir, spec)
    result = evaluate(run_dir, spec, skip_bad_rows=True, name="skipped")
    assert result["n"] == len(val_split[0])
    assert sum(result["validation"]["problem_counts"].values()) == 1


def test_outputs_never_replace_an_input_a_run_file_or_an_earlier_output(run_dir, val_split, tmp_path):
    """predict --out over its own input turned the mammogram into CSV text (exit 0); report --out
    RUN/checkpoints/best.pt destroyed the model; a second predict replaced the first's CSV."""
    import shutil

    from mammo_tui.report import write_report

    image = tmp_path / "scan.dcm"
    shutil.copy(val_split[0][0], image)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n")
    best = run_dir / "checkpoints" / "best.pt"
    before = {path: path.read_bytes() for path in (image, labels, best)}
    with pytest.raises(MammoError, match="a file this command reads"):
        predict(run_dir, [str(image)], image)
    with pytest.raises(MammoError, match="exists; add --force"):
        predict(run_dir, [str(image)], labels)
    with pytest.raises(MammoError, match="one of a run's own files"):
        predict(run_dir, [str(image)], run_dir / "summary.json", force=True)
    with pytest.raises(MammoError, match="one of a run's own files"):
        write_report(run_dir, out=best, force=True)
    assert {path: path.read_bytes() for path in before} == before
    assert predict(run_dir, [str(image)], labels, force=True) == labels  # --force: the user means it

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    first, second = predict(copy, [str(image)]), predict(copy, [str(image)])
    assert (first.name, second.name) == ("predictions.csv", "predictions-2.csv")


def test_predict_writes_one_row_per_path_and_names_every_unreadable_file(run_dir, val_split, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    paths = [val_split[0][0], str(junk), str(tmp_path / "missing.dcm"), val_split[0][1], str(tmp_path)]
    out = predict(run_dir, paths, tmp_path / "predictions.csv")
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == paths
    for row in (rows[0], rows[3]):
        probs = [float(row[f"prob_{c}"]) for c in "ABCD"]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4) and row["error"] == ""
        assert row["prediction"] == "ABCD"[int(np.argmax(probs))]
    assert "not a DICOM, PNG or JPEG" in rows[1]["error"] and rows[1]["prediction"] == ""
    assert "file not found" in rows[2]["error"]
    assert "is a folder" in rows[4]["error"]


def test_clear_errors_without_a_checkpoint_or_without_images(run_dir, tmp_path):
    with pytest.raises(MammoError, match="no checkpoints/best.pt"):
        load_run_model(tmp_path)
    with pytest.raises(MammoError, match="no such run directory"):
        predict(tmp_path / "nope", ["x.dcm"], tmp_path / "p.csv")
    with pytest.raises(MammoError, match="no images given"):
        predict(run_dir, [], tmp_path / "p.csv")


# -- a cross-validation directory: the ensemble of its folds -------------------------------------


@pytest.fixture(scope="module")
def cv_dir(tiny_demo, tmp_path_factory):
    from mammo_tui.drivers.cv import run_cv
    from tui_helpers import tiny_config

    request = TrainRequest(config=tiny_config(), dataset=tiny_demo, outdir=str(tmp_path_factory.mktemp("cvs")),
                           run_name="cv", preset="test")
    return run_cv(request, 2).run_dir


def _whole(tiny_demo):
    return DatasetSpec(csv=str(tiny_demo.csv), dicom_root=str(tiny_demo.dicom_root))


def _fold_probabilities(fold_dir, records):
    """A fold model's probabilities through the single-run path, independently of evaluate()."""
    from mammo_tui.data.cache import PreprocessCache, load_images
    from mammo_tui.evaluate import predict_probabilities

    model, checkpoint = load_run_model(fold_dir)
    cache = PreprocessCache(checkpoint["img_size"], crop_breast=checkpoint.get("crop_breast", False))
    return predict_probabilities(model, checkpoint, load_images(records, cache))


def _read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_cv_evaluate_is_the_mean_of_the_fold_models_and_reports_each_fold(cv_dir, tiny_demo):
    from mammo_tui.data.sources import scan_dataset

    spec = _whole(tiny_demo)
    result = evaluate(cv_dir, spec, name="all")
    folds = [cv_dir / "fold-1", cv_dir / "fold-2"]
    assert result["ensemble"] is True and result["folds_used"] == [1, 2]

    # the ensemble: compute_metrics of the mean of the two models' probabilities, computed here
    records = scan_dataset(spec, check_images=True).records
    labels = [record.label for record in records]
    each = [_fold_probabilities(fold, records) for fold in folds]
    assert not np.allclose(each[0], each[1])  # two different models, or the test proves nothing
    mean = np.mean(each, axis=0)
    expected = compute_metrics(labels, mean.argmax(axis=1), mean)
    assert result["confusion_matrix"] == expected["confusion_matrix"] and result["n"] == len(records)
    for key in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9), key

    # each fold alone: what evaluating that fold's directory on its own gives
    alone = [evaluate(fold, spec, name="all") for fold in folds]
    for row, single, fold in zip(result["per_fold"], alone, (1, 2)):
        assert row["fold"] == fold and row["checkpoint_epoch"] == single["checkpoint_epoch"]
        for key in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy"):
            assert row[key] == pytest.approx(single[key], abs=1e-9), (fold, key)
        assert row["recall_per_class"] == pytest.approx(single["recall_per_class"])
    for key in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro"):
        assert result["aggregate"][key]["mean"] == pytest.approx(np.mean([s[key] for s in alone]))
        assert result["aggregate"][key]["n"] == 2

    # every image trained at least one fold model
    assert result["overlap"]["train"] == result["n"]
    assert any("at least one fold's training split" in w for w in result["warnings"])
    saved = json.loads((cv_dir / "eval-all.json").read_text())
    assert saved["per_fold"] == result["per_fold"] and saved["output"] == str(cv_dir / "eval-all.json")


@pytest.mark.slow
def test_cv_predict_writes_the_average_of_the_fold_models(cv_dir, val_split, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    paths = [*val_split[0][:3], str(junk)]
    rows = _read_rows(predict(cv_dir, paths, tmp_path / "cv.csv"))
    fold_rows = [_read_rows(predict(cv_dir / f"fold-{i}", paths, tmp_path / f"f{i}.csv")) for i in (1, 2)]
    assert list(rows[0]) == ["path", "prediction", "prob_A", "prob_B", "prob_C", "prob_D", "folds", "error"]
    assert "folds" not in fold_rows[0][0]  # a plain run's columns are unchanged
    for index in range(3):
        probs = [float(rows[index][f"prob_{c}"]) for c in "ABCD"]
        mean = np.mean([[float(f[index][f"prob_{c}"]) for c in "ABCD"] for f in fold_rows], axis=0)
        assert np.allclose(probs, mean, atol=2e-6)  # the CSV keeps 6 digits
        assert rows[index]["prediction"] == "ABCD"[int(np.argmax(probs))] and rows[index]["folds"] == "2"
    assert "not a DICOM, PNG or JPEG" in rows[3]["error"] and rows[3]["prediction"] == rows[3]["folds"] == ""


@pytest.mark.slow
def test_cv_fold_without_a_checkpoint_is_left_out_with_a_warning(cv_dir, tiny_demo, val_split, tmp_path):
    import shutil

    copy = Path(shutil.copytree(cv_dir, tmp_path / "cv"))
    (copy / "fold-2" / "checkpoints" / "best.pt").unlink()
    result = evaluate(copy, _whole(tiny_demo), name="one")
    alone = evaluate(copy / "fold-1", _whole(tiny_demo), name="one")
    assert result["folds_used"] == [1] and len(result["per_fold"]) == 1
    assert any("fold-2" in w and "left out" in w for w in result["warnings"])
    assert result["confusion_matrix"] == alone["confusion_matrix"]  # an ensemble of one is that fold
    warnings = []
    rows = _read_rows(predict(copy, val_split[0][:1], tmp_path / "p.csv", warn=warnings.append))
    assert any("fold-2" in w for w in warnings) and rows[0]["folds"] == "1"


def test_cv_without_any_checkpoint_says_how_to_continue(cv_dir, tiny_demo, tmp_path):
    import shutil

    from mammo_tui.errors import RunDirError

    copy = shutil.copytree(cv_dir, tmp_path / "cv", ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(RunDirError, match=r"no finished fold.*mammo-tui cv --resume"):
        evaluate(copy, _whole(tiny_demo))
    with pytest.raises(RunDirError, match="no finished fold"):
        predict(copy, ["x.dcm"], tmp_path / "p.csv")


def test_cv_folds_with_different_image_sizes_are_refused(cv_dir, tiny_demo, tmp_path):
    import shutil

    copy = Path(shutil.copytree(cv_dir, tmp_path / "cv"))
    path = copy / "fold-2" / "checkpoints" / "best.pt"
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "img_size": 64}, path)
    with pytest.raises(MammoError, match="disagree on img_size"):
        evaluate(copy, _whole(tiny_demo))


@pytest.mark.slow
def test_cli_eval_and_predict_on_a_cv_print_folds_spread_and_ensemble(cv_dir, tiny_demo, val_split):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "eval", str(cv_dir), "--csv", str(tiny_demo.csv),
                           "--dicom-root", str(tiny_demo.dicom_root), "--name", "cli"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["fold 1", "fold 2"], proc.stdout
    assert all("kappa_q" in line and "bal_acc_adj" in line and "auc" in line for line in lines[:2])
    assert lines[2].startswith("mean ± std over 2 folds: kappa_q ")
    assert re.match(r"ensemble of 2 folds: \d+ images: kappa_q \S+ bal_acc_adj \S+ auc \S+ pred ", lines[3])
    assert "at least one fold's training split" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "mammo_tui", "predict", str(cv_dir), val_split[0][0],
                           "--out", str(cv_dir / "cli.csv")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "(ensemble of 2 folds)" in proc.stdout


def test_cv_evaluate_on_a_set_without_a_class_leaves_it_out_of_the_recall_means(tmp_path):
    """Evaluating a CV on a set with no class A images: A's recall is 0 by convention in every fold,
    which is no measurement; the mean over folds says n/a, not 0.000 ± 0.000."""
    from PIL import Image

    from mammo_tui.rundir import CV_FILE
    from mammo_tui.stats import format_recall_stat
    from mammo_tui.engine.checkpoint import save_checkpoint
    from mammo_tui.engine.models import build_model

    cv = tmp_path / "cv"
    for fold in (1, 2):
        torch.manual_seed(fold)
        model = build_model("resnet18", 4, pretrained=False)
        save_checkpoint(cv / f"fold-{fold}" / "checkpoints" / "best.pt",
                        {"model": model.state_dict(), "arch": "resnet18", "class_names": list("ABCD"),
                         "img_size": 32, "in_channels": 1, "epoch": 1,
                         "config": {"arch": "resnet18", "img_size": 32}})
    (cv / CV_FILE).write_text(json.dumps({"folds": 2, "status": "finished", "config": {}}))
    rng = np.random.default_rng(0)
    for letter in "BCD":
        (tmp_path / "set" / letter).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "set" / letter / f"{i}.png")
    result = evaluate(cv, DatasetSpec(images=str(tmp_path / "set")), name="no-a")
    assert result["true_counts"] == [0, 3, 3, 3]
    assert all(row["true_counts"] == [0, 3, 3, 3] for row in result["per_fold"])
    recall = result["aggregate"]["recall_per_class"]
    assert recall["A"]["mean"] is None and recall["A"]["n"] == 0 and recall["A"]["folds"] == 2
    assert format_recall_stat(recall["A"]) == "n/a (in no fold)"
    assert recall["B"]["n"] == 2 and recall["B"]["mean"] == pytest.approx(
        np.mean([row["recall_per_class"][1] for row in result["per_fold"]]))
