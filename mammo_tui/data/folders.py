"""Images in folders: the walk every folder-based source shares (image-like files, sorted, with the
symlinks that lead out of the dataset's root set apart) and the class-folder input, one sub-folder
per class (A/ B/ C/ D/ or 1/ 2/ 3/ 4/, any case). sources.py lists the other inputs and scans them."""

from __future__ import annotations

import os
from pathlib import Path

from mammo_tui.data.listing import Candidate as _Candidate
from mammo_tui.data.listing import Listing as _Listing
from mammo_tui.data.listing import escapes as _escapes
from mammo_tui.data.listing import link_out_message as _link_out_message
from mammo_tui.data.listing import slashes as _slashes
from mammo_tui.data.records import Problem
from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES, parse_label

# Files that live next to images but are not images: skipped when listing folders (and noted).
_NOT_IMAGE_SUFFIXES = {".txt", ".csv", ".tsv", ".json", ".xml", ".md", ".pdf", ".html", ".htm",
                       ".zip", ".gz", ".log", ".ini", ".db", ".py", ".yaml", ".yml", ".toml"}
_NOT_IMAGE_NAMES = {"DICOMDIR", "Thumbs.db", "desktop.ini"}


def list_image_files(folder: str, real_root: str) -> tuple[list[str], int, list[tuple[str, str]]]:
    """Image-like files under folder (recursive, sorted; symlinks inside real_root followed once),
    how many non-image files were skipped, and (path, target) of each symlink that leads outside."""
    found: list[str] = []
    escaped: list[tuple[str, str]] = []
    walked: set[str] = set()  # real folders already listed: a symlink loop is walked once
    skipped = 0
    for current, dirs, files in os.walk(folder, followlinks=True):
        if os.path.realpath(current) in walked:
            dirs[:] = []
            continue
        walked.add(os.path.realpath(current))
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            target = _escapes(real_root, os.path.join(current, name))
            if target:
                escaped.append((os.path.join(current, name), target))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or name in _NOT_IMAGE_NAMES or Path(name).suffix.lower() in _NOT_IMAGE_SUFFIXES:
                skipped += 1
                continue
            path = os.path.join(current, name)
            target = _escapes(real_root, path)
            if target:
                escaped.append((path, target))
            else:
                found.append(path)
    return found, skipped, escaped


def list_folders(images: str) -> _Listing:
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
    _refuse_two_folders_per_class(root, used)
    listing = _Listing("folders", 0)
    ignored = [e.name for e, label in class_dirs if label is None]
    if ignored:
        listing.notes.append(f"folders that are not a class were ignored: {', '.join(ignored)}")
    loose = [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
    if loose:
        listing.notes.append(f"{len(loose)} files directly in {root} (not in a class folder) were ignored")
    skipped_files = 0
    real_root = os.path.realpath(root)
    for entry, label in used:
        target = _escapes(real_root, entry.path)
        if target:
            listing.problems.append(Problem("outside_root", _link_out_message(
                f"class folder {entry.name}/", target, root, "images folder") + "; its images are skipped",
                path=entry.path))
            continue
        files, skipped, escaped = list_image_files(entry.path, real_root)
        skipped_files += skipped
        for path, target in escaped:
            listing.problems.append(Problem("outside_root", _link_out_message(
                _slashes(os.path.relpath(path, root)), target, root, "images folder") + "; skipped", path=path))
        for path in files:
            stem = Path(path).stem
            # a group pattern sees the path inside the class folder: the class is the label, not the patient
            listing.candidates.append(_Candidate(path, label, 0, fallback_group=stem, share_key=f"path:{path}",
                                                 relative=_slashes(os.path.relpath(path, entry.path)),
                                                 display=_slashes(os.path.relpath(path, root))))
    if skipped_files:
        listing.notes.append(f"{skipped_files} non-image files (text, CSV, hidden) in class folders were ignored")
    listing.rows_read = len(listing.candidates) + len(listing.problems)
    return listing


def _refuse_two_folders_per_class(root: str, used: list[tuple[os.DirEntry, int]]) -> None:
    """A/ and 1/ (or a/ and A/) both name class A: merging them silently could hide a mix-up."""
    folders: dict[int, list[str]] = {}
    for entry, label in used:
        folders.setdefault(label, []).append(entry.name + "/")
    for label, names in folders.items():
        if len(names) > 1:
            raise DatasetError(f"{root}: class {CLASS_NAMES[label]} has {len(names)} folders, "
                               f"{' and '.join(names)}; put its images in one folder (move the files of "
                               f"{' and '.join(names[1:])} into {names[0]}) and run again.")
