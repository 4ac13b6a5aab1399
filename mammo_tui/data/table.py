"""Reading a label CSV the way users actually save them: UTF-8 or Windows/latin-1, `,` `;` or tab;
and an Excel .xlsx sheet (KAU-BCMD ships one) through openpyxl.

The csv module (not pandas) so that each row keeps its exact line number for problem messages.
`only` keeps just the named columns: an EMBED-sized metadata table (hundreds of thousands of rows,
~100 columns) then holds a few strings per row, not a hundred.
"""

from __future__ import annotations

import codecs
import csv
import io
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from pathlib import Path

from mammo_tui.errors import DatasetError

_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


@lru_cache(maxsize=4096)
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
        """The column's index; a DatasetError when two columns have the name (which one is meant?)."""
        wanted = normalise_column(name)
        found = [index for index, column in enumerate(self.columns) if normalise_column(column) == wanted]
        if len(found) > 1:
            both = " and ".join(f"'{self.columns[i]}' (column {i + 1})" for i in found)
            raise DatasetError(f"{self.path}: the columns {both} are all the '{name}' column (names are compared "
                               "ignoring case, spaces and _), so which one to use is unclear; rename or remove "
                               "all but one and run again.")
        return found[0] if found else None

    def duplicate_note(self) -> str | None:
        """A note naming columns that share a name (refused only where a layout needs that column)."""
        groups: dict[str, list[str]] = {}
        for column in self.columns:
            groups.setdefault(normalise_column(column), []).append(f"'{column}'")
        clashes = ["/".join(names) for key, names in groups.items() if key and len(names) > 1]
        return (f"{self.path.name}: columns with the same name ({', '.join(clashes)}) are not used"
                if clashes else None)


# Files people pass as "the CSV" that are not text: (magic bytes at offset 0, what it is, what to do).
_NOT_TEXT = (
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it (gunzip FILE) and pass the .csv inside"),
    (b"PK\x03\x04", "a zip archive (an .xlsx/.ods workbook is one too)",
     "unpack it, or save the sheet as CSV (UTF-8) in Excel/LibreOffice"),
    (bytes.fromhex("d0cf11e0a1b11ae1"), "an Excel .xls workbook", "save the sheet as CSV (UTF-8) in Excel"),
    (b"%PDF", "a PDF document", "export the table as CSV"),
    (b"\x89PNG", "a PNG image", "pass it as an image, not as the label CSV"),
    (b"\xff\xd8\xff", "a JPEG image", "pass it as an image, not as the label CSV"),
    (b"BZh", "a bzip2-compressed file", "decompress it (bunzip2 FILE) and pass the .csv inside"),
    (bytes.fromhex("fd377a585a00"), "an xz-compressed file", "decompress it (unxz FILE) and pass the .csv inside"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "unpack it and pass the .csv inside"),
    (b"PAR1", "a Parquet file", "export it as CSV"),
    (b"SQLite format 3", "an SQLite database", "export the table as CSV"),
)
_MAX_CSV_BYTES = 512 * 1024 * 1024  # far above any label CSV; a bigger file is the wrong file
# characters no CSV text holds: C0 controls other than tab/newlines, and DEL/C1 controls
_CONTROL = {chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v"} | {chr(c) for c in range(127, 160)}


def _not_text_error(path: Path, what: str, fix: str) -> DatasetError:
    return DatasetError(f"{path} is {what}, not a CSV text file; {fix.replace('FILE', path.name)}. "
                        "The label CSV must be plain text with a header line (e.g. image_path,label).")


def _check_magic(path: Path, data: bytes) -> None:
    if data.startswith(b"PK\x03\x04") and b"xl/" in data[:65536]:  # the zip's member names
        raise _not_text_error(path, "an Excel .xlsx workbook", "save the sheet as CSV (UTF-8) in Excel")
    for magic, what, fix in _NOT_TEXT:
        if data.startswith(magic):
            raise _not_text_error(path, what, fix)
    if data[128:132] == b"DICM":
        raise _not_text_error(path, "a DICOM image", "pass the CSV that lists the images, not an image")


def _bom_free_utf16_32(data: bytes) -> tuple[str, str] | None:
    """UTF-16/32 without a BOM (NUL bytes in a fixed pattern); None when it does not look like it."""
    sample = data[:4096]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    for encoding, width, nul_at in (("utf-32-le", 4, (1, 2, 3)), ("utf-32-be", 4, (0, 1, 2)),
                                    ("utf-16-le", 2, (1,)), ("utf-16-be", 2, (0,))):
        units = len(sample) // width
        ascii_like = sum(all(sample[i * width + k] == 0 for k in nul_at) for i in range(units))
        if units and ascii_like >= 0.9 * units:  # mostly ASCII: the high bytes of each unit are 0
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                continue
    return None


def _decode(path: Path, data: bytes) -> tuple[str, str | None, str]:
    """(text, a note when the encoding is unusual, the encoding's name to read the file again)."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: same first bytes
        return data.decode("utf-32"), None, "utf-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        return data.decode("utf-16"), None, "utf-16"
    found = _bom_free_utf16_32(data)
    if found is not None:
        text, encoding = found
        return text, f"{path.name} is UTF-16/32 text without a byte-order mark; read it as such", encoding
    try:
        return data.decode("utf-8-sig"), None, "utf-8-sig"
    except UnicodeDecodeError:
        pass
    # Excel on Windows writes cp1252; latin-1 decodes any byte, so it is the last resort
    for encoding in ("cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, f"{path.name} is not UTF-8; read it as {encoding} (save it as UTF-8 to silence this)", encoding
    raise AssertionError("latin-1 decodes every byte")


def _check_text(path: Path, text: str) -> None:
    """Refuse binary content: control characters would garble every message quoting the file."""
    sample = text[:65536]
    controls = sum(ch in _CONTROL for ch in sample)
    if controls and (controls > len(sample) // 100 or "\x00" in sample):
        raise _not_text_error(path, f"binary data ({controls} control characters in the first "
                              f"{len(sample)})", "pass the label CSV itself, saved as text")


def _read_bytes(path: Path) -> bytes:
    try:
        info = path.stat()
        if path.is_dir():
            raise DatasetError(f"{path} is a folder, not a label CSV. For class folders (A/ B/ C/ D/) pass "
                               "--images DIR; for DICOM accession folders pass --dicom-root DIR with the CSV.")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise DatasetError(f"{path} is not a regular file (a pipe, socket or device); save the labels to "
                               "a CSV file and pass that.")
        if info.st_size > _MAX_CSV_BYTES:
            raise DatasetError(f"{path} is {info.st_size / 2**30:.1f} GiB, far larger than any label CSV; "
                               "is it the right file?")
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"Label CSV not found: {path}. Check the path (relative paths start from "
                           f"the current folder, {Path.cwd()}).") from None
    except OSError as error:
        raise DatasetError(f"Cannot read the label CSV {path}: {error.strerror or error}.") from None


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])  # ties keep the comma (first)
    return best if counts[best] else ","


def _is_workbook(path: Path, data: bytes) -> bool:
    return data.startswith(b"PK\x03\x04") and (b"xl/" in data[:65536] or path.suffix.lower() in (".xlsx", ".xlsm"))


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3.0 in a numeric cell is the 3 a CSV export would write
    return str(value)


def read_workbook(path: Path, data: bytes, only: set[str] | None = None) -> Table:
    """The first sheet of an .xlsx workbook as a Table (row numbers as Excel shows them)."""
    try:
        import openpyxl
    except ImportError:
        raise _not_text_error(path, "an Excel .xlsx workbook", "save the sheet as CSV (UTF-8) in Excel, or "
                              "install openpyxl (pip install openpyxl) to read it as it is") from None
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged workbook is the user's file problem, named
        raise DatasetError(f"{path}: cannot read the Excel workbook ({type(error).__name__}: {error}); "
                           "save the sheet as CSV (UTF-8) and pass that.") from None
    sheet, rows_of = _data_sheet(book, only)
    header: list[str] | None = None
    keep: list[int] = []
    rows: list[tuple[int, list[str]]] = []
    for number, values in rows_of:
        fields = [_cell_text(v) for v in values]
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            keep = _kept_indices(header, only)
            continue
        rows.append((number, [fields[i] if i < len(fields) else "" for i in keep]))
    book.close()
    if header is None:
        raise DatasetError(f"{path} is empty: its sheet {sheet.title!r} needs a header row and one row per image.")
    notes = [f"{path.name}: read the sheet {sheet.title!r} of the workbook"]
    return Table(path=path, columns=[header[i] for i in keep], rows=rows, notes=notes)


def _data_sheet(book, only: set[str] | None):
    """The sheet to read and its rows: the first one whose header row has the most wanted columns
    (KAU-BCMD's first sheet is a summary; its data is the second), else the first sheet."""
    def first_rows(sheet):
        return list(enumerate(sheet.iter_rows(values_only=True), start=1))

    best, best_rows, best_hits = None, [], -1
    for sheet in book.worksheets:
        rows = first_rows(sheet)
        header = next((values for _, values in rows if any(_cell_text(v).strip() for v in values)), ())
        hits = len({normalise_column(_cell_text(v)) for v in header} & only) if only else 0
        if hits > best_hits:
            best, best_rows, best_hits = sheet, rows, hits
        if not only:
            break
    return best, best_rows


def _kept_indices(header: list[str], only: set[str] | None) -> list[int]:
    if only is None:
        return list(range(len(header)))
    return [i for i, name in enumerate(header) if normalise_column(name) in only]


def _first_line(text: str) -> str:
    """The first non-blank line, without splitting the whole text into a list of lines."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line = text[start:end].strip("\r")
        if line.strip():
            return line.split("\r")[0] if "\r" in line else line
        start = end + 1
    return ""


FAST_READ_BYTES = 16 * 1024 * 1024  # above this, kept columns are parsed by pandas' C reader


def read_table(path: str | Path, only: set[str] | None = None, fast_above: int = FAST_READ_BYTES) -> Table:
    """The table at path; `only` (normalised column names) keeps just those columns. A large table
    read for a few columns goes through pandas' C parser (3x faster on EMBED's metadata) when its
    rows are one line each, so every row keeps its exact line number; otherwise the csv module."""
    path = Path(path)
    data = _read_bytes(path)
    if _is_workbook(path, data):
        return read_workbook(path, data, only)
    _check_magic(path, data)
    text, encoding_note, encoding = _decode(path, data)  # the whole file: is it all this encoding?
    del data
    _check_text(path, text)
    notes = [encoding_note] if encoding_note else []
    first_line = _first_line(text)
    if not first_line:
        raise DatasetError(f"{path} is empty: it needs a header line and one row per image or exam.")
    delimiter = _sniff_delimiter(first_line)
    if delimiter != ",":
        notes.append(f"{path.name} uses {_DELIMITER_NAMES[delimiter]} as the column separator")
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    del text  # the rows are read from the file again, streamed: an EMBED-sized table is never held twice
    if only is not None and path.stat().st_size > fast_above:
        table = _read_fast(path, encoding, delimiter, first_line, only, lines, notes)
        if table is not None:
            return table
    try:
        handle = open(path, encoding=encoding, newline="")
    except OSError as error:
        raise DatasetError(f"Cannot read the label CSV {path}: {error.strerror or error}.") from None
    with handle:
        return _parse_rows(path, csv.reader(handle, delimiter=delimiter), only, notes)


def _noted_table(path: Path, columns: list[str], rows: list[tuple[int, list[str]]], notes: list[str]) -> Table:
    """The Table, with a note naming columns that share a name (whichever reader made the rows)."""
    table = Table(path=path, columns=columns, rows=rows, notes=notes)
    duplicates = table.duplicate_note()
    if duplicates:
        table.notes.append(duplicates)
    return table


def _read_fast(path: Path, encoding: str, delimiter: str, first_line: str, only: set[str], lines: int,
               notes: list[str]) -> Table | None:
    """The kept columns through pandas, or None (the csv module then reads it) when a row spans
    lines, a line is blank or the shape is irregular: line numbers must stay exact."""
    import pandas as pd

    header = [f.strip() for f in next(csv.reader([first_line], delimiter=delimiter))]
    keep = _kept_indices(header, only)
    if not keep:
        return None
    try:
        frame = pd.read_csv(path, sep=delimiter, encoding=encoding, usecols=keep, dtype=str, keep_default_na=False,
                            na_filter=False, skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if len(frame) + 1 != lines or frame.isna().any().any():  # a quoted newline, a blank or short line
        return None
    rows = [(number, fields) for number, fields in enumerate(frame.to_numpy().tolist(), start=2)]
    return _noted_table(path, [header[i] for i in keep], rows, notes)


def _parse_rows(path: Path, reader, only: set[str] | None, notes: list[str]) -> Table:
    header: list[str] | None = None
    keep: list[int] = []
    rows: list[tuple[int, list[str]]] = []
    line_after_previous = 1
    pick = None  # itemgetter of the kept columns: C speed on EMBED-sized tables
    try:
        for fields in reader:
            start_line = line_after_previous
            line_after_previous = reader.line_num + 1
            if not any(fields) or (not fields[0].strip() and not any(f.strip() for f in fields)):
                continue  # blank lines are not rows
            if header is None:
                header = [f.strip() for f in fields]
                keep = _kept_indices(header, only)
                pick = itemgetter(*keep) if len(keep) > 1 else None
                continue
            if only is None:
                rows.append((start_line, fields))
            elif pick is not None and len(fields) > keep[-1]:
                rows.append((start_line, list(pick(fields))))
            else:  # a short row, or one kept column
                rows.append((start_line, [fields[i] if i < len(fields) else "" for i in keep]))
    except csv.Error as error:
        raise DatasetError(f"{path}, line {reader.line_num}: cannot parse the CSV ({error}).") from None
    assert header is not None
    return _noted_table(path, [header[i] for i in keep], rows, notes)


def read_columns(path: str | Path, prefer: set[str] | None = None) -> list[str]:
    """A table's column names without reading its rows (recognising a layout in an EMBED-sized
    table costs a header, not the table); an .xlsx: the sheet with most of `prefer`."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(65536)
    if _is_workbook(path, head):
        return read_table(path, only=prefer).columns if prefer else read_table(path).columns
    _check_magic(path, head)
    text, _, _ = _decode(path, head)
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    return [f.strip() for f in next(csv.reader([first_line], delimiter=_sniff_delimiter(first_line)), [])]
