"""What a dataset source lists before any image is opened: candidates (an image, its label, row,
group hints, view, split side) and the problems found on the way; and the path rules every source
shares (lexically inside the root, no symlink escape)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from mammo_tui.data.records import PER_IMAGE, Problem


@dataclass
class Candidate:
    """An image the source lists, before its header is checked."""

    path: str
    label: int
    row: int
    fallback_group: str  # used when no source gives a group
    share_key: str  # images with the same key share one group (an accession's views)
    relative: str  # the path a group pattern is matched against ("/" separators); shown in messages
    group: str | None = None  # known from the CSV (patient_id column)
    accession_group: str | None = None  # from an accession column (generic CSV)
    fallback_source: str = PER_IMAGE  # what fallback_group is (reference layout: the accession folder)
    view: str = ""  # CC | MLO | other: X (views.view_category), or "" when unknown
    display: str = ""  # how messages name the file when not `relative` (class folders: A/x.png)
    group_source: str = "patient_id_column"  # what `group` is (a description may give a study or a pattern)
    study: str | None = None  # study / accession digest, when a column gives one (leakage check)
    laterality: str = ""  # L | R | ""
    split: str = ""  # "test": the dataset's official test side; "" otherwise

    @property
    def shown(self) -> str:
        return self.display or self.relative


@dataclass
class Listing:
    kind: str
    rows_read: int
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layout: str = ""  # the description's name, when a description listed the dataset
    mapped: str = ""  # one line: what the description mapped (images, label, patient, view, split)
    merged: int = 0  # rows that repeat an image already listed, with its label (one row per finding)


def slashes(path: str) -> str:
    return path.replace(os.sep, "/") if os.sep != "/" else path


def inside(root: str, path: str) -> bool:
    # lexical check (no symlink resolution): `../` and absolute paths elsewhere are refused,
    # while a symlink the user placed inside the folder on purpose still works
    return os.path.commonpath([root, path]) == root


def escapes(real_root: str, path: str) -> str | None:
    """Where a symlink really takes path when that is outside real_root (the root's realpath);
    None when it stays inside. `../` is refused lexically; this refuses the same escape by symlink."""
    target = os.path.realpath(path)
    return None if inside(real_root, target) else target


def link_out_message(shown: str, target: str, root: str, what: str) -> str:
    return (f"{shown} is a symbolic link to {target}, outside the {what} {root}; only files under it are "
            "read. Copy the files in, or give the folder that holds both")


_SYNTHESIZED = ("CVIEW", "C VIEW", "SYNTHE", "S VIEW", "SVIEW", "2DSYN")


@lru_cache(maxsize=1024)
def view_category(text: str) -> str:
    """A view as the fingerprint counts it: CC, MLO, synthesized, spot, magnification, or the
    view's own name (ML, LM, XCCL, AT, ...); "" when unknown. A laterality prefix (L-CC, RMLO) is
    dropped."""
    value = " ".join(text.strip().upper().replace("_", " ").replace("-", " ").split())
    if not value:
        return ""
    if any(word in value for word in _SYNTHESIZED):
        return "synthesized"
    if "SPOT" in value:
        return "spot"
    if value.startswith("MAG") or " MAG" in value:
        return "magnification"
    compact = value.replace(" ", "")
    for side in ("L", "R"):
        if compact.startswith(side) and compact[1:] in ("CC", "MLO", "ML", "LM", "XCCL", "XCCM", "AT", "LMO", "SIO"):
            compact = compact[1:]
    return compact
