"""How a scan groups images and what it says about the grouping, once each image's header is
read: a DICOM PatientID that one value fills (a placeholder), the --views filter, and patient ids
that are unique per image (a per-view id: a leakage risk, said with the fix)."""

from __future__ import annotations

from collections import Counter

from mammo_tui.data.listing import Candidate, view_category
from mammo_tui.data.records import (GROUP_SOURCE_LABELS, PLACEHOLDER_IDS, PLACEHOLDER_MIN_ROWS, PLACEHOLDER_SHARE,
                                    ImageInfo, ImageRecord, Problem)


def view_of(candidate: Candidate, info: ImageInfo | None) -> str:
    return candidate.view or (view_category(info.view) if info and info.view else "")


def drop_constant_patient(usable: list[Candidate], patient_of: dict[str, str]) -> list[str]:
    """One DICOM PatientID on most images (a site's dummy value) is no patient: not used, said."""
    relying = [patient_of[c.share_key] for c in usable if not c.group and c.share_key in patient_of]
    constant = placeholder_ids(relying)  # digests: only the one-value-on-most rule can apply
    if not constant:
        return []
    n = sum(1 for value in relying if value in constant)
    for key in [k for k, v in patient_of.items() if v in constant]:
        del patient_of[key]
    return [f"WARNING: {n} of {len(relying)} images share one DICOM PatientID: a placeholder, not a patient; "
            "those images are grouped by the next source (an accession, a group pattern, else each image alone)"]


def placeholder_ids(values: list[str]) -> set[str]:
    """The values of a patient-id column that are not patient ids: the usual placeholder words, and
    one value that fills most of the rows (a constant is no id)."""
    counts = Counter(v.strip() for v in values)
    found = {v for v in counts if v.lower() in PLACEHOLDER_IDS}
    if len(values) >= PLACEHOLDER_MIN_ROWS and counts:
        value, n = counts.most_common(1)[0]
        if n > PLACEHOLDER_SHARE * len(values):
            found.add(value)
    return found


def row_prefix(row: int) -> str:
    return f"row {row}: " if row else ""


def filter_views(views: str | None, usable: list[Candidate], infos: dict[str, ImageInfo],
                 problems: list[Problem]) -> list[Candidate]:
    """--views CC,MLO: images of other views are left out (counted); images of unknown view stay."""
    if not views:
        return usable
    wanted = {view_category(v) for v in views.split(",") if v.strip()}
    kept = []
    for c in usable:
        view = view_of(c, infos.get(c.path))
        if view and view not in wanted:
            reason = f"view {view} is not one of --views {views}"
            problems.append(Problem("view_excluded", f"{row_prefix(c.row)}{c.shown}: {reason}; left out",
                                    row=c.row or None, path=c.path, reason=reason))
            infos.pop(c.path, None)
            continue
        kept.append(c)
    return kept


UNIQUE_ID_MIN_IMAGES = 6  # below this, ids unique per image are unremarkable


def unique_id_warnings(records: list[ImageRecord], group_sources: dict[str, int],
                       study_of: dict[str, str]) -> list[str]:
    """A patient id that names one image only is a per-image id (CBIS-DDSM's DICOM PatientID names one
    view): views of one woman would land on both sides of the split. Said loudly, with the fix."""
    found = []
    for source in ("dicom_patient_id", "patient_id_column"):
        if not group_sources.get(source):
            continue
        label = GROUP_SOURCE_LABELS[source]
        # the records grouped by this source: their group count equals their image count
        chosen = [r for r in records if _source_of(r, source, group_sources)]
        if len(chosen) < UNIQUE_ID_MIN_IMAGES or len({r.group for r in chosen}) < len(chosen):
            continue
        studies = {study_of[r.path] for r in chosen if r.path in study_of}
        grouped = (f" while the study (StudyInstanceUID / study column) groups them into {len(studies)} exams"
                   if studies and len(studies) < len(chosen) else "")
        found.append(f"WARNING: leakage risk: the {label} is unique per image ({len(chosen)} images, "
                     f"{len(chosen)} ids){grouped}: it names a view, not a woman, so views of one patient can land "
                     "on both sides of the split. Fix: group by the metadata's patient column (--patient-col NAME, "
                     "or the dataset's layout: --layout NAME), or pass --group-pattern REGEX.")
    return found


def _source_of(record: ImageRecord, source: str, group_sources: dict[str, int]) -> bool:
    # one source only is the common case; with mixed sources the check is skipped (cannot attribute)
    return len(group_sources) == 1 and source in group_sources
