"""The three dataset inputs -> one ValidationReport (usable records + every problem, before training).

1. Reference layout: CSV `AccessionNumber,Classification` + a DICOM root with one folder per
   accession; every image in the folder is used (a 4-view exam is 4 images).
2. Generic CSV: `image_path,label[,patient_id][,accession][,view]`, paths relative to the CSV's folder.
3. Folders: one sub-folder per class (A/ B/ C/ D/ or 1/ 2/ 3/ 4/, any case); listed in folders.py.

Scanning is two passes: list candidate images from the CSV/folders (labels, paths, duplicates),
then probe each image header and hash its bytes. Nothing is dropped silently: each removed
row/image has a Problem.

Groups (the unit of the group split: no patient on both sides), per image, first source that
gives one: a `patient_id` column; the DICOM PatientID; an `accession` / `AccessionNumber` column
(generic CSV) or the accession folder (reference layout); `DatasetSpec.group_pattern`; else one
group per image, counted (`ValidationReport.group_sources["per_image"]`) and warned about loudly.
Every id goes through records.patient_digest: no raw id reaches a group. Identical file content
listed twice is a `duplicate_content` warning (a leakage risk when the copies' groups differ).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mammo_tui.data.records import (
    GROUP_SOURCE_LABELS,
    PER_IMAGE,
    ImageInfo,
    ImageRecord,
    Problem,
    ValidationReport,
    patient_digest,
)
from mammo_tui.data.folders import list_folders, list_image_files
from mammo_tui.data.grouping import drop_constant_patient, filter_views, unique_id_warnings, view_of
from mammo_tui.data.grouping import row_prefix as _row_prefix
from mammo_tui.data.listing import Candidate as _Candidate
from mammo_tui.data.listing import Listing as _Listing
from mammo_tui.data.listing import escapes as _escapes
from mammo_tui.data.listing import inside as _inside
from mammo_tui.data.listing import link_out_message as _link_out_message
from mammo_tui.data.listing import slashes as _slashes
from mammo_tui.data.table import Table, read_table
from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES, parse_label

Progress = Callable[[int, int], None]

REFERENCE_COLUMNS = ("AccessionNumber", "Classification")
GENERIC_COLUMNS = ("image_path", "label")
ACCESSION_COLUMNS = ("accession", "AccessionNumber")  # generic CSV: the group when there is no patient_id


@dataclass
class DatasetSpec:
    csv: str | None = None  # reference CSV (with dicom_root) or generic image_path,label CSV
    dicom_root: str | None = None
    images: str | None = None  # folder with one sub-folder per class
    # regex on an image's path (relative to the CSV's folder / the class-folder root); its first
    # group (or whole match) names the patient, for datasets whose files carry no patient id
    group_pattern: str | None = None
    # a dataset as downloaded: its top folder, read through a description (a built-in layout,
    # recognised or named, or the user's TOML); the description is recorded whole (to_dict), so a
    # run reads the data the same way on --resume, eval, cv and sweep
    root: str | None = None
    layout: str | None = None  # a built-in layout's name or a description file; None: recognise it
    description: dict | None = None  # the Description's record, once resolved
    views: str | None = None  # "CC,MLO": only these views are used (others counted, left out)

    _FIELDS = ("csv", "dicom_root", "images", "group_pattern", "root", "layout", "description", "views")

    def to_dict(self) -> dict:
        """What dataset.json / cv.json record (paths as given; callers may make them absolute)."""
        data = {key: getattr(self, key) for key in self._FIELDS}
        # an old run's record has the first four keys only: keep it comparable when nothing new is set
        return {key: value for key, value in data.items() if value is not None or key in self._FIELDS[:4]}

    @classmethod
    def from_dict(cls, data: dict | None) -> "DatasetSpec":
        data = data or {}
        return cls(**{key: data.get(key) for key in cls._FIELDS})

    def paths(self) -> dict[str, str]:
        """The file / folder fields that are set: {"csv": ..., "dicom_root": ...}."""
        return {key: value for key, value in (("csv", self.csv), ("dicom_root", self.dicom_root),
                                              ("images", self.images), ("root", self.root)) if value}

    def absolute(self) -> "DatasetSpec":
        """The same dataset with absolute paths: what a run records, so that --resume works from
        any working directory."""
        full = {key: str(Path(value).expanduser().resolve()) for key, value in self.paths().items()}
        return DatasetSpec.from_dict({**self.to_dict(), **full})

    def resolved(self) -> "DatasetSpec":
        """With the description read (layout recognised, TOML loaded): what a run records."""
        if self.root is None or self.description is not None:
            return self
        from mammo_tui.data.layouts import load_layout, recognise

        found = load_layout(self.layout) if self.layout else recognise(self.root)
        if found is None:
            return self
        return DatasetSpec.from_dict({**self.to_dict(), "description": found.to_dict()})

    def image_root(self) -> str:
        """The folder the images are listed relative to (relocating a run matches paths under it)."""
        return self.images or self.dicom_root or self.root or str(Path(self.csv or ".").parent)

    def describe(self) -> str:
        if self.description:
            name = self.description.get("title") or self.description.get("name")
            return f"{name} layout in {self.root}"
        if self.root:
            return f"dataset folder {self.root}"
        if self.images:
            return f"class folders in {self.images}"
        if self.dicom_root:
            return f"reference CSV {self.csv} + DICOM folders in {self.dicom_root}"
        return f"CSV {self.csv}"


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
    real_root = os.path.realpath(root)
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
        target = _escapes(real_root, folder)
        if target:
            listing.problems.append(Problem("outside_root", f"row {row}: " + _link_out_message(
                f"the folder of AccessionNumber {accession}", target, root, "DICOM root") + "; row skipped",
                row=row, path=folder))
            continue
        files, skipped, escaped = list_image_files(folder, real_root)
        skipped_files += skipped
        for path, target in escaped:
            listing.problems.append(Problem("outside_root", f"row {row}: " + _link_out_message(
                _slashes(os.path.relpath(path, root)), target, root, "DICOM root") + "; image skipped",
                row=row, path=path))
        if not files:
            listing.problems.append(Problem("missing_file", f"row {row}: folder {folder} has no image files; "
                                            "row skipped", row=row, path=folder))
            continue
        for path in files:
            listing.candidates.append(_Candidate(path, label, row, fallback_group=f"acc-{accession}",
                                                 share_key=f"acc:{accession}",
                                                 relative=_slashes(os.path.relpath(path, root)),
                                                 fallback_source="accession_folder"))
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
    accession_col = next((i for i in map(table.find_column, ACCESSION_COLUMNS) if i is not None), None)
    view_col = table.find_column("view")
    root = os.path.dirname(os.path.abspath(csv_path))
    real_root = os.path.realpath(root)
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
        target = _escapes(real_root, path)
        if target:
            listing.problems.append(Problem("outside_root", f"row {row}: image_path " + _link_out_message(
                repr(value), target, root, "CSV's folder") + "; row skipped", row=row, path=path))
            continue
        patient = _field(fields, patient_col)
        accession = _field(fields, accession_col)
        relative = os.path.relpath(path, root)
        listing.candidates.append(_Candidate(
            path, label, row, fallback_group=f"img-{relative}", share_key=f"path:{key}",
            relative=_slashes(relative), group=patient_digest(patient) if patient else None,
            # namespaced: an accession (one exam) never merges with a patient of the same id
            accession_group=patient_digest(f"accession:{accession}") if accession else None,
            view=_field(fields, view_col)))
    return listing


def _list_candidates(spec: DatasetSpec) -> _Listing:
    if spec.root is not None:
        resolved = spec.resolved()
        if resolved.description is None:
            raise DatasetError(unknown_layout_message(spec.root))
        from mammo_tui.data.described import list_described
        from mammo_tui.data.description import Description

        return list_described(Description.from_record(resolved.description), spec.root)
    if spec.images and (spec.csv or spec.dicom_root):
        raise DatasetError("Give either an images folder or a label CSV (with --dicom-root for the "
                           "reference layout), not both.")
    if spec.images:
        return list_folders(spec.images)
    if spec.csv and spec.dicom_root:
        return _list_reference(spec.csv, spec.dicom_root)
    if spec.csv:
        return _list_generic(spec.csv)
    if spec.dicom_root:
        raise DatasetError(f"--dicom-root {spec.dicom_root} needs the label CSV with AccessionNumber,"
                           "Classification (--csv FILE).")
    raise DatasetError("No dataset given: pass a label CSV (--csv, plus --dicom-root for the reference "
                       "layout), an images folder with A/ B/ C/ D/ sub-folders, or use the demo dataset.")


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


def compile_group_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """The group pattern as a compiled regex (None when not given); a DatasetError names a bad one."""
    if pattern is None:
        return None
    example = "e.g. '^(P\\d+)_' takes P12 from P12_L-CC.png"
    if not pattern.strip():
        raise DatasetError(f"--group-pattern is empty. Give a regular expression whose first group (...) "
                           f"names the patient in each image's path, {example}.")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise DatasetError(f"--group-pattern '{pattern}' is not a valid regular expression ({error}). Give "
                           f"one whose first group (...) names the patient in each image's path, {example}; "
                           "quote it in the shell.") from None


def _pattern_id(regex: re.Pattern[str], relative: str) -> str | None:
    """The patient id the pattern finds in a path: its first group, or the whole match without groups."""
    match = regex.search(relative)
    if match is None:
        return None
    value = match.group(1) if regex.groups else match.group(0)
    return value.strip() if value and value.strip() else None


def unknown_layout_message(root: str) -> str:
    from mammo_tui.data.layouts import layout_names

    return (f"{root}: not a dataset layout mammo-tui recognises (built-in: {', '.join(layout_names())}), and no "
            "class folders (A/ B/ C/ D/). Say how to read it: --layout NAME, --dataset FILE.toml (a description; "
            "copy one from `mammo-tui layouts`), --csv FILE with --image-col / --path-template and --label-col, or "
            "for the reference layout --csv labels.csv --dicom-root DIR.")


def _group_of(candidate: _Candidate, patient_of: dict[str, str],
              regex: re.Pattern[str] | None) -> tuple[str | None, str]:
    """(group, source key) by precedence; group None when only the pattern could give one and does not.
    A patient column, then an explicit group pattern: what the user says beats what is found
    (a description's study, the DICOM PatientID, an accession)."""
    if candidate.group and candidate.group_source == "patient_id_column":
        return candidate.group, candidate.group_source
    if regex is not None:
        found = _pattern_id(regex, candidate.relative)
        if found:
            return patient_digest(found), "group_pattern"
    if candidate.group:
        return candidate.group, candidate.group_source
    if candidate.share_key in patient_of:
        return patient_of[candidate.share_key], "dicom_patient_id"
    if candidate.accession_group:
        return candidate.accession_group, "accession_column"
    if candidate.fallback_source != PER_IMAGE:
        return candidate.fallback_group, candidate.fallback_source
    if regex is not None:
        return None, "group_pattern"
    return candidate.fallback_group, PER_IMAGE


def _shown(record: ImageRecord, relative: str) -> str:
    return f"row {record.row} ({relative})" if record.row else relative


def _duplicate_content(records: list[ImageRecord], hashes: dict[str, str],
                       relative_of: dict[str, str]) -> tuple[list[Problem], int]:
    """One duplicate_content warning per image whose bytes an earlier image already has, and how
    many of them have another group than that earlier image (leakage risks)."""
    first_of: dict[str, ImageRecord] = {}  # content sha1 -> first image with it (bounded by N)
    found: list[Problem] = []
    leaks = 0
    for record in records:
        digest = hashes.get(record.path)
        if digest is None:
            continue
        first = first_of.setdefault(digest, record)
        if first is record:
            continue
        this, other = _shown(record, relative_of[record.path]), _shown(first, relative_of[first.path])
        labels = ("" if first.label == record.label else
                  f"; their labels differ ({CLASS_NAMES[first.label]} there, {CLASS_NAMES[record.label]} here)")
        if first.group != record.group:
            leaks += 1
            message = (f"{this}: identical bytes to {other}, which has another patient (group): leakage risk, "
                       f"the same image can land on both sides of the split{labels}; remove one copy or give "
                       "both the same patient id")
        else:
            message = (f"{this}: identical bytes to {other} (same patient): the image counts twice{labels}; "
                       "remove one copy")
        found.append(Problem("duplicate_content", message, row=record.row or None, path=record.path))
    return found, leaks


def _check_problem(candidate: _Candidate, outcome: tuple) -> Problem:
    """The Problem for a failed cache.check_image outcome."""
    prefix, shown = _row_prefix(candidate.row), candidate.path
    if outcome[0] == "image":
        kind, message = outcome[1], prefix + outcome[2] + "; image skipped"
    elif outcome[0] == "os":
        kind, message = "unreadable", f"{prefix}{shown}: cannot read the file ({outcome[1]}); image skipped"
    else:
        kind, message = "unreadable", f"{prefix}{shown}: cannot read the image ({outcome[1]}: {outcome[2]}); image skipped"
    return Problem(kind, message, row=candidate.row or None, path=candidate.path)


def scan_dataset(spec: DatasetSpec, check_images: bool = True, progress: Progress | None = None,
                 workers: int | None = None, preprocessing=None) -> ValidationReport:
    """Read the dataset's listing and (when check_images) every image; report every problem.

    Raises DatasetError when nothing can be read (missing CSV, missing column, 0 usable images) or
    when the group pattern is not a valid regex. With check_images every file's header is probed,
    its bytes hashed (cache.content_hash: memoised and indexed on disk, so the preprocess cache does
    not read them again) to find identical content listed twice, and its pixels decoded the way
    training decodes them (cache.check_decodes: finite, one 2-D frame; remembered per content, so
    the next scan of the same data decodes nothing), in `workers` processes (<= 0 or None: all
    cores but one). Given the preprocessing (preprocessing.Preprocessing),
    that decode also stores the preprocessed cache entry, so a first run decodes each image once. Any exception from one image is a Problem.
    Without check_images no image is opened: groups cannot come from PatientID (it lives in the
    DICOM headers) and duplicates are not found.
    """
    regex = compile_group_pattern(spec.group_pattern)  # before any file is read: a typo fails fast
    listing = _list_candidates(spec)
    problems = list(listing.problems)
    notes = list(listing.notes)
    infos: dict[str, ImageInfo] = {}
    hashes: dict[str, str] = {}  # path -> sha1 of the file's bytes
    usable: list[_Candidate] = []
    patient_of: dict[str, str] = {}  # share_key -> patient digest from a DICOM header
    total = len(listing.candidates)
    if progress:
        progress(0, total)
    if check_images:
        # numpy/pydicom/cv2 load only when images are read
        from functools import partial

        from mammo_tui.data.cache import check_image, default_cache_root, imap_workers

        job = partial(check_image, root=str(default_cache_root()), preprocessing=preprocessing)
        outcomes = imap_workers(job, [c.path for c in listing.candidates], workers)
    else:
        outcomes = iter(() for _ in listing.candidates)
    for done, (candidate, outcome) in enumerate(zip(listing.candidates, outcomes), start=1):
        if check_images:
            if outcome[0] == "ok":
                _, info, patient, digest = outcome
                infos[candidate.path] = info
                hashes[candidate.path] = digest
                usable.append(candidate)
                if patient:
                    patient_of.setdefault(candidate.share_key, patient)
            else:
                problems.append(_check_problem(candidate, outcome))
        elif os.path.isfile(candidate.path):
            usable.append(candidate)
        else:
            problems.append(Problem("missing_file", f"{_row_prefix(candidate.row)}{candidate.path}: file not found; "
                                    "image skipped", row=candidate.row or None, path=candidate.path))
        if progress:
            progress(done, total)
    if not check_images:
        notes.append("image headers were not read: groups come from the accession / path, not PatientID")

    group_notes = drop_constant_patient(usable, patient_of)
    usable = filter_views(spec.views, usable, infos, problems)
    records: list[ImageRecord] = []
    source_counts: dict[str, int] = {}
    relative_of: dict[str, str] = {}
    study_of: dict[str, str] = {}
    unmatched = 0
    for c in usable:
        group, source = _group_of(c, patient_of, regex)
        if group is None:  # never silently its own group: counted, and the image is left out
            unmatched += 1
            problems.append(Problem("no_group", f"{_row_prefix(c.row)}{c.shown}: the group pattern "
                                    f"'{spec.group_pattern}' finds no patient id in this path; image skipped. "
                                    "Fix the pattern, or give the image a patient_id",
                                    row=c.row or None, path=c.path))
            infos.pop(c.path, None)
            continue
        source_counts[source] = source_counts.get(source, 0) + 1
        relative_of[c.path] = c.shown
        info = infos.get(c.path)
        study = c.study or (info.study if info else "")
        if study:
            study_of[c.path] = study
        records.append(ImageRecord(path=c.path, label=c.label, group=group, row=c.row,
                                   view=view_of(c, info), split=c.split,
                                   laterality=c.laterality or (info.laterality if info else "")))
    group_sources = {key: source_counts[key] for key in GROUP_SOURCE_LABELS if source_counts.get(key)}
    if regex is not None and not unmatched and not group_sources.get("group_pattern") and records:
        given = ", ".join(GROUP_SOURCE_LABELS[key] for key in group_sources)
        notes.append(f"--group-pattern was not needed: every image has a group from {given}")
    group_notes += unique_id_warnings(records, group_sources, study_of)
    if not records:
        raise _nothing_usable(spec, listing, problems)
    duplicates, leakage_risks = _duplicate_content(records, hashes, relative_of)
    problems.extend(duplicates)
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
        group_sources=group_sources,
        leakage_risks=leakage_risks,
        layout=listing.layout,
        mapped=listing.mapped,
        merged_rows=listing.merged,
        group_notes=group_notes,
    )
