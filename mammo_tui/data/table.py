"""Reading a label CSV the way users actually save them: UTF-8 or Windows/latin-1, `,` `;` or tab.

The csv module (not pandas) so that each row keeps its exact line number for problem messages.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from mammo_tui.errors import DatasetError

_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def normalise_column(name: str) -> str:
    """'Image Path', 'image_path' and 'IMAGEPATH' are the same column."""
    return "".join(ch for ch in name.strip().lower() if ch.isalnum())


@dataclass
class Table:
    path: Path
    columns: list[str]  # as written in the header
    rows: list[tuple[int, list[str]]]  # (line number, fields); the header is line 1
    notes: list[str] = field(default_factory=list)

    def find_column(self, name: str) -> int | None:
        wanted = normalise_column(name)
        for index, column in enumerate(self.columns):
            if normalise_column(column) == wanted:
                return index
        return None


def _decode(path: Path, data: bytes) -> tuple[str, str | None]:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        return data.decode("utf-16"), None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    # Excel on Windows writes cp1252; latin-1 decodes any byte, so it is the last resort
    for encoding in ("cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, f"{path.name} is not UTF-8; read it as {encoding} (save it as UTF-8 to silence this)"
    raise AssertionError("latin-1 decodes every byte")


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])  # ties keep the comma (first)
    return best if counts[best] else ","


def read_table(path: str | Path) -> Table:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"Label CSV not found: {path}. Check the path (relative paths start from "
                           f"the current folder, {Path.cwd()}).") from None
    except OSError as error:
        raise DatasetError(f"Cannot read the label CSV {path}: {error.strerror}.") from None
    text, encoding_note = _decode(path, data)
    notes = [encoding_note] if encoding_note else []
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    if not first_line:
        raise DatasetError(f"{path} is empty: it needs a header line and one row per image or exam.")
    delimiter = _sniff_delimiter(first_line)
    if delimiter != ",":
        notes.append(f"{path.name} uses {_DELIMITER_NAMES[delimiter]} as the column separator")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    line_after_previous = 1
    try:
        for fields in reader:
            start_line = line_after_previous
            line_after_previous = reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue  # blank lines are not rows
            if header is None:
                header = [f.strip() for f in fields]
                continue
            rows.append((start_line, fields))
    except csv.Error as error:
        raise DatasetError(f"{path}, line {reader.line_num}: cannot parse the CSV ({error}).") from None
    assert header is not None
    return Table(path=path, columns=header, rows=rows, notes=notes)
