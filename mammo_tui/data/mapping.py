"""The mapping step for a table mammo-tui does not recognise: guesses, a live preview, and the
description written out as TOML for headless use.

Pure (no textual): the wizard's mapping screen shows what these return; tests call them directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mammo_tui.data.inputs import MappingFlags
from mammo_tui.data.table import Table, normalise_column
from mammo_tui.labels import LABEL_MAPS

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
PREVIEW_ROWS = 200  # the live counts read this many rows: instant on any table
SAMPLES = 3

# (field, words a column name may contain), tried in order; the first unused column wins
_NAME_HINTS = (
    ("label_col", ("density", "tissueden", "acr", "birads_density", "label", "class")),
    ("patient_col", ("patient", "empi", "subject", "woman")),
    ("study_col", ("study", "accession", "acc_anon", "exam")),
    ("view_col", ("view",)),
    ("split_col", ("split", "subset", "fold_official")),
)


def samples(table: Table, index: int, n: int = SAMPLES) -> list[str]:
    """Up to n distinct non-blank values of a column, in table order."""
    found: list[str] = []
    for _, fields in table.rows:
        value = fields[index].strip() if index < len(fields) else ""
        if value and value not in found:
            found.append(value)
            if len(found) == n:
                break
    return found


def _looks_like_path(values: list[str]) -> bool:
    return bool(values) and all(v.lower().endswith(IMAGE_SUFFIXES) or "/" in v or "\\" in v for v in values)


def _maps(values: list[str]) -> str | None:
    """The label map that reads every sample value (birads first), or None."""
    for name, parse in LABEL_MAPS.items():
        if values and all(parse(v) is not None for v in values):
            return name
    return None


def guess_mapping(table: Table) -> MappingFlags:
    """Best guesses from the column names and their values; the user corrects what is wrong."""
    guess = MappingFlags()
    used: set[int] = set()
    for i, column in enumerate(table.columns):
        if _looks_like_path(samples(table, i)):
            guess.image_col, _ = column, used.add(i)
            break
    for attr, words in _NAME_HINTS:
        for i, column in enumerate(table.columns):
            name = column.lower()
            if i not in used and any(word in name for word in words):
                if attr == "label_col":
                    label_map = _maps(samples(table, i, 20))
                    if label_map is None:
                        continue
                    guess.label_map = label_map
                setattr(guess, attr, column)
                used.add(i)
                break
    return guess


@dataclass
class Preview:
    rows: int  # rows read (at most PREVIEW_ROWS)
    resolved: int  # rows whose image file exists
    mapped: int  # rows whose label maps to A-D
    left_out: int  # blank or "not a density" labels
    unmapped: list[str]  # label values the map does not read
    error: str = ""  # a mistake in the mapping itself (a missing column), said as the CLI says it

    def line(self) -> str:
        if self.error:
            return self.error
        text = (f"of the first {self.rows} rows: {self.resolved} resolve to a file, {self.mapped} labels map to A-D"
                f"{f', {self.left_out} blank' if self.left_out else ''}")
        if self.unmapped:
            text += f"; not mapped: {', '.join(repr(v) for v in self.unmapped[:4])}"
        return text


def preview(table: Table, flags: MappingFlags, image_root: str) -> Preview:
    """How the mapping reads the table's first rows: files found, labels mapped (no image opened)."""
    from mammo_tui.data.described import PathResolver, Row, column_index
    from mammo_tui.errors import MammoError

    try:
        description = _description(table, flags)
        index = column_index(table)
        for name in description.template_columns() + [description.image_column, *description.label_columns]:
            if name and normalise_column(name) not in index:
                return Preview(0, 0, 0, 0, [], f"no column '{name}' in {table.path.name}")
        resolver = PathResolver(description, Path(image_root))
        rows = [Row(table, index, line, fields) for line, fields in table.rows[:PREVIEW_ROWS]]
        resolver.choose_root(rows)
        resolved = mapped = left = 0
        unmapped: list[str] = []
        for row in rows:
            resolved += resolver.find(row)[0] is not None
            value = row.get(description.label_columns[0])
            label, reason = description.map_label(value)
            mapped += label is not None
            left += reason is not None
            if label is None and reason is None and value not in unmapped:
                unmapped.append(value)
        return Preview(len(rows), resolved, mapped, left, unmapped)
    except MammoError as error:
        return Preview(0, 0, 0, 0, [], str(error))


def _description(table: Table, flags: MappingFlags):
    from mammo_tui.data.description import Description
    from mammo_tui.data.inputs import description_from_flags

    return Description.from_record(description_from_flags(str(table.path), flags))


def description_toml(record: dict) -> str:
    """A description (as recorded) written as the TOML `--dataset FILE` reads."""
    def value(v) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["# written by mammo-tui's mapping step; use it with: mammo-tui train --no-ui --dataset FILE",
             f"name = {value(record.get('name') or 'custom')}", f"files = {value(record['files'])}"]
    sections = {
        "image": {"column": record.get("image_column"), "template": record.get("image_template"),
                  "glob": record.get("image_glob"), "missing": record.get("missing_images")
                  if record.get("missing_images") != "refuse" else None},
        "label": {"column": list(record.get("label_columns") or []), "map": record.get("label_map"),
                  "unit": record.get("label_unit") if record.get("label_unit") != "image" else None},
        "group": {"patient": record.get("patient_column"), "pattern": record.get("patient_pattern"),
                  "study": record.get("study_column")},
        "view": {"column": record.get("view_column"), "laterality": record.get("laterality_column")},
        "split": {"column": record.get("split_column"),
                  "test": list(record.get("test_values") or []) if record.get("split_column") else None},
    }
    for name, keys in sections.items():
        kept = {k: v for k, v in keys.items() if v}
        if kept:
            lines += ["", f"[{name}]"] + [f"{k} = {value(v)}" for k, v in kept.items()]
    if record.get("label_values"):
        lines += ["", "[label.values]"] + [f"{value(k)} = {value(v)}" for k, v in record["label_values"].items()]
    return "\n".join(lines) + "\n"


def save_description(record: dict, path: str | os.PathLike) -> Path:
    """Write the description; refuses to overwrite a file that is not one of ours."""
    from mammo_tui.errors import MammoError

    path = Path(path)
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith("# written by mammo-tui"):
        raise MammoError(f"{path} exists and was not written by mammo-tui; choose another name")
    path.write_text(description_toml(record), encoding="utf-8")
    return path
