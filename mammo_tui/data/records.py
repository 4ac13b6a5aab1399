"""Plain records of a scanned dataset: usable images, problems, header facts, the report.

Pure: no image libraries imported here, so the UI can show a report without loading pydicom.
Nothing in these records carries PHI: groups are digests, headers keep only technical facts.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field

from mammo_tui.labels import CLASS_NAMES

# Problem kinds, in the order the report lists them. Every kind except those in NON_REMOVING_KINDS
# removes the image (or row) it names; `empty_class` is a dataset-level fact and `duplicate_content`
# a warning (identical bytes listed twice: a leakage risk when the copies have different groups).
PROBLEM_KINDS: tuple[str, ...] = (
    "missing_file",
    "outside_root",
    "duplicate_path",
    "unknown_label",
    "unreadable",
    "truncated",
    "no_pixels",
    "unsupported_compression",
    "not_finite",  # decoded pixels (or the rescale that makes them) NaN / infinite
    "multi_frame",  # several frames (e.g. tomosynthesis): which one is the mammogram is unknown
    "too_large",  # over the decompression-bomb pixel limit, or not decodable in the memory there is
    "tiny_image",
    "no_group",
    "label_conflict",  # a joined table gives one image two different densities
    "no_label",  # blank, or a value that is not a density label (EMBED 5, CBIS 0): left out, counted
    "view_excluded",  # not a standard view where the layout (or --views) says so: left out, counted
    "not_downloaded",  # listed, but not in this (partial) download, where the layout allows it
    "empty_class",
    "duplicate_content",
)
# Reported, never removing anything: they do not block training (no --skip-bad-rows needed).
NON_REMOVING_KINDS: frozenset[str] = frozenset({"empty_class", "duplicate_content"})
# Left out and counted, never blocking: a row without a density label, or a view the layout (or
# --views) excludes, is not a mistake to fix; plan and train agree on them (no --skip-bad-rows).
LEFT_OUT_KINDS: frozenset[str] = frozenset({"no_label", "view_excluded", "not_downloaded"})

# Where an image's group (the unit of the group split) came from, in order of precedence; the
# report counts images per source (ValidationReport.group_sources uses these keys).
GROUP_SOURCE_LABELS: dict[str, str] = {
    "patient_id_column": "patient_id column",
    "dicom_patient_id": "DICOM PatientID",
    "accession_column": "accession column",
    "accession_folder": "AccessionNumber (one exam)",
    "study_column": "study column (one exam; the set has no patient id)",
    "group_pattern": "group pattern",
    "per_image": "none: one group per image",
}
PER_IMAGE = "per_image"
# Values that fill a patient-id column (or PatientID) when the id was removed: never a patient.
PLACEHOLDER_IDS = frozenset({"", "removed", "anonymous", "anonymized", "anonymised", "anon", "unknown", "none",
                             "null", "nan", "n/a", "na", "-", "--", "?", "0", "x", "xx", "xxx", "patient",
                             "deidentified", "de-identified"})
PLACEHOLDER_SHARE = 0.5  # one id on more than half of the rows / images (of at least the next) is no id
PLACEHOLDER_MIN_ROWS = 6
# Up to this many images without a patient id (and not all of them) is "a handful": no warning.
UNGROUPED_HANDFUL = 5

# Images smaller than this on either side carry no usable texture.
MIN_IMAGE_SIDE = 16


# Domain prefix of the keyed digest (the key, not this, is what makes it secret).
_GROUP_DOMAIN = "mammo-tui-group:"


def patient_digest(patient_id: str) -> str:
    """The group string for a patient: HMAC under the user's (or dataset's) secret, see privacy.py.
    The same secret gives the same digest (splits reproduce); without it, a digest in splits.csv
    cannot be brute-forced back to an MRN, and the secret never enters a run directory."""
    from mammo_tui.privacy import keyed_digest

    return "pt-" + keyed_digest(_GROUP_DOMAIN + patient_id)[:12]


def patient_digester():
    """patient_digest with the secret read once: for listings of hundreds of thousands of rows."""
    import hashlib
    import hmac

    from mammo_tui.privacy import group_key

    key = group_key()

    def digest(patient_id: str) -> str:
        return "pt-" + hmac.new(key, (_GROUP_DOMAIN + patient_id).encode("utf-8"), hashlib.sha256).hexdigest()[:12]

    return digest


class ImageReadError(Exception):
    """An image cannot be used; `kind` is a problem kind (see PROBLEM_KINDS), the message names the file."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def require_regular_file(path: str) -> None:
    """ImageReadError unless `path` is a regular file. A FIFO blocks the reader forever and a
    device such as /dev/zero never ends: checked before anything opens an image file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError("missing_file", f"{path}: file not found") from None
    except OSError as error:
        raise ImageReadError("unreadable", f"{path}: cannot open ({error.strerror or error})") from None
    if stat.S_ISREG(mode):
        return
    what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise ImageReadError("unreadable", f"{path}: {what}, not an image file; only regular files are read")


@dataclass(frozen=True)
class ImageRecord:
    path: str  # absolute path of one image file
    label: int  # 0..3 (A..D)
    group: str  # patient / accession id: the unit of group splitting (PatientID only as a digest)
    row: int  # 1-based line number in the source CSV (header is line 1); 0 for folder datasets
    view: str = ""  # e.g. "L-CC" when the CSV gives one; CC / MLO / ... from a description or DICOM
    split: str = ""  # "test": the dataset's official test side (held out); "" = train/validation pool
    laterality: str = ""  # L | R | "" (unknown)


@dataclass
class Problem:
    kind: str  # one of PROBLEM_KINDS
    message: str  # names the row / file and what is wrong
    row: int | None = None
    path: str | None = None
    reason: str = ""  # left-out kinds: the reason without the row (what the report counts by)


@dataclass(frozen=True)
class ImageInfo:
    """Facts read from an image header without decoding the pixels."""

    width: int
    height: int
    format: str  # DICOM | PNG | JPEG
    photometric: str = ""  # DICOM PhotometricInterpretation, or the PIL mode for PNG/JPEG
    transfer_syntax: str = ""  # e.g. "JPEG 2000 Image Compression (Lossless Only)"; "" for PNG/JPEG
    modality: str = ""
    bits_stored: int = 0
    frames: int = 1
    view: str = ""  # DICOM ViewPosition (CC, MLO, ...)
    laterality: str = ""  # DICOM ImageLaterality / Laterality
    study: str = ""  # StudyInstanceUID as a digest (which images are one exam)


@dataclass
class ValidationReport:
    source: str  # human description of the input
    kind: str  # reference_csv | generic_csv | folders
    rows_read: int  # CSV data rows (reference/generic) or files found (folders)
    records: list[ImageRecord]  # usable images, bad ones removed (each counted in problems)
    problems: list[Problem]
    image_infos: dict[str, ImageInfo] = field(default_factory=dict)  # path -> header facts
    notes: list[str] = field(default_factory=list)  # informational: encoding, delimiter, fallbacks
    # images per group source (keys of GROUP_SOURCE_LABELS); empty when unknown (a hand-made report)
    group_sources: dict[str, int] = field(default_factory=dict)
    # duplicate_content problems whose copies have different groups: the same image could be on
    # both sides of the split (leakage risk)
    leakage_risks: int = 0
    layout: str = ""  # the dataset description's name (a public layout, or "custom")
    merged_rows: int = 0  # rows repeating an image with its label (one row per finding), merged into it
    mapped: str = ""  # what the description mapped, one line
    # warnings about the grouping itself (placeholder ids, a patient id unique per image while a
    # study groups several images): said by plan, the wizard, the run log and the report
    group_notes: list[str] = field(default_factory=list)

    def blocking_problems(self) -> list[Problem]:
        """Problems that removed an image or row: training stops on them unless --skip-bad-rows."""
        return [p for p in self.problems if p.kind not in NON_REMOVING_KINDS | LEFT_OUT_KINDS]

    def left_out(self) -> dict[str, int]:
        """Rows left out without blocking, by reason (blank label, not a density, excluded view)."""
        reasons: Counter = Counter()
        for p in self.problems:
            if p.kind in LEFT_OUT_KINDS:
                reasons[_reason(p)] += 1
        return dict(reasons.most_common())

    def view_counts(self) -> dict[str, int]:
        """Usable images per view (CC, MLO, other views by name; "unknown" without a view)."""
        counts = Counter(r.view or "unknown" for r in self.records)
        ordered = {v: counts.pop(v) for v in ("CC", "MLO") if v in counts}
        ordered.update(dict(counts.most_common()))
        return ordered

    def test_records(self) -> list[ImageRecord]:
        return [r for r in self.records if r.split == "test"]

    @property
    def ungrouped_images(self) -> int:
        """Usable images without any patient id: each is its own group (one group per image)."""
        return self.group_sources.get(PER_IMAGE, 0)

    def group_source(self) -> str:
        """Where the groups came from, e.g. "DICOM PatientID" or "mixed: patient_id column 40, ..."."""
        sources = {key: n for key, n in self.group_sources.items() if n}
        if not sources:
            return ""
        if len(sources) == 1:
            return GROUP_SOURCE_LABELS.get(next(iter(sources)), next(iter(sources)))
        return "mixed: " + ", ".join(f"{GROUP_SOURCE_LABELS.get(key, key)} {n}" for key, n in sources.items())

    def group_warning(self) -> str | None:
        """The loud warning when images fell back to one group per image (None when at most a handful)."""
        n, total = self.ungrouped_images, len(self.records)
        if n == 0 or (n < total and n <= UNGROUPED_HANDFUL):
            return None
        who = f"all {total} images have" if n == total else f"{n} of {total} images have"
        return (f"WARNING: no patient ids: {who} no patient id, so each is its own group; views of one "
                "patient may land on both sides of the split and validation metrics will be optimistic. "
                "Fix: add a patient_id column (generic CSV), use DICOM files with PatientID, or pass "
                "--group-pattern REGEX (its first group names the patient in each image's path, "
                "e.g. '^(P\\d+)_' for P12_L-CC.png).")

    @property
    def rows_usable(self) -> int:
        """Source rows (or files) that contributed at least one usable image."""
        if self.kind == "folders":
            return len(self.records)
        if self.kind == "described":  # rows of several tables share line numbers: one row per image
            return len(self.records) + self.merged_rows
        return len({record.row for record in self.records})

    def class_counts(self) -> list[int]:
        counts = Counter(record.label for record in self.records)
        return [counts.get(index, 0) for index in range(len(CLASS_NAMES))]

    def problem_counts(self) -> dict[str, int]:
        counts = Counter(problem.kind for problem in self.problems)
        ordered = {kind: counts[kind] for kind in PROBLEM_KINDS if counts.get(kind)}
        ordered.update({kind: n for kind, n in counts.items() if kind not in ordered})
        return ordered

    def summary_lines(self, max_examples: int = 3) -> list[str]:
        """Short lines for the console and the wizard: totals, then each problem kind with examples."""
        counts = self.class_counts()
        lines = [
            f"Dataset: {self.source}",
            f"Rows read: {self.rows_read}, rows usable: {self.rows_usable}, images usable: {len(self.records)}",
            "Images per class: " + ", ".join(f"{name} {n}" for name, n in zip(CLASS_NAMES, counts)),
        ]
        if self.group_sources:
            n_groups = len({record.group for record in self.records})
            lines.append(f"Patients (groups): {n_groups}, from {self.group_source()}")
        warning = self.group_warning()
        if warning:
            lines.append(warning)
        lines.extend(self.group_notes)
        if self.layout:
            lines.insert(1, f"Layout: {self.layout} ({self.mapped})" if self.mapped else f"Layout: {self.layout}")
        if any(r.view for r in self.records):
            lines.append("Views: " + ", ".join(f"{v} {n}" for v, n in self.view_counts().items()))
        tests = self.test_records()
        if tests:
            lines.append(f"Official test side: {len(tests)} images of {len({r.group for r in tests})} patients (groups), "
                         "held out: training and validation never see them")
        left = self.left_out()
        if left:
            lines.append(f"Left out (no usable label or an excluded view): {sum(left.values())} rows: "
                         + "; ".join(f"{reason} {n}" for reason, n in left.items()))
        if self.leakage_risks:
            lines.append(f"WARNING: leakage risk: {self.leakage_risks} images have the same bytes as an image of "
                         "another patient (group), so one image can be on both sides of the split; see "
                         "duplicate_content below")
        problem_counts = self.problem_counts()
        if not problem_counts:
            lines.append("Problems: none")
        for kind, n in problem_counts.items():
            lines.append(f"{kind}: {n}")
            examples = [p for p in self.problems if p.kind == kind][:max_examples]
            lines.extend(f"  - {p.message}" for p in examples)
            if n > len(examples):
                lines.append(f"  ... and {n - len(examples)} more")
        lines.extend(f"Note: {note}" for note in self.notes)
        return lines

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "rows_read": self.rows_read,
            "rows_usable": self.rows_usable,
            "n_images": len(self.records),
            "class_counts": dict(zip(CLASS_NAMES, self.class_counts())),
            "problem_counts": self.problem_counts(),
            "problems": [asdict(p) for p in self.problems],
            "notes": list(self.notes),
            "group_source": self.group_source(),
            "group_sources": dict(self.group_sources),
            "ungrouped_images": self.ungrouped_images,
            "group_warning": self.group_warning(),
            "leakage_risks": self.leakage_risks,
            "layout": self.layout,
            "mapped": self.mapped,
            "group_notes": list(self.group_notes),
            "views": self.view_counts(),
            "left_out": self.left_out(),
            "n_test_images": len(self.test_records()),
            "n_test_groups": len({r.group for r in self.test_records()}),
        }


def _reason(problem: Problem) -> str:
    """The reason of a left-out problem without its row: "'density' is blank", "excluded: C-View"."""
    if problem.reason:
        return problem.reason
    text = problem.message.split(": ", 1)[1] if ": " in problem.message else problem.message
    return text.removesuffix("; left out")
