"""The three dataset inputs -> one ValidationReport (usable records + every problem, before training).

1. Reference layout: CSV `AccessionNumber,Classification` + a DICOM root with one folder per
   accession; every image in the folder is used (a 4-view exam is 4 images).
2. Generic CSV: `image_path,label[,patient_id][,view]`, paths relative to the CSV's folder.
3. Folders: one sub-folder per class (A/ B/ C/ D/ or 1/ 2/ 3/ 4/, any case).

Scanning is two passes: list candidate images from the CSV/folders (labels, paths, duplicates),
then probe each image header. Nothing is dropped silently: each removed row/image has a Problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mammo_tui.data.records import (
    ImageInfo,
    ImageReadError,
    ImageRecord,
    Problem,
    ValidationReport,
    patient_digest,
)
from mammo_tui.data.table import Table, read_table
from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES, parse_label

Progress = Callable[[int, int], None]

REFERENCE_COLUMNS = ("AccessionNumber", "Classification")
GENERIC_COLUMNS = ("image_path", "label")
# Files that live next to images but are not images: skipped when listing folders (and noted).
_NOT_IMAGE_SUFFIXES = {".txt", ".csv", ".tsv", ".json", ".xml", ".md", ".pdf", ".html", ".htm",
                       ".zip", ".gz", ".log", ".ini", ".db", ".py", ".yaml", ".yml", ".toml"}
_NOT_IMAGE_NAMES = {"DICOMDIR", "Thumbs.db", "desktop.ini"}


@dataclass
class DatasetSpec:
    csv: str | None = None  # reference CSV (with dicom_root) or generic image_path,label CSV
    dicom_root: str | None = None
    images: str | None = None  # folder with one sub-folder per class
    # regex on an image's path (relative to the CSV's folder / the class-folder root); its first
    # group (or whole match) names the patient, for datasets whose files carry no patient id
    group_pattern: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """What dataset.json / cv.json record (paths as given; callers may make them absolute)."""
        return {"csv": self.csv, "dicom_root": self.dicom_root, "images": self.images,
                "group_pattern": self.group_pattern}

    @classmethod
    def from_dict(cls, data: dict | None) -> "DatasetSpec":
        data = data or {}
        return cls(**{key: data.get(key) for key in ("csv", "dicom_root", "images", "group_pattern")})

    def describe(self) -> str:
        if self.images:
            return f"class folders in {self.images}"
        if self.dicom_root:
            return f"reference CSV {self.csv} + DICOM folders in {self.dicom_root}"
        return f"CSV {self.csv}"


@dataclass
class _Candidate:
    """An image the source lists, before its header is checked."""

    path: str
    label: int
    row: int
    fallback_group: str  # used when no PatientID is known
    share_key: str  # images with the same key share one group (an accession's views)
    group: str | None = None  # known from the CSV (patient_id column)
    view: str = ""


@dataclass
class _Listing:
    kind: str
    rows_read: int
    candidates: list[_Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _inside(root: str, path: str) -> bool:
    # lexical check (no symlink resolution): `../` and absolute paths elsewhere are refused,
    # while a symlink the user placed inside the folder on purpose still works
    return os.path.commonpath([root, path]) == root


def _list_image_files(folder: str) -> tuple[list[str], int]:
    """Image-like files under folder (recursive, sorted), and how many non-image files were skipped."""
    found: list[str] = []
    skipped = 0
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in _NOT_IMAGE_NAMES or Path(name).suffix.lower() in _NOT_IMAGE_SUFFIXES:
                skipped += 1
                continue
            found.append(os.path.join(current, name))
    return found, skipped


def _parse_row_label(value: str, row: int, column: str, problems: list[Problem]) -> int | None:
    label = parse_label(value)
    if label is None:
        shown = "empty" if not value.strip() else repr(value)
        problems.append(Problem("unknown_label", f"row {row}: {column} is {shown}, not a BI-RADS density "
                                "(use A, B, C, D or 1-4); row skipped", row=row))
    return label


def _columns_text(table: Table) -> str:
    return ", ".join(table.columns) or "(none)"


def _require_column(table: Table, name: str, layout: str, needed: tuple[str, ...]) -> int:
    index = table.find_column(name)
    if index is None:
        raise DatasetError(f"{table.path}: missing column '{name}'. The {layout} needs the columns "
                           f"{', '.join(needed)}; this file has: {_columns_text(table)}.")
    return index


def _field(fields: list[str], index: int | None) -> str:
    return fields[index].strip() if index is not None and index < len(fields) else ""


def _list_reference(csv_path: str, dicom_root: str) -> _Listing:
    table = read_table(csv_path)
    if table.find_column("AccessionNumber") is None and table.find_column("image_path") is not None:
        raise DatasetError(f"{table.path}: has image_path/label columns (the generic layout) but "
                           "--dicom-root was given, which needs AccessionNumber,Classification. "
                           "Run without --dicom-root to use the generic layout.")
    accession_col = _require_column(table, "AccessionNumber", "reference layout", REFERENCE_COLUMNS)
    label_col = _require_column(table, "Classification", "reference layout", REFERENCE_COLUMNS)
    root = os.path.abspath(dicom_root)
    if not os.path.isdir(root):
        raise DatasetError(f"DICOM root not found or not a folder: {dicom_root}. It must hold one "
                           "sub-folder per AccessionNumber.")
    listing = _Listing("reference_csv", len(table.rows), notes=list(table.notes))
    first_row_of: dict[str, tuple[int, int]] = {}
    skipped_files = 0
    for row, fields in table.rows:
        accession = _field(fields, accession_col)
        label = _parse_row_label(_field(fields, label_col), row, "Classification", listing.problems)
        if label is None:
            continue
        if not accession:
            listing.problems.append(Problem("missing_file", f"row {row}: AccessionNumber is empty; row skipped",
                                            row=row))
            continue
        folder = os.path.normpath(os.path.join(root, accession))
        if not _inside(root, folder) or folder == root:
            listing.problems.append(Problem("outside_root", f"row {row}: AccessionNumber {accession!r} points "
                                            f"outside the DICOM root {root}; row skipped", row=row))
            continue
        if accession in first_row_of:
            first_row, first_label = first_row_of[accession]
            clash = "" if first_label == label else (
                f" with label {CLASS_NAMES[first_label]} there, {CLASS_NAMES[label]} here; the first is kept")
            listing.problems.append(Problem("duplicate_path", f"row {row}: AccessionNumber {accession} is "
                                            f"already listed on row {first_row}{clash}; row skipped", row=row))
            continue
        first_row_of[accession] = (row, label)
        if not os.path.isdir(folder):
            listing.problems.append(Problem("missing_file", f"row {row}: no folder {folder} for AccessionNumber "
                                            f"{accession}; row skipped", row=row, path=folder))
            continue
        files, skipped = _list_image_files(folder)
        skipped_files += skipped
        if not files:
            listing.problems.append(Problem("missing_file", f"row {row}: folder {folder} has no image files; "
                                            "row skipped", row=row, path=folder))
            continue
        for path in files:
            listing.candidates.append(_Candidate(path, label, row, fallback_group=f"acc-{accession}",
                                                 share_key=f"acc:{accession}"))
    if skipped_files:
        listing.notes.append(f"{skipped_files} non-image files (text, CSV, DICOMDIR, hidden) in accession "
                             "folders were ignored")
    return listing


def _list_generic(csv_path: str) -> _Listing:
    table = read_table(csv_path)
    if table.find_column("image_path") is None and table.find_column("AccessionNumber") is not None:
        raise DatasetError(f"{table.path}: has AccessionNumber/Classification columns (the reference layout) "
                           "but no DICOM root was given. Pass --dicom-root DIR, the folder with one "
                           "sub-folder per AccessionNumber.")
    path_col = _require_column(table, "image_path", "generic layout", GENERIC_COLUMNS)
    label_col = _require_column(table, "label", "generic layout", GENERIC_COLUMNS)
    patient_col = table.find_column("patient_id")
    view_col = table.find_column("view")
    root = os.path.dirname(os.path.abspath(csv_path))
    listing = _Listing("generic_csv", len(table.rows), notes=list(table.notes))
    first_row_of: dict[str, int] = {}
    for row, fields in table.rows:
        value = _field(fields, path_col)
        label = _parse_row_label(_field(fields, label_col), row, "label", listing.problems)
        if label is None:
            continue
        if not value:
            listing.problems.append(Problem("missing_file", f"row {row}: image_path is empty; row skipped", row=row))
            continue
        if os.sep == "/":
            value = value.replace("\\", "/")  # a CSV written on Windows, read on Linux/macOS
        path = os.path.normpath(os.path.join(root, value))
        if not _inside(root, path):
            listing.problems.append(Problem("outside_root", f"row {row}: image_path {value!r} is outside the CSV's "
                                            f"folder {root}; only files under it are read; row skipped", row=row))
            continue
        key = os.path.normcase(path)
        if key in first_row_of:
            listing.problems.append(Problem("duplicate_path", f"row {row}: {value} is already listed on row "
                                            f"{first_row_of[key]}; row skipped", row=row, path=path))
            continue
        first_row_of[key] = row
        if not os.path.isfile(path):
            listing.problems.append(Problem("missing_file", f"row {row}: image {value} not found ({path}); "
                                            "row skipped", row=row, path=path))
            continue
        patient = _field(fields, patient_col)
        relative = os.path.relpath(path, root)
        listing.candidates.append(_Candidate(
            path, label, row, fallback_group=f"img-{relative}", share_key=f"path:{key}",
            group=patient_digest(patient) if patient else None, view=_field(fields, view_col)))
    return listing


def _list_folders(images: str) -> _Listing:
    root = os.path.abspath(images)
    if not os.path.isdir(root):
        raise DatasetError(f"Images folder not found or not a folder: {images}. It must hold one sub-folder "
                           "per class: A/ B/ C/ D/ (or 1/ 2/ 3/ 4/).")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    class_dirs = [(e, parse_label(e.name)) for e in entries if e.is_dir() and not e.name.startswith(".")]
    used = [(e, label) for e, label in class_dirs if label is not None]
    if not used:
        found = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries[:10]) or "nothing"
        raise DatasetError(f"{root}: no class folders. Put the images in sub-folders named A, B, C, D "
                           f"(or 1, 2, 3, 4); found: {found}.")
    listing = _Listing("folders", 0)
    ignored = [e.name for e, label in class_dirs if label is None]
    if ignored:
        listing.notes.append(f"folders that are not a class were ignored: {', '.join(ignored)}")
    loose = [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
    if loose:
        listing.notes.append(f"{len(loose)} files directly in {root} (not in a class folder) were ignored")
    skipped_files = 0
    for entry, label in used:
        files, skipped = _list_image_files(entry.path)
        skipped_files += skipped
        for path in files:
            stem = Path(path).stem
            listing.candidates.append(_Candidate(path, label, 0, fallback_group=stem, share_key=f"path:{path}"))
    if skipped_files:
        listing.notes.append(f"{skipped_files} non-image files (text, CSV, hidden) in class folders were ignored")
    listing.rows_read = len(listing.candidates)
    return listing


def _list_candidates(spec: DatasetSpec) -> _Listing:
    if spec.images and (spec.csv or spec.dicom_root):
        raise DatasetError("Give either an images folder or a label CSV (with --dicom-root for the "
                           "reference layout), not both.")
    if spec.images:
        return _list_folders(spec.images)
    if spec.csv and spec.dicom_root:
        return _list_reference(spec.csv, spec.dicom_root)
    if spec.csv:
        return _list_generic(spec.csv)
    if spec.dicom_root:
        raise DatasetError(f"--dicom-root {spec.dicom_root} needs the label CSV with AccessionNumber,"
                           "Classification (--csv FILE).")
    raise DatasetError("No dataset given: pass a label CSV (--csv, plus --dicom-root for the reference "
                       "layout), an images folder with A/ B/ C/ D/ sub-folders, or use the demo dataset.")


def _row_prefix(row: int) -> str:
    return f"row {row}: " if row else ""


def _nothing_usable(spec: DatasetSpec, listing: _Listing, problems: list[Problem]) -> DatasetError:
    if not listing.rows_read:
        return DatasetError(f"{spec.describe()}: no rows / images found. Check that the CSV has data rows "
                            "or that the class folders contain images.")
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    lines = [f"{spec.describe()}: none of the {listing.rows_read} rows/images is usable."]
    for kind, n in counts.items():
        example = next(p for p in problems if p.kind == kind)
        lines.append(f"  {kind}: {n} (e.g. {example.message})")
    lines.append("Fix the problems above (paths are relative to the CSV's folder) and run again.")
    return DatasetError("\n".join(lines))


def scan_dataset(spec: DatasetSpec, check_images: bool = True, progress: Progress | None = None) -> ValidationReport:
    """Read the dataset's listing and (when check_images) every image header; report every problem.

    Raises DatasetError when nothing can be read (missing CSV, missing column, 0 usable images).
    Without check_images no image is opened: groups fall back to the accession / path / file stem,
    because PatientID lives in the DICOM headers.
    """
    listing = _list_candidates(spec)
    if check_images:
        from mammo_tui.data.images import probe  # pydicom/cv2 load only when images are read
    problems = list(listing.problems)
    notes = list(listing.notes)
    infos: dict[str, ImageInfo] = {}
    usable: list[_Candidate] = []
    patient_of: dict[str, str] = {}  # share_key -> patient digest from a DICOM header
    total = len(listing.candidates)
    if progress:
        progress(0, total)
    for done, candidate in enumerate(listing.candidates, start=1):
        if check_images:
            try:
                info, patient = probe(candidate.path)
            except ImageReadError as error:
                problems.append(Problem(error.kind, _row_prefix(candidate.row) + error.message + "; image skipped",
                                        row=candidate.row or None, path=candidate.path))
                info = None
            if info is not None:
                infos[candidate.path] = info
                usable.append(candidate)
                if patient:
                    patient_of.setdefault(candidate.share_key, patient)
        elif os.path.isfile(candidate.path):
            usable.append(candidate)
        else:
            problems.append(Problem("missing_file", f"{_row_prefix(candidate.row)}{candidate.path}: file not found; "
                                    "image skipped", row=candidate.row or None, path=candidate.path))
        if progress:
            progress(done, total)
    if not check_images:
        notes.append("image headers were not read: groups come from the accession / path, not PatientID")

    records = [
        ImageRecord(
            path=c.path,
            label=c.label,
            group=c.group or patient_of.get(c.share_key) or c.fallback_group,
            row=c.row,
            view=c.view,
        )
        for c in usable
    ]
    if not records:
        raise _nothing_usable(spec, listing, problems)
    present = {r.label for r in records}
    for index, name in enumerate(CLASS_NAMES):
        if index not in present:
            problems.append(Problem("empty_class", f"class {name} has no usable images: the model cannot learn "
                                    f"it; add images of class {name} (or check the labels)"))
    return ValidationReport(
        source=spec.describe(),
        kind=listing.kind,
        rows_read=listing.rows_read,
        records=records,
        problems=problems,
        image_infos=infos,
        notes=notes,
    )
