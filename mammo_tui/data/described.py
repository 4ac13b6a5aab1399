"""Listing a dataset through its description: metadata table(s) -> image candidates.

Each row of the main table (several files concatenated, e.g. CBIS-DDSM's four CSVs; optionally
joined with a second table, e.g. EMBED's clinical table on acc_anon) becomes one candidate: its
image path (a column, a template over columns, or a glob with exactly one match), its label through
the description's map, its patient / study / view / laterality and its split side. Rows without a
usable label ("blank", "not a density label") and rows of excluded views are counted, not lost.
Mistakes in the description itself (a column that does not exist, a label the map does not know,
a join key with no match, a glob with two matches) stop with a message naming the column, the row
and the value.

Patient ids that are placeholders (`removed`, `anonymous`, one value on most rows) are not used:
the next source in the description is, and the report says so.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
import re
import stat
import string
from functools import lru_cache
from pathlib import Path

from mammo_tui.data.description import Description
from mammo_tui.data.listing import Candidate, Listing, escapes, link_out_message, slashes, view_category
from mammo_tui.data.grouping import placeholder_ids
from mammo_tui.data.records import Problem, patient_digest, patient_digester
from mammo_tui.data.table import Table, normalise_column, read_columns, read_table
from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES

MAX_SHOWN = 5  # examples in a refusal


def find_files(root: Path, pattern: str) -> list[Path]:
    """Files matching a glob in root or one folder below (a download's top folder often wraps it)."""
    if Path(pattern).is_absolute():
        return [Path(pattern)] if Path(pattern).is_file() else []
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if not found and "/" not in pattern:
        found = sorted(p for p in root.glob(f"*/{pattern}") if p.is_file())
    return found


def table_files(description: Description, root: Path, patterns: tuple[str, ...], one_of: bool) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matched = find_files(root, pattern)
        if matched and one_of:
            return matched[:1]
        files += [p for p in matched if p not in files]
    if not files:
        raise DatasetError(f"{root}: no metadata table matches {' or '.join(patterns)} (the {description.name} "
                           f"layout{' from ' + description.source if description.source else ''}); pass the "
                           "dataset's top folder, or the table with --csv")
    return files


class Row:
    """One metadata row: its fields by column name, and where it is (for messages)."""

    __slots__ = ("table", "index", "line", "fields", "name")

    def __init__(self, table: Table, index: dict[str, int], line: int, fields: list[str], name: str = "") -> None:
        self.table, self.index, self.line, self.fields = table, index, line, fields
        self.name = name or table.path.name  # the file's name, once per table

    def get(self, column: str) -> str:
        i = self.index.get(column)  # the description's own spellings are in the index too (_index_names)
        if i is None:
            i = self.index.get(normalise_column(column))
            if i is None:
                return ""
        try:
            return self.fields[i].strip()
        except IndexError:  # a short row
            return ""

    @property
    def where(self) -> str:
        return f"{self.name} row {self.line}"


def column_index(table: Table) -> dict[str, int]:
    return {normalise_column(name): i for i, name in enumerate(table.columns)}


def _require(table: Table, index: dict[str, int], column: str, what: str) -> None:
    if column and normalise_column(column) not in index:
        raise DatasetError(f"{table.path}: no column '{column}' ({what}); this file has: "
                           f"{', '.join(table.columns) or '(none)'}")


def _index_names(description: Description, index: dict[str, int]) -> None:
    """Add the description's column spellings to a table's index: Row.get then finds them without
    normalising the name on every row."""
    names = [description.image_column, description.patient_column, description.study_column,
             description.view_column, description.laterality_column, description.split_column,
             *description.label_columns, *description.template_columns(), *(d.column for d in description.derived),
             *(e.column for e in description.exclusions), description.join.on if description.join else ""]
    for name in names:
        if name and normalise_column(name) in index:
            index[name] = index[normalise_column(name)]


def _read_tables(description: Description, files: list[Path]) -> list[tuple[Table, dict[str, int]]]:
    tables = []
    wanted = description.columns_read()
    for path in files:
        table = read_table(path, only=wanted)
        index = column_index(table)
        _require(table, index, description.image_column, "[image] column")
        for name in description.template_columns():
            if normalise_column(name) not in index and name not in {d.name for d in description.derived}:
                raise DatasetError(f"{table.path}: the image {'template' if description.image_template else 'glob'} "
                                   f"{description.image_template or description.image_glob!r} names the column "
                                   f"'{name}', which this file does not have; it has: {', '.join(read_columns(path))}")
        joined_labels = description.join is not None and set(description.label_columns) & set(description.join.columns)
        if not joined_labels and not any(normalise_column(c) in index for c in description.label_columns):
            raise DatasetError(f"{table.path}: no label column {' or '.join(repr(c) for c in description.label_columns)}; "
                               f"this file has: {', '.join(read_columns(path))}")
        for column, what in ((description.patient_column, "[group] patient"), (description.study_column, "[group] study"),
                             (description.view_column, "[view] column"),
                             (description.laterality_column, "[view] laterality"),
                             (description.split_column, "[split] column")):
            _require(table, index, column, what)
        for derived in description.derived:
            _require(table, index, derived.column, f"[derive] {derived.name}")
        for rule in description.exclusions:
            _require(table, index, rule.column, "[[exclude]] column")
        tables.append((table, index))
    return tables


class _Joined:
    """The joined table's columns per key value (EMBED: tissueden per acc_anon)."""

    def __init__(self, description: Description, root: Path) -> None:
        join = description.join
        assert join is not None
        self.on = join.on
        self.columns = join.columns
        self.values: dict[str, dict[str, set[str]]] = {}
        self.files = table_files(description, root, join.files, join.one_of)
        only = {normalise_column(join.on)} | {normalise_column(c) for c in join.columns}
        for path in self.files:
            table = read_table(path, only=only)
            index = column_index(table)
            for column, what in [(join.on, "[join] on")] + [(c, "[join] columns") for c in join.columns]:
                _require(table, index, column, what)
            key_at, at = index[normalise_column(join.on)], {c: index[normalise_column(c)] for c in join.columns}
            for _, fields in table.rows:
                key = fields[key_at].strip() if key_at < len(fields) else ""
                if not key:
                    continue
                slot = self.values.get(key)
                if slot is None:
                    slot = self.values[key] = {c: set() for c in join.columns}
                for column, i in at.items():
                    value = fields[i].strip() if i < len(fields) else ""
                    if value:
                        slot[column].add(value)

    def lookup(self, key: str) -> dict[str, set[str]] | None:
        return self.values.get(key)


def _derived_value(description: Description, row: Row, name: str) -> str:
    derived = next(d for d in description.derived if d.name == name)
    match = re.search(derived.pattern, row.get(derived.column).replace("\\", "/"))
    if match is None:
        return ""
    return (match.group(1) if match.groups() else match.group(0)).strip()


def _format(description: Description, text: str, row: Row, escape: bool) -> str | None:
    """The template / glob with the row's values; None when a value it needs is empty."""
    out = []
    derived = {d.name for d in description.derived}
    for literal, name, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is None:
            continue
        value = _derived_value(description, row, name) if name in derived else row.get(name)
        if not value:
            return None
        value = value.replace("\\", "/")
        out.append(globlib.escape(value) if escape else value)
    return "".join(out)


class PathResolver:
    """A row's image file under the image root: column (with a suffix match for paths written on
    another machine, e.g. EMBED's /mnt/NAS2/... paths), then template, then glob."""

    def __init__(self, description: Description, dataset_root: Path) -> None:
        self.description = description
        self.dataset_root = dataset_root
        self.root = str(dataset_root)
        self.strip: int | None = None  # leading components of a column path to drop (learned once)
        self.links: set[str] = set()  # found files that are symbolic links (their escape is checked)

    def _is_file(self, path: str) -> bool:
        """os.path.isfile with one lstat for a regular file; a symlink is followed and remembered,
        so the escape check need not lstat every file again."""
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return False
        if stat.S_ISREG(mode):
            return True
        if stat.S_ISLNK(mode) and os.path.isfile(path):
            self.links.add(path)
            return True
        return False

    def choose_root(self, rows: list[Row]) -> None:
        """The first image root (of the description's; a glob such as */CBIS-DDSM finds the folder
        NBIA's retriever nests in manifest-<id>/) under which the first rows' images exist."""
        roots: list[str] = []
        # from the dataset folder, then from the table's own folder (a table found one level down,
        # e.g. the user gave the folder that holds "INbreast Release 1.0/")
        bases = [self.dataset_root] + sorted({row.table.path.parent for row in rows[:1]} - {self.dataset_root})
        for base in bases:
            for pattern in self.description.image_roots:
                if pattern in (".", ""):
                    roots.append(str(base))
                elif globlib.has_magic(pattern):
                    roots += sorted(str(p.resolve()) for p in base.glob(pattern) if p.is_dir())
                else:
                    roots.append(str((base / pattern).resolve()))
        sample = rows[:20]
        for root in roots:
            self.root = root
            if os.path.isdir(root) and any(self._find(row)[0] for row in sample):
                return
        self.root = next((r for r in roots if os.path.isdir(r)), str(self.dataset_root))

    def _under_root(self, value: str) -> str | None:
        value = value.replace("\\", "/")
        absolute = value.startswith("/") or (len(value) > 1 and value[1] == ":")  # /mnt/... or C:/...
        if not absolute:
            path = os.path.normpath(os.path.join(self.root, value))
            if self._is_file(path):
                return path
        parts = [p for p in value.split("/") if p and p != "."]
        if ".." in parts:
            return None  # a path that climbs is not matched by its ending
        # keep a folder and the file at least: a bare file name could be another image's
        keep = min(2, len(parts))
        # once learned, the strip is the layout's: a file not there is missing (a partial download
        # pays one lookup a row, not one per possible strip)
        order = [self.strip] if self.strip is not None else list(range(len(parts) - keep + 1))
        prefix = self.root.rstrip(os.sep) + os.sep
        for drop in order:
            if drop > len(parts) - keep:
                continue
            candidate = prefix + os.sep.join(parts[drop:])  # no normpath: no part is "", "." or ".."
            if self._is_file(candidate):
                self.strip = drop
                return candidate
        return None

    def _find(self, row: Row) -> tuple[str | None, str]:
        """(path, how it was looked for); path None when no file is there."""
        d = self.description
        tried = []
        written = [row.get(d.image_column) if d.image_column else "",  # the column, then the template
                   (_format(d, d.image_template, row, escape=False) or "") if d.image_template else ""]
        for value in filter(None, written):
            found = self._under_root(value)
            if found:
                return found, value
            tried.append(value)
        if d.image_glob:
            value = _format(d, d.image_glob, row, escape=True)
            if value:
                matches = sorted(p for p in globlib.glob(os.path.join(self.root, value)) if os.path.isfile(p))
                if len(matches) > 1:
                    shown = ", ".join(os.path.relpath(m, self.root) for m in matches[:3])
                    raise DatasetError(f"{row.where}: the image glob {d.image_glob!r} matches {len(matches)} files "
                                       f"({shown}); it must name exactly one. Make the glob narrower (in the "
                                       "description's [image] glob).")
                if matches:
                    if os.path.islink(matches[0]):
                        self.links.add(matches[0])
                    return matches[0], value
                tried.append(value)
        return None, " or ".join(tried)

    def find(self, row: Row) -> tuple[str | None, str]:
        return self._find(row)


@lru_cache(maxsize=64)
def _file_side(name: str, patterns: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, side in patterns:
        if fnmatch.fnmatch(name.lower(), pattern.lower()):
            return "test" if side == "test" else ""
    return None


def _split_side(description: Description, row: Row) -> str:
    by_file = _file_side(row.table.path.name, tuple(description.split_files.items()))
    if by_file is not None:
        return by_file
    if description.split_column:
        value = row.get(description.split_column).lower()
        return "test" if value in {v.lower() for v in description.test_values} else ""
    return ""


def _exclusion_rules(description: Description) -> list[tuple[str, set[str], set[str], str]]:
    """(column, values that exclude, values that keep, reason), lower-cased once for every row."""
    return [(rule.column, {v.lower() for v in rule.values}, {v.lower() for v in rule.keep}, rule.reason)
            for rule in description.exclusions]


def _excluded(rules: list[tuple[str, set[str], set[str], str]], row: Row) -> str | None:
    for column, values, keep, reason in rules:
        value = row.get(column).lower()
        if (values and value in values) or (keep and value not in keep):
            return reason
    return None


def _label_of(description: Description, row: Row, joined: _Joined | None, unmapped: dict[str, list[str]],
              map_label=None) -> tuple[int | None, str | None, str]:
    """(class, reason it has none, the column read)."""
    map_label = map_label or description.map_label
    column = next((c for c in description.label_columns if c in row.index), "")
    if joined is not None and not column:
        column = next((c for c in description.label_columns if c in joined.columns), description.label_columns[0])
        found = joined.lookup(row.get(joined.on)) or {}
        values = found.get(column, set())
        if len(values) > 1:
            classes = {map_label(v) for v in values}
            if len(classes) > 1 and any(c is not None for c, _ in classes):
                return None, "conflict: " + ", ".join(sorted(values)), column
        value = next(iter(values), "")
    else:
        value = row.get(column)
    label, reason = map_label(value)
    if label is None and reason is None:
        unmapped.setdefault(value, []).append(row.where)
    return label, reason, column


def _refuse_unmapped(description: Description, unmapped: dict[str, list[str]], column: str) -> None:
    if not unmapped:
        return
    shown = "; ".join(f"{value!r} on {len(rows)} row{'s' if len(rows) > 1 else ''} (first: {rows[0]})"
                      for value, rows in list(unmapped.items())[:MAX_SHOWN])
    raise DatasetError(f"column '{column}': the label map ({description.label_map}) does not map {shown}. Map each "
                       "value in the description's [label.values] to A, B, C, D or \"exclude: why\" (a value that "
                       "is not a density label), or fix the rows.")


def _refuse_unjoined(unjoined: list[tuple[str, str]], joined: _Joined) -> None:
    if not unjoined:
        return
    shown = "; ".join(f"{where}: {value!r}" for where, value in unjoined[:MAX_SHOWN])
    more = f" (and {len(unjoined) - MAX_SHOWN} more)" if len(unjoined) > MAX_SHOWN else ""
    raise DatasetError(f"column '{joined.on}': {len(unjoined)} row{'s' if len(unjoined) > 1 else ''} of the main table "
                       f"ha{'ve' if len(unjoined) > 1 else 's'} no match in {', '.join(p.name for p in joined.files)}: "
                       f"{shown}{more}. Check that both tables come from the same release.")


def list_described(description: Description, dataset_root: str) -> Listing:
    root = Path(dataset_root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found or not a folder: {dataset_root}")
    files = table_files(description, root, description.files, description.one_of)
    tables = _read_tables(description, files)
    joined = _Joined(description, root) if description.join else None
    for _, index in tables:
        _index_names(description, index)
    rows = [Row(table, index, line, fields, name) for table, index in tables
            for name in (table.path.name,) for line, fields in table.rows]
    listing = Listing("described", len(rows), layout=description.name, mapped=description.summary())
    for table, _ in tables:
        listing.notes.extend(table.notes)
    if len(files) > 1:
        listing.notes.append(f"read {len(files)} tables: {', '.join(p.name for p in files)}")
    resolver = PathResolver(description, root)
    resolver.choose_root(rows)
    real_root = os.path.realpath(resolver.root)
    inside_root, escapes_root = _root_checks(resolver.root, real_root, resolver.links)
    root_prefix = resolver.root.rstrip(os.sep) + os.sep
    rules = _exclusion_rules(description)
    digest = lru_cache(maxsize=None)(patient_digester())  # the secret read once; a patient's rows share one HMAC
    map_label = lru_cache(maxsize=None)(description.map_label)  # a few distinct values, many rows
    patients = [row.get(description.patient_column) for row in rows] if description.patient_column else []
    placeholders = placeholder_ids(patients) if patients else set()
    if placeholders:
        shown = ", ".join(repr(v) if v else "empty" for v in sorted(placeholders)[:MAX_SHOWN])
        n = sum(1 for v in patients if v.strip() in placeholders)
        listing.notes.append(f"column '{description.patient_column}': {shown} on {n} of {len(rows)} rows is a "
                             "placeholder, not a patient id; those rows are grouped by the next source")
    pattern = re.compile(description.patient_pattern) if description.patient_pattern else None
    unmapped: dict[str, list[str]] = {}
    unjoined: list[tuple[str, str]] = []
    first_of: dict[str, tuple[str, int]] = {}  # path -> (where, label)
    merged = 0
    label_column = ""
    for row in rows:
        reason = _excluded(rules, row)
        if reason:
            listing.problems.append(Problem("view_excluded", f"{row.where}: {reason}; left out", row=row.line,
                                            reason=reason))
            continue
        if joined is not None and joined.lookup(row.get(joined.on)) is None:
            unjoined.append((row.where, row.get(joined.on)))
            continue
        label, why, label_column = _label_of(description, row, joined, unmapped, map_label)
        if label is None:
            if why:
                kind = "label_conflict" if why.startswith("conflict") else "no_label"
                text = (f"'{label_column}' is blank" if why == "blank" else
                        f"'{label_column}' has {why}" if kind == "label_conflict" else f"'{label_column}': {why}")
                listing.problems.append(Problem(kind, f"{row.where}: {text}; left out", row=row.line, reason=text))
            continue
        path, looked_for = resolver.find(row)
        if path is None:
            if description.missing_images == "leave_out":  # a partial download, as the layout says
                listing.problems.append(Problem("not_downloaded", f"{row.where}: image not in this download; "
                                                "left out", row=row.line, path=looked_for or None,
                                                reason="image not in this download"))
            else:
                listing.problems.append(Problem("missing_file", f"{row.where}: image {looked_for or '(no path)'} not "
                                                f"found under {resolver.root}; row skipped", row=row.line))
            continue
        if not inside_root(path) or escapes_root(path):
            target = escapes(real_root, path) or path
            listing.problems.append(Problem("outside_root", f"{row.where}: " + link_out_message(
                repr(looked_for), target, resolver.root, "image folder") + "; row skipped", row=row.line, path=path))
            continue
        key = os.path.normcase(path)
        if key in first_of:
            where, first_label = first_of[key]
            if first_label == label and description.repeated_rows == "merge":
                merged += 1
                continue
            clash = "" if first_label == label else (f" with label {CLASS_NAMES[first_label]} there, "
                                                     f"{CLASS_NAMES[label]} here; the first is kept")
            listing.problems.append(Problem("duplicate_path", f"{row.where}: the image {looked_for} is already listed "
                                            f"on {where}{clash}; row skipped", row=row.line, path=path))
            continue
        first_of[key] = (row.where, label)
        relative = slashes(path[len(root_prefix):])  # path starts with it (inside_root)
        candidate = Candidate(path, label, row.line, fallback_group=f"img-{relative}", share_key=f"path:{key}",
                              relative=relative, display=f"{row.where} ({relative})",
                              view=view_category(row.get(description.view_column)) if description.view_column else "",
                              laterality=row.get(description.laterality_column)[:1].upper()
                              if description.laterality_column else "",
                              split=_split_side(description, row))
        _set_group(candidate, description, row, placeholders, pattern, digest)
        listing.candidates.append(candidate)
    if joined is not None:
        _refuse_unjoined(unjoined, joined)
    _refuse_unmapped(description, unmapped, label_column or description.label_columns[0])
    listing.merged = merged
    if merged:
        listing.notes.append(f"{merged} rows list an image an earlier row already lists with the same label (one row "
                             "per finding): each image is used once")
    return listing


def _root_checks(root: str, real_root: str, links: set[str]):
    """(inside, escapes) for paths under root: a string prefix instead of commonpath, and each
    folder's symlink check done once (a listing of 365k files has ~230k folders, not 365k x 8)."""
    prefix = root.rstrip(os.sep) + os.sep

    def inside_root(path: str) -> bool:
        return path.startswith(prefix)

    @lru_cache(maxsize=None)
    def folder_escapes(folder: str) -> bool:
        if folder == root or not folder.startswith(prefix):
            return False
        if os.path.islink(folder) and escapes(real_root, folder):
            return True
        return folder_escapes(folder.rpartition(os.sep)[0])

    def escapes_root(path: str) -> bool:
        if path in links and escapes(real_root, path):
            return True
        return folder_escapes(path.rpartition(os.sep)[0])

    return inside_root, escapes_root


def _set_group(candidate: Candidate, description: Description, row: Row, placeholders: set[str], pattern,
               digest=patient_digest) -> None:
    """Patient column (unless a placeholder), then the file-name pattern, then the study."""
    study = row.get(description.study_column) if description.study_column else ""
    if study:
        candidate.study = digest(f"study:{study}")
    patient = row.get(description.patient_column) if description.patient_column else ""
    if patient and patient not in placeholders:
        candidate.group, candidate.group_source = digest(patient), "patient_id_column"
        return
    if pattern is not None:
        match = pattern.search(candidate.relative)
        value = (match.group(1) if match and match.groups() else match.group(0) if match else "") or ""
        if value.strip():
            candidate.group, candidate.group_source = digest(value.strip()), "group_pattern"
            return
    if study:
        candidate.group, candidate.group_source = candidate.study, "study_column"
