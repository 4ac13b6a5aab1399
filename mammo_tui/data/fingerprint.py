"""The dataset's fingerprint: the numbers the planner and the wizard show. Pure: reads the report only."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

from mammo_tui.data.records import ValidationReport
from mammo_tui.labels import CLASS_NAMES


@dataclass(frozen=True)
class SizeStats:
    min: int
    median: float
    max: int


@dataclass
class Fingerprint:
    source: str
    kind: str
    n_images: int
    n_patients: int  # distinct groups (patients, else accessions / files): see group_source
    class_counts: list[int]  # A..D
    imbalance_ratio: float  # max/min class count; inf when a class is empty
    width: SizeStats | None  # None when image headers were not read
    height: SizeStats | None
    photometric: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    problem_counts: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0
    rows_usable: int = 0
    # where the groups came from: "DICOM PatientID", "patient_id column", "group pattern",
    # "none: one group per image", or "mixed: <source> <n>, ..."; "" when the report does not say
    group_source: str = ""
    group_sources: dict[str, int] = field(default_factory=dict)  # records.GROUP_SOURCE_LABELS key -> images
    ungrouped_images: int = 0  # images that are their own group (no patient id from any source)
    group_warning: str | None = None  # the loud "no patient ids" warning, when it applies
    duplicate_content: int = 0  # images whose bytes an earlier image has (problem kind duplicate_content)
    leakage_risks: int = 0  # of those, the ones whose earlier copy has another group (leakage risk)
    layout: str = ""  # the dataset description's name (a public layout), "" for the plain inputs
    views: dict[str, int] = field(default_factory=dict)  # CC, MLO, other views by name ("unknown")
    left_out: dict[str, int] = field(default_factory=dict)  # rows without a label / of excluded views, by reason
    n_test_images: int = 0  # the dataset's official test side (held out)
    group_notes: list[str] = field(default_factory=list)  # placeholder ids, per-image ids (leakage)

    def to_dict(self) -> dict:
        """JSON-safe: an infinite imbalance ratio becomes None (a class has no images)."""
        data = asdict(self)
        if not math.isfinite(self.imbalance_ratio):
            data["imbalance_ratio"] = None
        data["class_counts_by_name"] = dict(zip(CLASS_NAMES, self.class_counts))
        return data


def _size_stats(values: list[int]) -> SizeStats | None:
    if not values:
        return None
    return SizeStats(min=min(values), median=float(statistics.median(values)), max=max(values))


def _counts(values: list[str]) -> dict[str, int]:
    return dict(Counter(v for v in values if v).most_common())


def imbalance_ratio(class_counts: list[int]) -> float:
    smallest = min(class_counts)
    return math.inf if smallest == 0 else max(class_counts) / smallest


def fingerprint(report: ValidationReport) -> Fingerprint:
    counts = report.class_counts()
    infos = [report.image_infos[r.path] for r in report.records if r.path in report.image_infos]
    return Fingerprint(
        source=report.source,
        kind=report.kind,
        n_images=len(report.records),
        n_patients=len({r.group for r in report.records}),
        class_counts=counts,
        imbalance_ratio=imbalance_ratio(counts),
        width=_size_stats([i.width for i in infos]),
        height=_size_stats([i.height for i in infos]),
        photometric=_counts([i.photometric for i in infos]),
        transfer_syntaxes=_counts([i.transfer_syntax for i in infos]),
        modalities=_counts([i.modality for i in infos]),
        formats=_counts([i.format for i in infos]),
        problem_counts=report.problem_counts(),
        rows_read=report.rows_read,
        rows_usable=report.rows_usable,
        group_source=report.group_source(),
        group_sources=dict(report.group_sources),
        ungrouped_images=report.ungrouped_images,
        group_warning=report.group_warning(),
        duplicate_content=sum(1 for p in report.problems if p.kind == "duplicate_content"),
        leakage_risks=report.leakage_risks,
        layout=report.layout,
        views=report.view_counts() if any(r.view for r in report.records) else {},
        left_out=report.left_out(),
        n_test_images=len(report.test_records()),
        group_notes=list(report.group_notes),
    )
