"""A synthetic, mammogram-like DICOM dataset in the reference layout, for the demo and the tests.

Each image is a breast-shaped region of fat with bright fibroglandular texture; the density class
sets the fraction of the breast that is fibroglandular (A ~0.10, B ~0.30, C ~0.55, D ~0.80, with
patient and image jitter), so a small CNN at 64 px can learn it, but not perfectly. Class counts
follow the reference dataset (A 40 : B 363 : C 849 : D 335) scaled by `size`.

The files exercise the real decoding paths: 12-bit data in 16-bit words, some MONOCHROME1
(inverted), some JPEG 2000 lossless, some with a stored window centre/width.
Everything is derived from `seed`, so the same seed writes byte-identical files.

`difficulty` (default 0: the easy demo above, byte-identical to what it always was) makes the task
look like real readers' density calls, where neighbouring classes overlap. At difficulty d:
- class means of the fibroglandular fraction move MEAN_SHRINK * d of the way toward their average
  (d = 1: A 0.27, B 0.37, C 0.49, D 0.62 instead of 0.10 / 0.30 / 0.55 / 0.80);
- the jitter between patients and between the views of one exam grows by (1 + JITTER_GROWTH * d);
- readers disagree at the boundaries: with probability READER_DISAGREEMENT[boundary] * d a
  patient's tissue is drawn from the *adjacent* class while the label stays, i.e. the label is the
  neighbour's call for what the tissue shows. The B/C boundary is the most disputed (0.25 * d each
  way), A/B and C/D less (0.10 * d). Counts per class stay at the reference proportions: the
  evidence behind a label gets noisier, the imbalance does not change.
The disagreement draws come from a second generator seeded from (seed, difficulty); the main
generator draws exactly the same numbers as at difficulty 0, so the exams, labels, views, breast
shapes and file formats are the same at every difficulty and only the densities differ. Every
difficulty is deterministic for a given seed.
How hard, on the size-0.5 set at 64 px: a threshold halfway between the class means of the bright
(dense) share of the breast gets 96 % of the labels right at d = 0, 56 % at d = 0.5 and 35 % at
d = 1; an unbalanced logistic regression on brightness features calls 92 % of the images C at d = 1 (59 %
at d = 0): an unbalanced model drifts to the majority class, as in the reference.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES

REFERENCE_CLASS_COUNTS = (40, 363, 849, 335)
FIBROGLANDULAR_FRACTION = (0.10, 0.30, 0.55, 0.80)
PATIENT_JITTER = 0.05  # std of a patient's density around the class mean
IMAGE_JITTER = 0.03  # std between the views of one exam
# difficulty (see the module docstring): how far each knob moves at difficulty 1
MEAN_SHRINK = 0.5  # class means move this share of the way to their average
JITTER_GROWTH = 1.25  # patient and view jitter x (1 + this * d)
# probability (x d) that a patient's tissue comes from the neighbouring class: A/B, B/C, C/D
READER_DISAGREEMENT = (0.10, 0.25, 0.10)
MIN_IMAGES_PER_CLASS = 4  # two patients with two views each, whatever the size
IMAGE_SHAPES = ((256, 208), (272, 224))  # rows, columns
VIEWS = ("L-CC", "L-MLO", "R-CC", "R-MLO")
MAX_STORED = 4095  # 12 bits stored in 16-bit words
P_MONOCHROME1, P_JPEG2000, P_WINDOW = 0.2, 0.25, 0.3
DICOM_DIRNAME = "dicom"
LABELS_FILENAME = "labels.csv"
_MARKER = ".mammo-tui-demo"
_DIFFICULTY_STREAM = 0xD1FF
_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def demo_class_counts(size: float = 0.5) -> list[int]:
    """Images per class for a given size (1.0 = the reference's 1587 images)."""
    return [max(MIN_IMAGES_PER_CLASS, round(count * size)) for count in REFERENCE_CLASS_COUNTS]


def demo_paths(csv_path: str | Path) -> tuple[Path, Path]:
    """(label CSV, DICOM root) of a demo dataset, from the CSV path make_demo_dataset returned."""
    csv_path = Path(csv_path)
    return csv_path, csv_path.parent / DICOM_DIRNAME


@dataclass
class _Exam:
    accession: str
    patient: str
    label: int
    n_images: int
    density: float  # the patient's fibroglandular fraction


def class_means(difficulty: float = 0.0) -> list[float]:
    """The class means of the fibroglandular fraction at a difficulty (0: FIBROGLANDULAR_FRACTION)."""
    if difficulty == 0:
        return list(FIBROGLANDULAR_FRACTION)
    centre = sum(FIBROGLANDULAR_FRACTION) / len(FIBROGLANDULAR_FRACTION)
    shrink = min(1.0, MEAN_SHRINK * difficulty)
    return [m + shrink * (centre - m) for m in FIBROGLANDULAR_FRACTION]


def _tissue_class(label: int, difficulty: float, noise: np.random.Generator | None) -> int:
    """The class whose tissue a patient labelled `label` has: itself, or a neighbour (readers disagree)."""
    if noise is None:
        return label
    down = READER_DISAGREEMENT[label - 1] * difficulty if label > 0 else 0.0
    up = READER_DISAGREEMENT[label] * difficulty if label < len(READER_DISAGREEMENT) else 0.0
    total = down + up
    if total > 1.0:  # very high difficulty: keep it a probability
        down, up = down / total, up / total
    u = float(noise.random())
    if u < down:
        return label - 1
    if u < down + up:
        return label + 1
    return label


def _plan_exams(counts: list[int], rng: np.random.Generator, difficulty: float = 0.0,
                noise: np.random.Generator | None = None) -> list[_Exam]:
    means = class_means(difficulty)
    jitter = PATIENT_JITTER * (1.0 + JITTER_GROWTH * difficulty)
    exams: list[_Exam] = []
    patient_number = 0
    for label, count in enumerate(counts):
        remaining, class_exams = count, 0
        previous_patient: tuple[str, float, int] | None = None  # id, density, exams so far
        while remaining > 0:
            n = int(rng.integers(2, 5))
            if class_exams < 2:  # at least two exams (two patients) per class
                n = min(n, max(1, remaining - 2))
            n = min(n, remaining)
            if remaining - n == 1:  # no single-image exam at the end
                n = n + 1 if n < 4 else n - 1
            # some patients come back for a second exam (same density): groups with 2 accessions
            if class_exams >= 2 and previous_patient and previous_patient[2] == 1 and rng.random() < 0.3:
                patient, density = previous_patient[0], previous_patient[1]
                previous_patient = (patient, density, 2)
            else:
                patient_number += 1
                patient = f"DEMO-P{patient_number:05d}"
                tissue = _tissue_class(label, difficulty, noise)
                density = float(rng.normal(means[tissue], jitter))
                previous_patient = (patient, density, 1)
            exams.append(_Exam("", patient, label, n, density))
            remaining -= n
            class_exams += 1
    order = rng.permutation(len(exams))  # interleave classes in the CSV
    exams = [exams[i] for i in order]
    for number, exam in enumerate(exams, start=1):
        exam.accession = f"DEMO{number:05d}"
    return exams


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    rows, columns = shape
    coarse = rng.standard_normal((rows // cell + 2, columns // cell + 2)).astype(np.float32)
    field = cv2.resize(coarse, (columns, rows), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(field, (0, 0), 2.0)


def synth_mammogram(rng: np.random.Generator, shape: tuple[int, int], fraction: float,
                    chest_wall_left: bool) -> np.ndarray:
    """float32 image in [0, 1]: dark background, grey fat, bright fibroglandular tissue."""
    rows, columns = shape
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    depth = xx if chest_wall_left else (columns - 1 - xx)
    a = columns * rng.uniform(0.72, 0.92)
    b = rows * rng.uniform(0.38, 0.47)
    centre = rows * rng.uniform(0.45, 0.55)
    radius = (depth / a) ** 2 + ((yy - centre) / b) ** 2
    breast = radius <= 1.0
    inner = np.sqrt(np.clip(1.0 - radius, 0.0, 1.0))  # thicker (brighter) away from the skin line
    # glandular tissue: textured blobs, more likely deep in the breast than at the skin
    field = _smooth_noise(rng, shape, cell=12) + 0.6 * _smooth_noise(rng, shape, cell=5) + 1.2 * inner
    threshold = np.quantile(field[breast], 1.0 - float(np.clip(fraction, 0.03, 0.95)))
    dense = cv2.GaussianBlur(((field > threshold) & breast).astype(np.float32), (0, 0), 1.2)
    fat = 0.25 + 0.15 * inner
    image = np.where(breast, fat + 0.5 * rng.uniform(0.9, 1.1) * dense, 0.03)
    image += rng.normal(0.0, 0.012, shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _dicom(exam: _Exam, view: str, pixels: np.ndarray, photometric: str, window: tuple[float, float] | None,
           seed: int) -> Dataset:
    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=["mammo-tui-demo", str(seed), *parts])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _MAMMOGRAPHY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid(exam.accession, view)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(exam.accession)
    ds.SeriesInstanceUID = uid(exam.accession, "series")
    ds.PatientID = exam.patient  # synthetic; the scanner only keeps a digest of it
    ds.AccessionNumber = exam.accession
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality, ds.ViewPosition = view.split("-")
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:.1f}", f"{window[1]:.1f}"
    ds.PixelData = pixels.tobytes()
    return ds


def _prepare_out_dir(out_dir: Path) -> None:
    dicom_dir = out_dir / DICOM_DIRNAME
    if dicom_dir.exists():
        if not (out_dir / _MARKER).exists():
            raise DatasetError(f"{dicom_dir} exists and was not written by the demo generator; choose an "
                               "empty folder for the demo dataset.")
        shutil.rmtree(dicom_dir)  # stale views of an earlier size would otherwise be picked up
    dicom_dir.mkdir(parents=True)
    (out_dir / _MARKER).write_text("written by mammo_tui.data.demo.make_demo_dataset\n")


def make_demo_dataset(out_dir: str | os.PathLike, size: float = 0.5, seed: int = 0,
                      difficulty: float = 0.0) -> Path:
    """Write labels.csv + dicom/<accession>/<view>.dcm under out_dir; return the CSV path.

    difficulty: 0 = the easy demo; higher = overlapping classes and reader disagreement (see the
    module docstring); 1 is hard.
    """
    if size <= 0:
        raise DatasetError(f"Demo dataset size must be > 0 (1.0 = 1587 images); got {size}.")
    if not (difficulty >= 0 and np.isfinite(difficulty)):
        raise DatasetError(f"Demo dataset difficulty must be a number >= 0 (0 = easy, 1 = hard); got {difficulty}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _prepare_out_dir(out_dir)
    rng = np.random.default_rng(seed)
    # a second generator for the difficulty draws: the main one stays in step with difficulty 0
    noise = np.random.default_rng([seed, _DIFFICULTY_STREAM, round(difficulty * 1000)]) if difficulty > 0 else None
    exams = _plan_exams(demo_class_counts(size), rng, difficulty, noise)
    image_jitter = IMAGE_JITTER * (1.0 + JITTER_GROWTH * difficulty)
    for exam in exams:
        folder = out_dir / DICOM_DIRNAME / exam.accession
        folder.mkdir()
        shape = IMAGE_SHAPES[int(rng.integers(len(IMAGE_SHAPES)))]
        for view in VIEWS[: exam.n_images]:
            fraction = exam.density + float(rng.normal(0.0, image_jitter))
            image = synth_mammogram(rng, shape, fraction, chest_wall_left=view.startswith("L"))
            stored = np.rint(image * (MAX_STORED - 100) + 50).astype(np.uint16)
            window = None
            if rng.random() < P_WINDOW:
                # a display window over the breast (background clipped to black), as a modality stores
                low, high = np.percentile(stored[image > 0.2], [1.0, 99.5])
                window = ((low + high) / 2, (high - low) * 1.1)
            photometric = "MONOCHROME2"
            if rng.random() < P_MONOCHROME1:
                photometric = "MONOCHROME1"  # same picture, stored inverted
                stored = (MAX_STORED - stored).astype(np.uint16)
                if window is not None:
                    window = (MAX_STORED - window[0], window[1])
            ds = _dicom(exam, view, stored, photometric, window, seed)
            if rng.random() < P_JPEG2000:
                ds.compress(JPEG2000Lossless, generate_instance_uid=False)  # keep UIDs seed-derived
            ds.save_as(folder / f"{view}.dcm", enforce_file_format=True)
    csv_path = out_dir / LABELS_FILENAME
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["AccessionNumber", "Classification"])
        writer.writerows([exam.accession, CLASS_NAMES[exam.label]] for exam in exams)
    return csv_path
