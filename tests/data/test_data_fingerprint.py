"""fingerprint() on a small dataset whose every number is known."""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image

from mammo_tui.data.fingerprint import fingerprint
from mammo_tui.data.sources import DatasetSpec, scan_dataset


def write_png(path, rows: int, columns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((rows, columns), dtype=np.uint8)
    pixels[rows // 4 : 3 * rows // 4, : columns // 2] = 200
    Image.fromarray(pixels).save(path)


def test_fingerprint_of_a_known_folder_dataset(tmp_path, make_dicom):
    write_png(tmp_path / "A" / "a1.png", 40, 30)
    write_png(tmp_path / "A" / "a2.png", 60, 50)
    write_png(tmp_path / "B" / "b1.png", 20, 20)
    write_png(tmp_path / "B" / "tiny.png", 8, 40)  # tiny_image: removed
    picture = np.full((100, 80), 500, dtype=np.uint16)
    make_dicom(tmp_path / "C" / "c1.dcm", picture, patient_id="P1")
    make_dicom(tmp_path / "C" / "c2.dcm", picture, patient_id="P1")
    make_dicom(tmp_path / "C" / "c3.dcm", picture, "MONOCHROME1", patient_id="P2")
    report = scan_dataset(DatasetSpec(images=str(tmp_path)))
    fp = fingerprint(report)
    assert fp.n_images == 6
    assert fp.n_patients == 5  # a1, a2, b1 by stem; C: two patients
    assert fp.class_counts == [2, 1, 3, 0]
    assert math.isinf(fp.imbalance_ratio)
    assert (fp.width.min, fp.width.median, fp.width.max) == (20, 65.0, 80)
    assert (fp.height.min, fp.height.median, fp.height.max) == (20, 80.0, 100)
    assert fp.formats == {"DICOM": 3, "PNG": 3}
    assert fp.photometric == {"MONOCHROME2": 2, "L": 3, "MONOCHROME1": 1}
    assert fp.transfer_syntaxes == {"Explicit VR Little Endian": 3}
    assert fp.modalities == {"MG": 3}
    assert fp.problem_counts == {"tiny_image": 1, "empty_class": 1}
    assert (fp.rows_read, fp.rows_usable) == (7, 6)
    data = fp.to_dict()
    assert data["imbalance_ratio"] is None
    assert data["class_counts_by_name"] == {"A": 2, "B": 1, "C": 3, "D": 0}
    json.dumps(data, allow_nan=False)  # strictly JSON-safe


def test_imbalance_ratio_and_demo_fingerprint(demo_dataset):
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))
    fp = fingerprint(report)
    counts = report.class_counts()
    assert fp.class_counts == counts
    assert fp.imbalance_ratio == max(counts) / min(counts)
    assert fp.to_dict()["imbalance_ratio"] == fp.imbalance_ratio
    assert fp.n_patients == len({r.group for r in report.records})
    assert set(fp.photometric) == {"MONOCHROME1", "MONOCHROME2"}
    assert set(fp.transfer_syntaxes) == {"Explicit VR Little Endian", "JPEG 2000 Image Compression (Lossless Only)"}
    assert fp.modalities == {"MG": fp.n_images}
