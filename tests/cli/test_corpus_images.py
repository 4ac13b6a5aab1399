"""The bad-image corpus through the real CLI: every image whose pixels training could not use (NaN or
infinite pixels, several frames, an unknown transfer syntax, a decompression bomb, garbage pixel
data, an unknown photometric) is a problem named at scan time, by plan, train, eval and predict
alike; no traceback, and what plan calls usable trains."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from corpus import FAST, assert_clean, good_rows, mammo, write_csv

# file name -> the problem kind the scan must report for it
BAD = {
    "slope_nan.dcm": "not_finite",
    "intercept_inf.dcm": "not_finite",
    "frames.dcm": "multi_frame",
    "syntax.dcm": "unsupported_compression",
    "photometric.dcm": "unreadable",
    "j2k_garbage.dcm": "unreadable",
    "bomb.png": "too_large",
    "idat_garbage.png": "unreadable",
}  # at most 3 of a kind: the summary names 3 examples per kind (a truncated PNG: test_data_sources)


def make_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", pixel_data: bool = True,
               **attributes) -> Path:
    """conftest's make_dicom, usable from a module-scoped fixture: 12-bit MG, Explicit VR LE."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "MG", photometric, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if pixel_data and "PixelData" not in ds:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def picture(level: int, seed: str) -> np.ndarray:
    rng = np.random.default_rng([level, zlib.crc32(seed.encode())])
    return np.clip(rng.normal(level, 20, (40, 32)), 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(path: Path, width: int, height: int, idat: bytes) -> None:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
                     + png_chunk(b"IEND", b""))


def retag(path: Path, **meta) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in meta.items():
        setattr(ds.file_meta, keyword, value)
    ds.save_as(path)


def write_bad_images(root: Path) -> None:
    pixels = picture(120, "dicom").astype(np.uint16) * 16
    make_dicom(root / "slope_nan.dcm", pixels, RescaleSlope="nan", RescaleIntercept="0")
    make_dicom(root / "intercept_inf.dcm", pixels, RescaleSlope="1", RescaleIntercept="inf")
    make_dicom(root / "frames.dcm", pixels, NumberOfFrames=3, PixelData=np.stack([pixels] * 3).tobytes())
    make_dicom(root / "syntax.dcm", pixels)
    retag(root / "syntax.dcm", TransferSyntaxUID="1.2.3.4.5.6.7")
    make_dicom(root / "photometric.dcm", pixels, photometric="WEIRD")
    make_dicom(root / "j2k_garbage.dcm", pixels, pixel_data=False)
    ds = pydicom.dcmread(root / "j2k_garbage.dcm")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 2])  # a J2K marker, then garbage
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.save_as(root / "j2k_garbage.dcm")
    handmade_png(root / "bomb.png", 20000, 20000, zlib.compress(bytes(100)))
    handmade_png(root / "idat_garbage.png", 40, 32, bytes(range(256)) * 2)


def make_dataset(root: Path) -> Path:
    """24 good PNGs (6 per class, 3 patients per class) + one row per BAD image."""
    rows = good_rows(root)
    write_bad_images(root)
    rows += [f"{name},B,bad{i}" for i, name in enumerate(BAD)]
    return write_csv(root, rows)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("bad-images"))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A run trained on the dataset with --skip-bad-rows."""
    runs = tmp_path_factory.mktemp("runs")
    proc = mammo("train", "--no-ui", "--csv", dataset, "--skip-bad-rows", "--outdir", runs, "--run-name", "skip",
                 *FAST, cwd=runs)
    assert_clean(proc, (0, 3))
    return runs / "skip"


def test_plan_names_every_bad_image_with_its_kind(dataset):
    # plan says what train does with the same flags: refuse (exit 2) unless --skip-bad-rows
    out = assert_clean(mammo("plan", dataset, cwd=dataset.parent), 2, *BAD, *set(BAD.values()), "--skip-bad-rows")
    assert "Problems: none" not in out and "Rows read: 32, rows usable: 24" in out
    assert_clean(mammo("plan", dataset, "--skip-bad-rows", cwd=dataset.parent), 0, *BAD)


@pytest.mark.slow
def test_train_without_skip_stops_naming_every_bad_image(dataset, tmp_path):
    proc = mammo("train", "--no-ui", "--csv", dataset, "--outdir", tmp_path / "runs", *FAST, cwd=tmp_path)
    assert_clean(proc, 2, *BAD, *set(BAD.values()), "--skip-bad-rows")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_skip_bad_rows_trains_and_the_report_adds_up(trained):
    report = json.loads((trained / "dataset.json").read_text())["report"]
    assert (report["rows_read"], report["rows_usable"], report["n_images"]) == (32, 24, 24)
    removed = [p for p in report["problems"] if p["kind"] not in ("empty_class", "duplicate_content")]
    assert report["rows_read"] == report["rows_usable"] + len(removed)
    assert {Path(p["path"]).name: p["kind"] for p in removed} == BAD


@pytest.mark.slow
def test_predict_names_bad_images_and_never_writes_nan(trained, dataset, tmp_path):
    images = [dataset.parent / "A0.png", *(dataset.parent / name for name in BAD)]
    proc = mammo("predict", trained, *images, "--out", tmp_path / "p.csv", cwd=tmp_path)
    out = assert_clean(proc, 0, *BAD)
    assert f"{len(BAD)} of {len(images)} images could not be read" in out
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert rows[0]["error"] == "" and rows[0]["prediction"]
    for row in rows[1:]:
        kind = BAD[Path(row["path"]).name]
        assert row["error"].startswith(kind + ":") and row["prediction"] == "" and row["prob_A"] == ""
    probabilities = [float(v) for row in rows for k, v in row.items() if k.startswith("prob_") and v]
    assert len(probabilities) == 4 and np.isfinite(probabilities).all()


@pytest.mark.slow
def test_eval_stops_on_bad_images_or_skips_them_with_a_finite_auc(trained, dataset, tmp_path):
    assert_clean(mammo("eval", trained, "--csv", dataset, cwd=tmp_path), 2, *BAD, "--skip-bad-rows")
    out = assert_clean(mammo("eval", trained, "--csv", dataset, "--skip-bad-rows", "--name", "skip", cwd=tmp_path),
                       0, "24 images")
    result = json.loads((trained / "eval-skip.json").read_text())
    assert result["n"] == 24 and result["auc_macro"] is not None, out
    assert result["validation"]["problem_counts"]["not_finite"] == 2


def test_an_image_that_turns_bad_after_the_scan_fails_the_run_naming_it(tmp_path, monkeypatch):
    """The scan passed, then the file changed: training's own decode stops with exit 2, naming it."""
    from mammo_tui import config
    from mammo_tui.data import sources
    from mammo_tui.data.sources import DatasetSpec
    from mammo_tui.app import TrainRequest, train

    csv_path = make_dataset(tmp_path / "data")
    good = csv_path.read_text().splitlines()[:25]  # the 24 good rows only
    csv_path.write_text("\n".join(good) + "\n")
    victim = tmp_path / "data" / "B3.png"
    real_scan = sources.scan_dataset

    def scan_then_break(*args, **kwargs):
        report = real_scan(*args, **kwargs)
        make_dicom(victim, picture(90, "v").astype(np.uint16), RescaleSlope="nan")  # DICOM bytes, .png name
        return report

    monkeypatch.setattr(sources, "scan_dataset", scan_then_break)
    cfg = config.resolve("demo", {"arch": "resnet18", "pretrained": False, "img_size": 32, "epochs": 1,
                                  "augment": False, "num_workers": 0})
    events = []
    result = train(TrainRequest(config=cfg, dataset=DatasetSpec(csv=str(csv_path)), outdir=str(tmp_path / "runs")),
                   events.append)
    assert result.exit_code == 2
    (failed,) = [e for e in events if e.type == "failed"]
    assert str(victim) in failed.error and "not_finite" in failed.error and failed.exit_code == 2
