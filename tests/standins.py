"""Tiny, faithful stand-ins of six public mammography datasets *as downloaded*.

Each ``make_*`` function writes, under ``root``, a few-megabyte copy of one dataset's published
layout: its metadata files (names, separators, exact column spellings, label spellings, missing
values and the known quirks), its folder structure and file naming, and images in the format the
real set ships (DICOM with the tags the real set carries, or JPEG). It returns a :class:`StandIn`
that records the facts a test checks.

Every layout fact is taken from a published description or a public loader; the docstring of each
function names its sources. Facts that could not be checked are marked ``UNVERIFIED`` in comments.

Counting conventions (identical for all six):

* ``n_groups``: distinct grouping units (women; studies for VinDr-Mammo, which has no patient id)
  among the mammogram files present on disk, training and official test side together.
* ``n_groups_labelled``: the same, over the training-side labelled images only.
* ``n_labelled_images``: distinct mammogram files on the *training* side (not the official test
  side) that have a usable A-D density and are not excluded by the layout's own rules.
* ``views`` / ``class_counts``: over those ``n_labelled_images`` files.
* ``n_test_images``: distinct mammogram files on the official test side, labelled or not;
  ``test_class_counts`` counts the labelled ones.
* ``unlabelled``: reason -> number of *rows of the label table* (either side) whose density is
  blank / not a density, or whose image is missing or excluded, or that duplicate an earlier row.
  For EMBED the rows counted are image rows of the metadata table (one per file). RSNA's
  ``test.csv`` has no density column by design and is not counted.
  ``n_unlabelled_rows`` is the sum.

Images are 64x48 px (width x height). DICOM pixels are uint16, 12-bit, MONOCHROME2, written
uncompressed (explicit VR little endian) with a proper file meta header. Every file gets its own
seeded noise around a class-dependent level, so no two files share their bytes.

Only the standard library, numpy, pydicom and Pillow are needed (the KAU-BCMD ``.xlsx`` is written
with ``zipfile``; openpyxl/pandas can read it).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

__all__ = ["StandIn", "make_vindr", "make_rsna", "make_cbis", "make_inbreast", "make_embed", "make_kau", "MAKERS"]

H, W = 48, 64  # rows, columns of every stand-in mammogram
CLASSES = "ABCD"
LEVEL12 = {"A": 700, "B": 1500, "C": 2300, "D": 3100, None: 1900}  # 12-bit grey level per class
LEVEL8 = {"A": 45, "B": 95, "C": 145, "D": 195, None: 120}  # 8-bit (JPEG) grey level per class

# DICOM SOP classes
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


@dataclass
class StandIn:
    """What a test can check about one generated stand-in (see the module docstring)."""

    layout: str
    root: Path
    n_groups: int
    n_groups_labelled: int
    n_labelled_images: int
    n_unlabelled_rows: int
    unlabelled: dict[str, int]
    n_test_images: int
    views: dict[str, int]
    class_counts: dict[str, int]
    test_class_counts: dict[str, int]
    tables: list[Path] = field(default_factory=list)  # the metadata files, as written
    image_files: list[Path] = field(default_factory=list)  # every mammogram file (no ROI/crop files)
    quirks: list[str] = field(default_factory=list)  # plain-language notes on the traps built in


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

class _Images:
    """Bookkeeping of the mammogram files a maker writes, and the StandIn summary built from it."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, path: Path, group: str, label: str | None, view: str, test: bool = False,
            excluded: bool = False) -> None:
        self.rows.append(dict(path=path, group=group, label=label, view=view, test=test, excluded=excluded))

    def summary(self, layout: str, root: Path, unlabelled: Counter, tables: list[Path],
                quirks: list[str]) -> StandIn:
        train = [r for r in self.rows if not r["test"] and r["label"] and not r["excluded"]]
        test = [r for r in self.rows if r["test"]]
        return StandIn(
            layout=layout, root=root,
            n_groups=len({r["group"] for r in self.rows}),
            n_groups_labelled=len({r["group"] for r in train}),
            n_labelled_images=len(train),
            n_unlabelled_rows=sum(unlabelled.values()),
            unlabelled=dict(sorted(unlabelled.items())),
            n_test_images=len(test),
            views=dict(sorted(Counter(r["view"] for r in train).items())),
            class_counts={c: sum(r["label"] == c for r in train) for c in CLASSES},
            test_class_counts={c: sum(r["label"] == c for r in test) for c in CLASSES},
            tables=tables,
            image_files=[r["path"] for r in self.rows],
            quirks=quirks,
        )


def _rng(seed: int, *key) -> np.random.Generator:
    """A generator seeded by the stand-in seed and a per-file key (so files differ)."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def _pixels12(rng: np.random.Generator, label: str | None, shape=(H, W)) -> np.ndarray:
    base = rng.normal(LEVEL12[label], 160, shape)
    base += np.linspace(-120, 120, shape[1])[None, :]  # a gentle gradient, like a breast edge
    return np.clip(base, 0, 4095).astype(np.uint16)


def _pixels8(rng: np.random.Generator, label: str | None, shape=(H, W)) -> np.ndarray:
    base = rng.normal(LEVEL8[label], 12, shape) + np.linspace(-10, 10, shape[1])[None, :]
    return np.clip(base, 0, 255).astype(np.uint8)


def _digits(rng: np.random.Generator, n: int) -> str:
    """n random decimal digits, the first one non-zero."""
    return str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, n - 1))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _write_dicom(path: Path, pixels: np.ndarray, tags: dict, *, sop_class: str | None,
                 sop_instance: str, meta_sop_class: str | None = None,
                 implementation_uid: str | None = None) -> None:
    """Write an uncompressed (explicit VR little endian) single-frame DICOM file.

    ``tags`` maps pydicom keywords to values; ``sop_class=None`` leaves SOPClassUID out of the
    data set (VinDr-Mammo's de-identification drops it), ``meta_sop_class`` overrides the file
    meta MediaStorageSOPClassUID."""
    with warnings.catch_warnings():  # VinDr's hashed "UIDs" are not valid UIDs, as in the real set
        warnings.simplefilter("ignore")
        _write_dicom_quiet(path, pixels, tags, sop_class=sop_class, sop_instance=sop_instance,
                           meta_sop_class=meta_sop_class, implementation_uid=implementation_uid)


def _write_dicom_quiet(path: Path, pixels: np.ndarray, tags: dict, *, sop_class: str | None,
                       sop_instance: str, meta_sop_class: str | None, implementation_uid: str | None) -> None:
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_sop_class or sop_class or MG_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if implementation_uid:
        meta.ImplementationClassUID = implementation_uid
    ds = Dataset()
    ds.file_meta = meta
    if sop_class:
        ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    for key, value in tags.items():
        setattr(ds, key, value)
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = 8 if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------------------------
# 1. VinDr-Mammo (PhysioNet)
# ----------------------------------------------------------------------------------------------

def make_vindr(root: Path, seed: int = 0) -> StandIn:
    """VinDr-Mammo 1.0.0 as downloaded from PhysioNet.

    Layout (sources: https://physionet.org/content/vindr-mammo/1.0.0/ "Data Description";
    github.com/KP-AROB/AROB-VINDR-IMG README; github.com/vinbigdata-medical/vindr-mammo
    ``deidentification.py``, ``tags.csv``, ``split_data.ipynb``; public loaders that read
    ``images/{study_id}/{image_id}.dicom``, e.g. KP-AROB/Breast-Datasets-Preparation
    ``src/core/df_loaders/vindr.py``):

    * top folder: ``breast-level_annotations.csv``, ``finding_annotations.csv``, ``metadata.csv``,
      ``images/<study_id>/<image_id>.dicom`` (note the ``.dicom`` extension); PhysioNet also puts
      ``LICENSE.txt`` and ``SHA256SUMS.txt`` at the top of every project.
    * ``breast-level_annotations.csv``: one row per image, columns ``study_id, series_id,
      image_id, laterality, view_position, height, width, breast_birads, breast_density, split``;
      laterality ``L``/``R``, view_position ``CC``/``MLO``, ``BI-RADS 1`` .. ``BI-RADS 5``,
      ``DENSITY A`` .. ``DENSITY D``, split ``training``/``test`` (an 80/20 split *by study*,
      split_data.ipynb). Density is assessed per breast, so the two breasts of a study may differ.
    * ids are 32-hex md5 hashes: ``deidentification.py`` replaces StudyInstanceUID,
      SeriesInstanceUID and SOPInstanceUID (and the file meta MediaStorageSOPInstanceUID) by
      ``md5(uid).hexdigest()`` and sets file meta MediaStorageSOPClassUID and
      ImplementationClassUID to ``"1.2.3.4"``; every tag not in ``tags.csv`` is dropped, so the
      DICOMs carry **no PatientID/PatientName** and no SOPClassUID. The study is the only
      grouping unit. The hashed ids in the CSV equal the UIDs in the files.
    * ``finding_annotations.csv``: one row per finding (``['No Finding']`` rows too), with
      ``finding_categories`` as a Python-style list string and ``finding_birads`` blank when there
      is no finding (split_data.ipynb). UNVERIFIED: its exact column order (taken from the
      AROB-VINDR-IMG description) and the exact column names of ``metadata.csv`` (documented only
      as "DICOM tag information ... patient's age, imaging device model, manufacturer"; the names
      below are the DICOM attribute names of ``tags.csv``).
    * no blank densities are known in VinDr-Mammo, so ``unlabelled`` is empty.
    """
    root = Path(root)
    images = _Images()
    # (split, density of L breast, density of R breast)
    plan = [("training", "A", "A"), ("training", "A", "A"), ("training", "B", "B"),
            ("training", "B", "C"), ("training", "C", "C"), ("training", "C", "C"),
            ("training", "D", "D"), ("training", "D", "D"), ("training", "B", "B"),
            ("test", "A", "A"), ("test", "C", "C"), ("test", "D", "B")]
    header = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
              "breast_birads", "breast_density", "split"]
    rows, find_rows, meta_rows = [], [], []
    for s, (split, dens_l, dens_r) in enumerate(plan):
        rng = _rng(seed, "vindr", s)
        study_uid = f"1.2.840.113619.2.{_digits(rng, 12)}.{s}"
        study_id = _md5(study_uid)
        age = f"0{rng.integers(40, 70)}Y"
        maker = ("SIEMENS", "Mammomat Inspiration") if s % 3 else ("Planmed", "Planmed Nuance")
        for lat, dens in (("L", dens_l), ("R", dens_r)):
            birads = "BI-RADS 4" if (s == 4 and lat == "R") else f"BI-RADS {1 + (s + (lat == 'R')) % 2}"
            for view in ("CC", "MLO"):
                series_id = _md5(f"{study_uid}.{lat}{view}.series")
                image_id = _md5(f"{study_uid}.{lat}{view}.image")
                path = root / "images" / study_id / f"{image_id}.dicom"
                tags = dict(PatientSex="F", PatientAge=age, StudyInstanceUID=study_id,
                            SeriesInstanceUID=series_id, Modality="MG", BodyPartExamined="BREAST",
                            PresentationIntentType="FOR PRESENTATION", Manufacturer=maker[0],
                            ManufacturerModelName=maker[1], ImageLaterality=lat, ViewPosition=view,
                            ImagerPixelSpacing=[0.085, 0.085], WindowCenter=2047, WindowWidth=4095)
                _write_dicom(path, _pixels12(_rng(seed, "vindr", image_id), dens), tags, sop_class=None,
                             sop_instance=image_id, meta_sop_class="1.2.3.4", implementation_uid="1.2.3.4")
                images.add(path, study_id, dens, view, test=split == "test")
                base = [study_id, series_id, image_id, lat, view, H, W, birads, f"DENSITY {dens}", split]
                rows.append(base)
                if birads == "BI-RADS 4":
                    finding = ["['Mass']", "BI-RADS 4", 10.5, 8.25, 30.0, 27.75]
                else:
                    finding = ["['No Finding']", "", "", "", "", ""]
                find_rows.append([image_id, study_id, series_id, lat, view, H, W, birads,
                                  f"DENSITY {dens}", *finding, split])
                meta_rows.append([image_id, series_id, age, view, lat, "MONOCHROME2", H, W,
                                  "[0.085, 0.085]", maker[0], maker[1]])
    tables = [
        _write_csv(root / "breast-level_annotations.csv", header, rows),
        _write_csv(root / "finding_annotations.csv",
                   ["image_id", "study_id", "series_id", "laterality", "view_position", "height", "width",
                    "breast_birads", "breast_density", "finding_categories", "finding_birads",
                    "xmin", "ymin", "xmax", "ymax", "split"], find_rows),
        # UNVERIFIED column names (see docstring)
        _write_csv(root / "metadata.csv",
                   ["SOP Instance UID", "Series Instance UID", "Patient's Age", "View Position",
                    "Image Laterality", "Photometric Interpretation", "Rows", "Columns",
                    "Imager Pixel Spacing", "Manufacturer", "Manufacturer's Model Name"], meta_rows),
    ]
    (root / "LICENSE.txt").write_text("PhysioNet Restricted Health Data License 1.5.0 (stand-in text)\n")
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.relative_to(root).as_posix()}"
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SHA256SUMS.txt"]
    (root / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n")
    quirks = ["no PatientID in the DICOMs: the study (study_id == StudyInstanceUID) is the group",
              "density strings are 'DENSITY A'..'DENSITY D'; split column 'training'/'test'",
              "image files end in .dicom, not .dcm",
              "one study has different densities in its two breasts (density is per breast)",
              "UIDs are md5 hex strings, not valid DICOM UIDs (pydicom warns on reading)"]
    return images.summary("vindr", root, Counter(), tables, quirks)


# ----------------------------------------------------------------------------------------------
# 2. RSNA Screening Mammography Breast Cancer Detection (Kaggle)
# ----------------------------------------------------------------------------------------------

def make_rsna(root: Path, seed: int = 0) -> StandIn:
    """RSNA Screening Mammography Breast Cancer Detection (Kaggle competition download).

    Layout (sources: https://www.kaggle.com/competitions/rsna-breast-cancer-detection/data as
    mirrored in the RSNA/AI-Challenge-Data wiki page "RSNA Screening Mammography Breast Cancer
    Detection"; the real ``train.csv``/``test.csv``/``sample_submission.csv`` committed in
    github.com/weka511/rsna-breast-cancer-detection (commit 6f4e725); neuro-ml/amid
    ``amid/rsna_bc/dataset.py`` which reads ``{train,test}_images/{patient_id}/{image_id}.dcm``):

    * ``train.csv`` columns ``site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,
      invasive,BIRADS,implant,density,machine_id,difficult_negative_case``; ``test.csv`` columns
      ``site_id,patient_id,image_id,laterality,view,age,implant,machine_id,prediction_id``
      (prediction_id ``<patient_id>_<L|R>``); ``sample_submission.csv`` ``prediction_id,cancer``.
    * in the real train.csv (54,706 rows, 11,913 patients): density ``A``..``D`` or blank;
      **every site-2 row has a blank density** and 0.17 % of site-1 rows too (46 % blank overall);
      BIRADS ``0``/``1``/``2`` or blank; age an integer or blank (37 site-1 rows);
      difficult_negative_case ``True``/``False``; laterality ``L``/``R``; views ``MLO`` 27,903,
      ``CC`` 26,765, ``AT`` 19, ``LM`` 10, ``ML`` 8, ``LMO`` 1. Density never differs within a
      patient. Patients usually have 4 images, up to 14. The public test.csv has 4 rows (one
      patient) and ``test_images/`` holds those 4 files.
    * grouping unit: ``patient_id``. No document excludes the AT/ML/LM/LMO views, so labelled
      images of those views are counted as labelled here.
    * UNVERIFIED: which DICOM tags the real files carry. The files are JPEG 2000 / JPEG lossless
      in reality; here they are uncompressed. PatientID is written as the CSV patient_id;
      ImageLaterality/ViewPosition are left out (the CSV is the documented source for both).
    """
    root = Path(root)
    images = _Images()
    unlabelled = Counter()
    # (site, density, extra views [(lat, view)], cancer side or None)
    plan = [(1, "A", [], None), (1, "A", [], None), (1, "B", [], None), (1, "B", [("R", "AT")], "R"),
            (1, "C", [], None), (1, "C", [], None), (1, "D", [], None), (1, "D", [("L", "ML")], None),
            (1, None, [], None), (2, None, [], None), (2, None, [], None), (2, None, [("R", "LM")], None)]
    machines = {1: [49, 93, 216, 170], 2: [29, 21, 48]}
    header = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
              "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
    rows = []
    rng0 = _rng(seed, "rsna")
    pids = sorted(int(x) for x in rng0.choice(np.arange(10006, 65534), size=len(plan) + 1, replace=False))
    test_pid = pids.pop(len(pids) // 2)
    for p, ((site, dens, extra, cancer_side), pid) in enumerate(zip(plan, pids)):
        rng = _rng(seed, "rsna", pid)
        age = "" if p == 8 else str(int(rng.integers(40, 80)))  # site 1 has a few blank ages
        machine = machines[site][p % len(machines[site])]
        birads = "" if site == 2 else str(int(rng.integers(0, 3)))
        views = [("L", "CC"), ("L", "MLO"), ("R", "MLO"), ("R", "CC")] + extra
        for lat, view in views:
            image_id = int(rng.integers(10**6, 2**31 - 1))
            path = root / "train_images" / str(pid) / f"{image_id}.dcm"
            _write_rsna_dicom(path, pid, image_id, _pixels12(_rng(seed, "rsna", image_id), dens), rng)
            images.add(path, str(pid), dens, view)
            cancer = int(cancer_side == lat)
            rows.append([site, pid, image_id, lat, view, age, cancer, cancer, cancer,
                         "" if cancer else birads, int(p == 2), dens or "", machine,
                         str(p == 5 and lat == "L")])
            if dens is None:
                unlabelled["blank_density"] += 1
    rows.sort(key=lambda r: r[1])
    tables = [_write_csv(root / "train.csv", header, rows)]
    # the public test set: one site-2 patient, 4 images, no density column at all
    rng = _rng(seed, "rsna", "test", test_pid)
    test_rows, sub_rows = [], []
    for lat, view in [("L", "MLO"), ("L", "CC"), ("R", "MLO"), ("R", "CC")]:
        image_id = int(rng.integers(10**6, 2**31 - 1))
        path = root / "test_images" / str(test_pid) / f"{image_id}.dcm"
        _write_rsna_dicom(path, test_pid, image_id, _pixels12(_rng(seed, "rsna", image_id), None), rng)
        images.add(path, str(test_pid), None, view, test=True)
        test_rows.append([2, test_pid, image_id, lat, view, 81, 0, 21, f"{test_pid}_{lat}"])
    for lat in "LR":
        sub_rows.append([f"{test_pid}_{lat}", 0.0211676964135561])
    tables.append(_write_csv(root / "test.csv", ["site_id", "patient_id", "image_id", "laterality", "view", "age",
                                                  "implant", "machine_id", "prediction_id"], test_rows))
    tables.append(_write_csv(root / "sample_submission.csv", ["prediction_id", "cancer"], sub_rows))
    quirks = ["density is blank on every site-2 row and on one site-1 patient",
              "a few AT/ML/LM views besides CC/MLO (kept: no document excludes them)",
              "test.csv has no density/cancer columns; sample_submission is per breast",
              "age is blank on one patient; BIRADS blank on site 2 and on cancer rows"]
    return images.summary("rsna", root, unlabelled, tables, quirks)


def _write_rsna_dicom(path: Path, pid: int, image_id: int, pixels: np.ndarray, rng: np.random.Generator) -> None:
    # UNVERIFIED tag set (see make_rsna docstring)
    study = f"1.2.840.10009.1.2.3.{pid}"
    _write_dicom(path, pixels, dict(PatientID=str(pid), StudyInstanceUID=study,
                                    SeriesInstanceUID=f"{study}.{_digits(rng, 9)}", Modality="MG",
                                    InstanceNumber=1),
                 sop_class=MG_PRESENTATION, sop_instance=f"{study}.1.{image_id}")


# ----------------------------------------------------------------------------------------------
# 3. CBIS-DDSM (TCIA)
# ----------------------------------------------------------------------------------------------

_CBIS_MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                     "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                     "image file path", "cropped image file path", "ROI mask file path"]
_CBIS_CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                     "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                     "image file path", "cropped image file path", "ROI mask file path"]
_NBIA_HEADER = ["Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID", "Study UID",
                "Study Description", "Study Date", "Series Description", "Manufacturer", "Modality",
                "SOP Class Name", "SOP Class UID", "Number of Images", "File Size", "File Location",
                "Download Timestamp"]


def make_cbis(root: Path, seed: int = 0) -> StandIn:
    """CBIS-DDSM after the standard TCIA download (NBIA Data Retriever, "descriptive" folder names).

    Layout (sources: the four case-description CSVs as published, checked byte for byte in
    github.com/harshithach999/CS-5610-100; https://www.cancerimagingarchive.net/collection/cbis-ddsm/
    file list as quoted in john-james-ai/BreastCancerDetection ``content/00_data`` (the CSVs and the
    NBIA ``metadata.csv`` are separate downloads next to ``<manifest>/CBIS-DDSM/``); on-disk paths
    quoted in public loaders, e.g. ``CBIS-DDSM/Calc-Training_P_00005_RIGHT_CC/08-07-2016-DDSM-NA-23157/
    1.000000-full mammogram images-38548/1-1.dcm`` and ``.../Calc-Training_P_01437_LEFT_CC_1/
    09-06-2017-DDSM-NA-30776/1.000000-ROI mask images-59186/1-1.dcm``; KP-AROB/Breast-Datasets-
    Preparation ``src/core/df_loaders/cbis.py`` (maps CSV paths to disk through metadata.csv
    ``Study UID``/``Series UID``/``File Location``); the DICOM PatientID values
    ``Mass-Training_P_01694_RIGHT_CC`` / ``Mass-Training_P_01250_RIGHT_MLO_1`` and series
    descriptions listed in huggingface.co/datasets/theshoaibme/PanOrganNet):

    * ``mass_case_description_{train,test}_set.csv`` spell the density column ``breast_density``;
      ``calc_case_description_{train,test}_set.csv`` spell it ``breast density``. Values 1-4, plus
      ``0`` on 2 rows of the calc *test* file (P_01743) only.
    * one row per abnormality: an image with several abnormalities repeats on several rows with
      ``abnormality id`` 1, 2, ...; the same woman (``P_xxxxx``) has several per-view cases and
      may appear in both mass and calc files and in both train and test files (31 women do).
    * ``image file path`` = ``<case>/<study uid>/<series uid>/000000.dcm``, which does **not** exist
      on disk. Cropped/ROI paths point at ``<case>_<abnormality id>/...``; in the mass files the
      ``ROI mask file path`` cell ends with a newline (quoted), in the calc files the ``cropped
      image file path`` cell does; crop and mask share one study/series UID (000000 vs 000001).
    * on disk: ``CBIS-DDSM/<case>/<MM-DD-YYYY>-DDSM-NA-<last 5 of study uid>/1.000000-full mammogram
      images-<last 5 of series uid>/1-1.dcm``; crops and masks in ``CBIS-DDSM/<case>_<n>/.../
      1.000000-<ROI mask images|cropped images>-<5>/1-1.dcm`` and ``1-2.dcm`` (which of the two is
      the mask varies). NBIA writes ``metadata.csv`` with ``File Location`` ``./CBIS-DDSM/...``.
    * DICOM PatientID is the per-view case name (``Mass-Training_P_00001_LEFT_CC``, ``..._1`` for
      crops/masks), so grouping by PatientID splits one woman into many groups; the woman is the
      ``P_xxxxx`` in it (or the CSV ``patient_id``).
    * official split: the ``train``/``test`` file names.
    * UNVERIFIED: Study Description / 3rd Party Analysis / Data Description URI / File Size /
      Download Timestamp formats in metadata.csv (header verified from an NBIA metadata.csv of
      another collection); the SOP class (written as Secondary Capture); absence of
      ViewPosition/ImageLaterality in the real DICOMs (left out here).
    """
    root = Path(root)
    images = _Images()
    unlabelled = Counter()
    # (patient, kind, split, side, views, density, abnormalities per image)
    plan = [("P_00001", "Mass", "Training", "LEFT", ["CC", "MLO"], 3, 1),
            ("P_00005", "Calc", "Training", "RIGHT", ["CC", "MLO"], 3, 1),
            ("P_00007", "Calc", "Training", "LEFT", ["CC", "MLO"], 4, 1),
            ("P_00008", "Calc", "Training", "LEFT", ["CC", "MLO"], 2, 3),  # one image, three rows
            ("P_00021", "Mass", "Training", "LEFT", ["CC", "MLO"], 1, 1),
            ("P_00023", "Mass", "Training", "RIGHT", ["CC", "MLO"], 1, 1),
            ("P_00044", "Mass", "Training", "RIGHT", ["CC", "MLO"], 2, 2),
            ("P_00045", "Mass", "Training", "LEFT", ["CC", "MLO"], 4, 1),
            ("P_00016", "Mass", "Test", "LEFT", ["CC", "MLO"], 4, 1),
            ("P_00038", "Calc", "Test", "LEFT", ["CC"], 2, 1),
            ("P_00005", "Mass", "Test", "RIGHT", ["CC"], 3, 1),  # same woman as a training case
            ("P_01743", "Calc", "Test", "LEFT", ["CC", "MLO"], 0, 1)]  # density 0 (real: calc test)
    csv_rows = {("Mass", "Training"): [], ("Mass", "Test"): [], ("Calc", "Training"): [], ("Calc", "Test"): []}
    nbia_rows = []
    for pid, kind, split, side, views, dens, n_abn in plan:
        for view in views:
            case = f"{kind}-{split}_{pid}_{side}_{view}"
            rng = _rng(seed, "cbis", case)
            label = CLASSES[dens - 1] if dens in (1, 2, 3, 4) else None
            study, series, sop = (f"1.3.6.1.4.1.9590.100.1.2.{_digits(rng, 37)}" for _ in range(3))
            day = "07-20-2016" if kind == "Mass" else "08-07-2016"
            full = _cbis_series(root, case, study, series, day, "full mammogram images")
            _write_dicom(full / "1-1.dcm", _pixels12(_rng(seed, "cbis", case, "full"), label),
                         _cbis_tags(case, study, series, day, "full mammogram images"),
                         sop_class=SECONDARY_CAPTURE, sop_instance=sop)
            images.add(full / "1-1.dcm", pid, label, view, test=split == "Test")
            nbia_rows.append(_nbia_row(root, full, case, study, series, day, "full mammogram images", 1))
            if dens not in (1, 2, 3, 4):
                unlabelled[f"density_{dens}"] += n_abn
            for abn in range(1, n_abn + 1):
                roi_case = f"{case}_{abn}"
                rr = _rng(seed, "cbis", roi_case)
                r_study, r_series, sop1, sop2 = (f"1.3.6.1.4.1.9590.100.1.2.{_digits(rr, 37)}"
                                                 for _ in range(4))
                desc = "ROI mask images" if abn % 2 else "cropped images"
                folder = _cbis_series(root, roi_case, r_study, r_series, "08-30-2017", desc)
                crop = _pixels12(_rng(seed, "cbis", roi_case, "crop"), label, shape=(24, 24))
                mask = np.zeros((H, W), np.uint8)
                mask[10 + abn: 26 + abn, 20:36] = 255
                crop_name, mask_name = ("1-1.dcm", "1-2.dcm") if abn % 2 else ("1-2.dcm", "1-1.dcm")
                _write_dicom(folder / crop_name, crop, _cbis_tags(roi_case, r_study, r_series, "08-30-2017",
                                                                  "cropped images"),
                             sop_class=SECONDARY_CAPTURE, sop_instance=sop1)
                _write_dicom(folder / mask_name, mask, _cbis_tags(roi_case, r_study, r_series, "08-30-2017",
                                                                  "ROI mask images"),
                             sop_class=SECONDARY_CAPTURE, sop_instance=sop2)
                nbia_rows.append(_nbia_row(root, folder, roi_case, r_study, r_series, "08-30-2017", desc, 2))
                image_path = f"{case}/{study}/{series}/000000.dcm"
                if kind == "Mass":
                    crop_path = f"{roi_case}/{r_study}/{r_series}/000000.dcm"
                    roi_path = f"{roi_case}/{r_study}/{r_series}/000001.dcm\n"
                    desc_cols = ["OVAL", "CIRCUMSCRIBED"]
                else:
                    crop_path = f"{roi_case}/{r_study}/{r_series}/000001.dcm\n"
                    roi_path = f"{roi_case}/{r_study}/{r_series}/000000.dcm"
                    desc_cols = ["PLEOMORPHIC", "CLUSTERED"]
                pathology = ["BENIGN", "MALIGNANT", "BENIGN_WITHOUT_CALLBACK"][(abn + len(pid)) % 3]
                csv_rows[(kind, split)].append(
                    [pid, dens, side, view, abn, "mass" if kind == "Mass" else "calcification", *desc_cols,
                     4, pathology, 3 + abn % 3, image_path, crop_path, roi_path])
    tables = []
    for (kind, split), rows in csv_rows.items():
        name = f"{kind.lower()}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
        tables.append(_write_csv(root / name, _CBIS_MASS_HEADER if kind == "Mass" else _CBIS_CALC_HEADER, rows))
    tables.append(_write_csv(root / "metadata.csv", _NBIA_HEADER, nbia_rows))
    quirks = ["density column is 'breast_density' in mass files, 'breast density' in calc files",
              "one row per abnormality: P_00008 (3 rows) and P_00044 (2 rows) repeat one image",
              "density 0 on 2 rows of calc_case_description_test_set.csv (P_01743)",
              "P_00005 is on the training side (calc) and on the test side (mass)",
              "CSV image paths (…/000000.dcm) do not exist on disk; files are …/1-1.dcm",
              "cropped/ROI folders <case>_<n> sit beside the full-mammogram case folders",
              "DICOM PatientID is the per-view case name, not the woman"]
    return images.summary("cbis_ddsm", root, unlabelled, tables, quirks)


def _cbis_series(root: Path, case: str, study: str, series: str, day: str, desc: str) -> Path:
    return root / "CBIS-DDSM" / case / f"{day}-DDSM-NA-{study[-5:]}" / f"1.000000-{desc}-{series[-5:]}"


def _cbis_tags(case: str, study: str, series: str, day: str, desc: str) -> dict:
    m, d, y = day.split("-")
    return dict(PatientID=case, StudyInstanceUID=study, SeriesInstanceUID=series, Modality="MG",
                BodyPartExamined="BREAST", SeriesDescription=desc, StudyDate=f"{y}{m}{d}")


def _nbia_row(root: Path, folder: Path, case: str, study: str, series: str, day: str, desc: str, n: int) -> list:
    size = sum(p.stat().st_size for p in folder.iterdir())
    return [series, "CBIS-DDSM", "NO", "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY", case, study, "DDSM",
            day, desc, "", "MG", "Secondary Capture Image Storage", SECONDARY_CAPTURE, n,
            f"{size / 1000:.2f} KB", "./" + folder.relative_to(root).as_posix(), "2024-01-15T10:00:00.000"]


# ----------------------------------------------------------------------------------------------
# 4. INbreast
# ----------------------------------------------------------------------------------------------

def make_inbreast(root: Path, seed: int = 0) -> StandIn:
    """INbreast (release 1.0) as distributed.

    Layout (sources: the real ``INbreast.csv`` committed in
    github.com/wentaozhu/deep-mil-for-whole-mammogram-classification; the release README quoted in
    github.com/ispamm/PHBreast issue #6 ("in the filename '20586908_6c613a14b80a8591_MG_R_CC_ANON',
    '6c613a14b80a8591' is the patient ID that can be used to aggregate DICOMs in cases");
    ispamm/PHBreast ``utils/Preprocessing_INbreast.ipynb`` (same patient with several exam dates;
    keeps views CC/MLO: 409 of 410); loaders reading ``AllDICOMs/*.dcm`` and ``AllXML/<File
    Name>.xml``; KP-AROB/Breast-Datasets-Preparation ``inbreast.py`` and others reading
    ``INbreast.xls`` with ``skipfooter=2``):

    * ``INbreast.csv``, separator ``;``, header ``Patient ID;Patient age;Laterality;View;
      Acquisition date;File Name;ACR;Bi-Rads``; ``Patient ID`` **and** ``Patient age`` are
      ``removed`` on every row; Laterality ``L``/``R``; View ``CC``/``MLO`` and one ``FB``;
      Acquisition date ``YYYYMM``; File Name an 8-digit number; ACR ``1``-``4``, one row has a
      blank ACR made of a long run of spaces; Bi-Rads ``1``,``2``,``3``,``4a``,``4b``,``4c``,
      ``5``,``6``. 410 rows, no trailing junk in the CSV.
    * ``AllDICOMs/<File Name>_<16-hex patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm`` (the MLO view is
      ``ML`` in the file name). The hash is the grouping unit; a woman can have exams on two dates.
      ``AllXML/<File Name>.xml`` holds lesion contours (OsiriX plist) for some images.
    * not written: ``INbreast.xls`` (17 columns incl. ``Mass `` and ``Lesion Annotation Status``,
      two trailing total rows) because .xls cannot be written without extra packages.
    * UNVERIFIED: the DICOM tags (PatientID left out; ImageLaterality/ViewPosition left out),
      the file-name token of the ``FB`` view (written as ``FB``), CSV line endings, and the other
      release folders (AllROI, PectoralMuscle, MedicalReports) which are not written.
    """
    root = Path(root)
    images = _Images()
    unlabelled = Counter()
    rows = []
    # (acr per image or per case, exams [(date, [(lat, view)])], birads)
    full = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    plan = [("1", [("201001", full)], "1"), ("1", [("200901", full)], "2"),
            ("2", [("201001", full)], "4a"), ("2", [("200902", [("L", "MLO"), ("L", "CC")])], "2"),  # mastectomy
            ("3", [("200802", full), ("201001", full)], "2"),  # one woman, two exam dates
            ("3", [("201001", full)], "4c"), ("4", [("201001", full)], "1"), ("4", [("200801", full)], "5"),
            ("3", [("200901", full + [("R", "FB")])], "2"),  # one 'FB' view
            ("blank", [("201001", [("R", "MLO"), ("R", "CC")])], "1")]  # MLO has a blank ACR
    number = 20586908
    for c, (acr, exams, birads) in enumerate(plan):
        rng = _rng(seed, "inbreast", c)
        case_hash = "".join(f"{b:02x}" for b in rng.integers(0, 256, 8))
        for date, views in exams:
            for lat, view in views:
                number += int(rng.integers(23, 30))
                this_acr = ("2" if view == "CC" else " " * 217) if acr == "blank" else acr
                label = CLASSES[int(this_acr) - 1] if this_acr.strip() else None
                token = {"MLO": "ML"}.get(view, view)
                path = root / "AllDICOMs" / f"{number}_{case_hash}_MG_{lat}_{token}_ANON.dcm"
                _write_dicom(path, _pixels12(_rng(seed, "inbreast", number), label),
                             dict(StudyInstanceUID=f"1.2.826.0.1.3680043.2.{c}.{date}",
                                  SeriesInstanceUID=f"1.2.826.0.1.3680043.2.{c}.{date}.{number % 97}",
                                  Modality="MG", Manufacturer="SIEMENS"),
                             sop_class=MG_PRESENTATION, sop_instance=f"1.2.826.0.1.3680043.2.{c}.{number}")
                images.add(path, case_hash, label, view)
                if label is None:
                    unlabelled["blank_acr"] += 1
                rows.append(["removed", "removed", lat, view, date, number, this_acr, birads])
                if birads not in ("1", "2"):
                    _inbreast_xml(root / "AllXML" / f"{number}.xml", number)
    table = _write_csv(root / "INbreast.csv", ["Patient ID", "Patient age", "Laterality", "View",
                                               "Acquisition date", "File Name", "ACR", "Bi-Rads"], rows, ";")
    quirks = ["';' separator; 'removed' in Patient ID and Patient age",
              "the patient is the hash inside the DICOM file name; one woman has two exam dates",
              "MLO is 'ML' in file names but 'MLO' in the CSV; one 'FB' view row",
              "one ACR cell is a run of spaces (blank)", "a mastectomy case has only two images"]
    return images.summary("inbreast", root, unlabelled, [table], quirks)


def _inbreast_xml(path: Path, number: int) -> None:
    """A minimal OsiriX ROI plist like the AllXML files (structure as read by public loaders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0"><dict><key>Images</key><array><dict>'
        '<key>ImageIndex</key><integer>0</integer><key>NumberOfROIs</key><integer>1</integer>'
        f'<key>ImageName</key><string>{number}</string>'
        '<key>ROIs</key><array><dict><key>Name</key><string>Mass</string>'
        '<key>NumberOfPoints</key><integer>3</integer><key>Point_px</key><array>'
        '<string>(10.0, 10.0)</string><string>(20.0, 12.0)</string><string>(15.0, 20.0)</string>'
        '</array></dict></array></dict></array></dict></plist>\n')


# ----------------------------------------------------------------------------------------------
# 5. EMBED (Emory Breast Imaging Dataset, AWS Open Data)
# ----------------------------------------------------------------------------------------------

_EMBED_CLINICAL = ["empi_anon", "acc_anon", "study_date_anon", "desc", "tissueden", "asses", "numfind", "side",
                   "total_L_find", "total_R_find", "massshape", "massmargin", "massdens", "calcfind",
                   "calcdistri", "calcnumber", "bside", "path_severity", "age_at_study", "RACE_DESC",
                   "ETHNICITY_DESC", "ETHNIC_GROUP_DESC"]
_EMBED_METADATA = ["anon_dicom_path", "empi_anon", "acc_anon", "study_date_anon", "StudyDescription",
                   "SeriesDescription", "FinalImageType", "ImageLateralityFinal", "ViewPosition", "spot_mag",
                   "ROI_coords", "num_roi", "match_level", "SRC_DST", "png_path", "png_filename"]
EMBED_NAS_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"


def make_embed(root: Path, seed: int = 0) -> StandIn:
    """EMBED Open Data as downloaded from the AWS bucket ``embed-dataset-open``.

    Layout (sources: github.com/Emory-HITI/EMBED_Open_Data README sections IV-VIII and
    ``resources/notebooks/Sample_Notebook.ipynb``, ``resources/datathon_notebooks/*``; public
    loaders that map ``anon_dicom_path`` to the download by replacing ``/mnt/NAS2/mammo/anon_dicom``
    with ``<root>/images`` (e.g. the Mammo-CLIP style ``EMBED_PATH_TRANS_FUNC``, and a boto3
    script that downloads S3 key ``images/cohort_1/...``); loaders dropping the ``Unnamed: 0``
    index column of ``EMBED_OpenData_metadata_reduced.csv``):

    * ``tables/EMBED_OpenData_clinical.csv`` (one row **per finding**; exam-level fields such as
      ``tissueden`` repeat on every finding row of the exam), ``tables/EMBED_OpenData_metadata.csv``
      (one row per image file) and the ``_reduced`` versions of both.
    * ``tissueden``: 1-4 = BI-RADS A-D, **5 = normal male**, blank when not recorded; read back as
      floats (``2.0``). ``asses`` letters A/N/B/P/S/M/K; ``side`` L/R/B or blank.
    * metadata: ``anon_dicom_path`` is Emory's absolute path
      ``/mnt/NAS2/mammo/anon_dicom/cohort_<n>/<empi_anon>/<study uid>/<series uid>/<sop uid>.dcm``;
      the download has the same tail under ``images/`` (``images/cohort_1/...``).
      ``FinalImageType`` ``2D`` / ``cview`` (C-view, synthetic 2D; 3D and ROI_SS(C) are not in the
      open release); ``ImageLateralityFinal`` L/R; ``ViewPosition`` CC/MLO/...; ``spot_mag`` 1.0
      for spot-compression/magnification views, blank otherwise (the README says 0/1; the HITI
      notebooks filter ``spot_mag != 1.0``).
    * tables join on ``acc_anon`` (and laterality: clinical ``side`` vs ``ImageLateralityFinal``);
      the woman is ``empi_anon``. No official test split.
    * labelled here: ``FinalImageType == '2D'`` and ``spot_mag != 1``; C-view and spot/mag images
      are counted in ``unlabelled`` (reasons ``cview``, ``spot_mag``) together with images of exams
      whose tissueden is blank (``blank_density``) or 5 (``male_density_5``). These counts are per
      metadata (image) row.
    * UNVERIFIED: the full column lists (the real tables have ~100 clinical and ~150 metadata
      columns; only documented ones are written), the value format of ``ROI_coords`` for images
      without ROI, the ``SeriesDescription`` strings, and the DICOM tags (PatientID is left out;
      ViewPosition/ImageLaterality are written because the metadata says they come from DICOM).
    """
    root = Path(root)
    images = _Images()
    unlabelled = Counter()
    full4 = [("L", "CC", "2D", 0), ("L", "MLO", "2D", 0), ("R", "CC", "2D", 0), ("R", "MLO", "2D", 0)]
    cview2 = [("L", "CC", "cview", 0), ("R", "CC", "cview", 0)]
    screen = "MG Screening Bilateral"
    tomo = "MG Screen Bilat w/Tomo/CAD Stnd Protocol"
    # per woman: cohort, [exams: (tissueden, desc, findings [(side, asses)], images)]
    plan = [(1, [("1.0", screen, [(None, "N")], full4)]),
            (1, [("1.0", tomo, [(None, "N")], full4 + cview2)]),
            (1, [("2.0", screen, [("L", "A"), ("R", "N")], full4)]),
            (2, [("2.0", screen, [(None, "B")], full4)]),
            (1, [("3.0", screen, [("L", "A")], full4),
                 ("3.0", "MG Diagnostic Left w/CAD", [("L", "B")], [("L", "CC", "2D", 0), ("L", "CC", "2D", 1)])]),
            (2, [("3.0", tomo, [(None, "N")], full4 + cview2)]),
            (1, [("4.0", screen, [(None, "N")], full4)]),
            (2, [("4.0", screen, [("B", "B")], full4)]),
            (1, [("", screen, [(None, "N")], full4)]),  # tissueden not recorded
            (2, [("5.0", screen, [(None, "N")], [("L", "CC", "2D", 0), ("R", "CC", "2D", 0)])])]  # male
    clinical, metadata = [], []
    day0 = dt.date(2015, 1, 1)
    for w, (cohort, exams) in enumerate(plan):
        rng = _rng(seed, "embed", w)
        empi = _digits(rng, 8)
        for e, (den, desc, findings, imgs) in enumerate(exams):
            acc = _digits(rng, 16)
            date = (day0 + dt.timedelta(days=int(rng.integers(0, 1500)) + 400 * e)).isoformat()
            study = f"1.2.847.113975.3.62.1.{_digits(rng, 8)}.{date.replace('-', '')}.1"
            label = {"1.0": "A", "2.0": "B", "3.0": "C", "4.0": "D"}.get(den)
            total_l = sum(s == "L" for s, _ in findings)
            total_r = sum(s == "R" for s, _ in findings)
            age = f"{rng.uniform(40, 80):.6f}"
            for k, (side, asses) in enumerate(findings, start=1):
                clinical.append([empi, acc, date, desc, den, asses, k, side or "", float(total_l), float(total_r),
                                 "X" if asses == "A" else "", "", "", "", "", 0, "", "", age,
                                 "African American  or Black" if w % 2 else "Caucasian or White",
                                 "African American  or Black" if w % 2 else "Caucasian or White",
                                 "Non-Hispanic or Latino"])
            series_no = 0
            for lat, view, kind, spot in imgs:
                series_no += 1
                series = f"1.2.844.113684.{_digits(rng, 10)}.{_digits(rng, 10)}.{series_no}"
                sop = f"1.2.826.0.1.3680043.8.498.{_digits(rng, 38)}"
                tail = f"cohort_{cohort}/{empi}/{study}/{series}/{sop}.dcm"
                path = root / "images" / tail
                excluded = kind != "2D" or spot == 1
                _write_dicom(path, _pixels12(_rng(seed, "embed", sop), label),
                             dict(StudyInstanceUID=study, SeriesInstanceUID=series, Modality="MG",
                                  Manufacturer="HOLOGIC, Inc.", ImageLaterality=lat, ViewPosition=view),
                             sop_class=MG_PRESENTATION, sop_instance=sop)
                images.add(path, empi, label, view, excluded=excluded)
                if kind == "cview":
                    unlabelled["cview"] += 1
                elif spot == 1:
                    unlabelled["spot_mag"] += 1
                elif den == "":
                    unlabelled["blank_density"] += 1
                elif den == "5.0":
                    unlabelled["male_density_5"] += 1
                series_desc = f"{'C-View ' if kind == 'cview' else ''}{lat} {view}"
                metadata.append([EMBED_NAS_PREFIX + tail, empi, acc, date, desc, series_desc, kind, lat, view,
                                 "1.0" if spot else "", "()", 0, "", "", "", ""])
    tables_dir = root / "tables"
    tables = [_write_csv(tables_dir / "EMBED_OpenData_clinical.csv", _EMBED_CLINICAL, clinical),
              _write_csv(tables_dir / "EMBED_OpenData_metadata.csv", _EMBED_METADATA, metadata)]
    keep_c = [_EMBED_CLINICAL.index(c) for c in ("empi_anon", "acc_anon", "study_date_anon", "desc", "tissueden",
                                                  "asses", "numfind", "side", "path_severity", "age_at_study")]
    keep_m = [_EMBED_METADATA.index(c) for c in ("anon_dicom_path", "empi_anon", "acc_anon", "study_date_anon",
                                                  "StudyDescription", "SeriesDescription", "FinalImageType",
                                                  "ImageLateralityFinal", "ViewPosition", "spot_mag",
                                                  "ROI_coords", "num_roi")]
    tables.append(_write_csv(tables_dir / "EMBED_OpenData_clinical_reduced.csv",
                             [_EMBED_CLINICAL[i] for i in keep_c], [[r[i] for i in keep_c] for r in clinical]))
    tables.append(_write_csv(tables_dir / "EMBED_OpenData_metadata_reduced.csv",
                             [""] + [_EMBED_METADATA[i] for i in keep_m],
                             [[n] + [r[i] for i in keep_m] for n, r in enumerate(metadata)]))
    quirks = ["two tables joined on acc_anon; clinical has one row per finding (tissueden repeats)",
              "anon_dicom_path is absolute (/mnt/NAS2/mammo/anon_dicom/...); files live under images/",
              "tissueden 5 = normal male, and blank on one exam", "C-view and spot_mag images are excluded",
              "the reduced metadata table starts with an unnamed index column",
              "one woman has two exams (screening + diagnostic with a spot/mag view)"]
    return images.summary("embed", root, unlabelled, tables, quirks)


# ----------------------------------------------------------------------------------------------
# 6. KAU-BCMD (King Abdulaziz University Breast Cancer Mammogram Dataset)
# ----------------------------------------------------------------------------------------------

KAU_DENSITY = {"0%-25%": "A", "26%-50%": "B", "51%-75%": "C", ">75%": "D"}
KAU_DENSITY_COL = "Percentage of\n grandular tissue(density)"
KAU_COLUMNS = ["Study date", "PatientID", "Patient age ", "Breast  type", "Breast view", KAU_DENSITY_COL,
               "Assesment", "Image path"]


def make_kau(root: Path, seed: int = 0) -> StandIn:
    """KAU-BCMD v1 (mammogram part) as distributed with ``correctSheetlast.xlsx``.

    Layout (sources: Alsolami et al., "King Abdulaziz University Breast Cancer Mammogram Dataset
    (KAU-BCMD)", Data 2021, 6(11), 111, https://doi.org/10.3390/data6110111; the real
    ``correctSheetlast.xlsx`` and ``BC with ultrasound.xlsx`` inside ``Dataset.zip`` of
    github.com/FasiulAbedinKhan/EEE385L_Project_BI-RADS-Classification, whose notebook also lists
    the JPEG files ``mammograms/BIRAD 1/2016_BC017021_ MLO_R.jpg``; Gaurav2543/Mammo-Bench
    ``Data_Preparation/Clinical_Data_Preprocessing.ipynb`` (reads sheet ``correctSheet``, maps
    the density bins, replaces ``.dcm`` by ``.jpg``); a public KAU-BCMD-DICOM loader (images in
    folders ``BIRAD {1,3,4,5}``, names ``{year}_{PatientID}_{view}_{side}``, 4 stems duplicated
    across folders)):

    * ``correctSheetlast.xlsx`` has two sheets: ``tabel `` (a summary table, *first* sheet, so
      ``pd.read_excel`` without ``sheet_name`` reads the wrong one) and ``correctSheet`` with the
      columns ``Study date``, ``PatientID``, ``Patient age `` (trailing space), ``Breast  type``
      (two spaces; ``R``/``L``), ``Breast view`` (``CC``/``MLO``), ``Percentage of\\n grandular
      tissue(density)`` (embedded newline), ``Assesment`` (``BIRAD 1`` .. ``BIRAD 5``),
      ``Image path`` (``mammograms/BIRAD 2/2019_BC007741_ CC_R.dcm``: note ``.dcm`` and the
      space before the view). The sheet's used range is 12 columns wide (``Unnamed: 8..11``, two
      stray numbers) and ends with a ``=COUNT(C2:C…)`` formula below the data, which pandas reads
      as an extra row: ``PatientID`` blank, ``Patient age `` = the number of rows (5386).
    * density bins ``0%-25%``, ``26%-50%``, ``51%-75%``, ``>75%`` (-> A-D); real typos:
      ``26% -50%`` (8 rows), ``0%-50%`` (8, ambiguous), ``26%-505`` (4), ``51-75%`` (4). No blanks.
    * one row per image, 5,386 rows, 996 women (``PatientID`` ``BC`` + 6-7 digits); a woman has
      up to 4 studies (the year prefix of the file name is *not* the study date's year) and her
      density may change between studies; BI-RADS is per breast, so a woman's two breasts can sit
      in different ``BIRAD n`` folders; some rows are listed twice.
    * images: JPEG in ``mammograms/BIRAD <n>/<year>_<PatientID>_ <CC|MLO>_<L|R>.jpg``; the public
      copies have only ``BIRAD 1/3/4/5`` folders, so the sheet's ``BIRAD 2`` rows (3,118) have no
      image (reason ``image_missing``). No official test split; the woman is the grouping unit.
    * labelled here: whitespace-insensitive match of the four bins (so ``26% -50%`` is B);
      ``0%-50%`` -> ``ambiguous_density``; the second listing of a duplicated image ->
      ``duplicate_row``. ``26%-505`` / ``51-75%`` are not generated.
    * UNVERIFIED: whether some copies (Kaggle ``asmaasaad/king-abdulaziz-university-mammogram-
      dataset``) drop the ``mammograms/`` level or rename the folders (a link mentions ``Birad5``);
      whether any copy ships the ``BIRAD 2`` images (the paper counts 5,662 images); no CSV
      export is documented, so none is written.
    """
    from PIL import Image

    root = Path(root)
    images = _Images()
    unlabelled = Counter()
    both = lambda b: {"R": b, "L": b}  # noqa: E731
    # (PatientID, file-name year, study date, age, density cell, BI-RADS per side, listed twice)
    plan = [("BC000541", 2013, dt.date(2016, 12, 4), 39, "51%-75%", both(1), False),
            ("BC000541", 2016, dt.date(2017, 10, 24), 42, "26%-50%", both(1), False),  # same woman, new study
            ("BC001201", 2013, dt.date(2016, 11, 2), 51, "0%-25%", both(1), False),
            ("BC005421", 2018, dt.date(2018, 3, 7), 62, "0%-25%", {"R": 1, "L": 5}, False),
            ("BC003026", 2013, dt.date(2016, 5, 17), 47, "26% -50%", both(3), False),
            ("BC010881", 2013, dt.date(2016, 9, 29), 55, "51%-75%", both(4), False),
            ("BC009024", 2016, dt.date(2017, 3, 1), 47, ">75%", {"R": 5, "L": 1}, False),
            ("BC016741", 2016, dt.date(2017, 11, 13), 44, ">75%", {"R": 1, "L": 5}, False),
            ("BC0021805", 2018, dt.date(2018, 6, 3), 58, "0%-50%", both(3), False),
            ("BC007741", 2019, dt.date(2019, 4, 25), 51, "0%-25%", both(2), False),  # BIRAD 2: no images
            ("BC019914", 2018, dt.date(2018, 4, 24), 45, "26%-50%", both(1), True),
            ("BC0020281", 2018, None, 49, "51%-75%", both(3), False)]  # no study date
    rows, seen = [], set()
    for pid, year, date, age, dens_cell, birads, twice in plan:
        label = KAU_DENSITY.get(dens_cell.replace(" ", ""))
        for side in ("R", "L"):
            for view in ("CC", "MLO"):
                folder = f"BIRAD {birads[side]}"
                stem = f"{year}_{pid}_ {view}_{side}"
                rel = f"mammograms/{folder}/{stem}"
                rows.append([date, pid, age, side, view, dens_cell, folder, rel + ".dcm"])
                if twice:
                    rows.append([date + dt.timedelta(days=-37), pid, age, side, view, dens_cell, folder, rel + ".dcm"])
                    unlabelled["duplicate_row"] += 1
                if birads[side] == 2:
                    unlabelled["image_missing"] += 1
                    continue
                if label is None:
                    unlabelled["ambiguous_density"] += 1
                path = root / (rel + ".jpg")
                assert path not in seen
                seen.add(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_pixels8(_rng(seed, "kau", rel), label)).save(path, quality=92)
                images.add(path, pid, label, view)
    table = _write_kau_xlsx(root / "correctSheetlast.xlsx", rows)
    quirks = ["first sheet is the summary 'tabel '; data is in sheet 'correctSheet'",
              "column names with a trailing space, a double space and an embedded newline",
              "Image path ends in .dcm but the files are .jpg; space before the view in file names",
              "BIRAD 2 rows have no image folder", "'26% -50%' typo (read as B); '0%-50%' ambiguous",
              "one woman with two studies and two densities; one woman listed twice",
              "a breast-level BI-RADS: one woman's breasts are in BIRAD 1 and BIRAD 5",
              "a =COUNT() formula and stray numbers in unnamed columns below/beside the data"]
    return images.summary("kau_bcmd", root, unlabelled, [table], quirks)


def _xlsx_cell(ref: str, value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, tuple):  # (formula, cached value), as Excel saves it
        return f'<c r="{ref}"><f>{escape(value[0].lstrip("="))}</f><v>{value[1]}</v></c>'
    if isinstance(value, dt.date):
        serial = (value - dt.date(1899, 12, 30)).days
        return f'<c r="{ref}" s="1"><v>{serial}</v></c>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<c r="{ref}"><v>{value}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(str(value))}</t></is></c>'


def _xlsx_sheet(rows: list[list]) -> str:
    cols = "ABCDEFGHIJKLMNOP"
    body = []
    for r, row in enumerate(rows, start=1):
        cells = "".join(_xlsx_cell(f"{cols[c]}{r}", v) for c, v in enumerate(row))
        body.append(f'<row r="{r}">{cells}</row>')
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f'<sheetData>{"".join(body)}</sheetData></worksheet>')


def _write_kau_xlsx(path: Path, rows: list[list]) -> Path:
    """Write correctSheetlast.xlsx with the standard library (SpreadsheetML in a zip)."""
    n = len(rows)
    data = [KAU_COLUMNS] + [r + [None, None, None, None] for r in rows]
    data[1][10] = 4  # stray numbers in the unnamed columns, as in the real sheet
    data[4][11] = 76
    # the real sheet ends (row 1047845) with =COUNT over the age column; pandas reads its cached
    # value as one more row whose 'Patient age ' is the row count and everything else blank
    data += [[None] * 8, [None] * 8, [None, None, (f"=COUNT(C2:C{n + 3})", sum(r[2] is not None for r in rows))]]
    counts = Counter(r[6] for r in rows)
    summary = [["ASSESEMENT ", "number of cases ", "ASSESEMENT ", "number of case of doctor anotation"]]
    summary += [[f"BIRAD {b}", counts.get(f"BIRAD {b}", 0), f"BIRAD {b}", 0] for b in range(0, 6)]
    sheets = [("tabel ", _xlsx_sheet(summary)), ("correctSheet", _xlsx_sheet(data))]
    ns = "http://schemas.openxmlformats.org"
    files = {
        "[Content_Types].xml":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Types xmlns="{ns}/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            + "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
                      'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                      for i in range(1, len(sheets) + 1)) + '</Types>',
        "_rels/.rels":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<workbook xmlns="{ns}/spreadsheetml/2006/main" xmlns:r="{ns}/officeDocument/2006/relationships">'
            '<sheets>' + "".join(f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>'
                                 for i, (name, _) in enumerate(sheets, start=1)) + '</sheets></workbook>',
        "xl/_rels/workbook.xml.rels":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Relationships xmlns="{ns}/package/2006/relationships">'
            + "".join(f'<Relationship Id="rId{i}" Type="{ns}/officeDocument/2006/relationships/worksheet" '
                      f'Target="worksheets/sheet{i}.xml"/>' for i in range(1, len(sheets) + 1))
            + f'<Relationship Id="rId{len(sheets) + 1}" Type="{ns}/officeDocument/2006/relationships/styles" '
              'Target="styles.xml"/></Relationships>',
        "xl/styles.xml":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<styleSheet xmlns="{ns}/spreadsheetml/2006/main">'
            '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
            '<fills count="2"><fill><patternFill patternType="none"/></fill>'
            '<fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            '<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
            '</styleSheet>',
    }
    for i, (_, xml) in enumerate(sheets, start=1):
        files[f"xl/worksheets/sheet{i}.xml"] = xml
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2021, 10, 25, 0, 0, 0)), text)
    return path


MAKERS = {"vindr": make_vindr, "rsna": make_rsna, "cbis_ddsm": make_cbis, "inbreast": make_inbreast,
          "embed": make_embed, "kau_bcmd": make_kau}
