"""Evaluate / predict with a real tiny run's best checkpoint, through the training decode path."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_tui import config
from mammo_tui.data.sources import DatasetSpec
from mammo_tui.engine.trainer import TrainRequest, train
from mammo_tui.errors import DatasetError, MammoError
from mammo_tui.evaluate import evaluate, load_run_model, predict
from mammo_tui.metrics import compute_metrics
from mammo_tui.rundir import read_summary

TINY = {"arch": "resnet18", "pretrained": False, "img_size": 32, "batch_size": 16, "augment": False,
        "epochs": 2, "max_batches_per_epoch": 2, "num_workers": 0, "early_stop_patience": 0}


@pytest.fixture(scope="module")
def run_dir(tiny_demo, tmp_path_factory):
    request = TrainRequest(config=config.resolve("demo", TINY), dataset=tiny_demo,
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
