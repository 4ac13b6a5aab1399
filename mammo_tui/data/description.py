"""A dataset description: where a downloaded dataset keeps its images, labels, patients and split.

Instead of asking for an `image_path,label` CSV, a description says how to read the dataset as it
was downloaded: which metadata table(s), how a row names its image (a column, a template over
columns, or a glob), which column holds the label and how its values map to A-D (or mean "not a
density label"), which columns name the patient, the study, the view and the laterality, which
rows are not standard views, and which rows are the official test side. The built-in layouts of
the public datasets (`layouts/*.toml`) are descriptions; a user's own is a small TOML file
(`--dataset dataset.toml`) or a few CLI flags. A run records its description, so `--resume`,
`eval`, `cv` and `sweep` read the data the same way.

Pure: no image library, no table reading. Every mistake is a DatasetError naming the key.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mammo_tui.data.table import normalise_column
from mammo_tui.errors import DatasetError
from mammo_tui.labels import CLASS_NAMES, LABEL_MAPS

EXCLUDE = "exclude"  # a label-map target: a value that is not a density label (counted, left out)
# standard screening views; anything else is reported as "other: X"
STANDARD_VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class Derived:
    """A value taken out of a column by a regex (its first group): CBIS-DDSM's case folder."""

    name: str
    column: str
    pattern: str


@dataclass(frozen=True)
class Exclusion:
    """Rows left out (counted, with the reason) because a column has (or lacks) some values."""

    column: str
    reason: str
    values: tuple[str, ...] = ()  # excluded when the value is one of these
    keep: tuple[str, ...] = ()  # excluded when the value is not one of these


@dataclass(frozen=True)
class Join:
    """A second table whose columns join the main one on a key (EMBED: clinical on acc_anon)."""

    files: tuple[str, ...]
    on: str
    columns: tuple[str, ...]
    one_of: bool = False


@dataclass(frozen=True)
class Description:
    name: str
    title: str = ""
    note: str = ""  # one line: what this layout is and what it maps
    files: tuple[str, ...] = ()  # metadata table globs, relative to the dataset folder
    one_of: bool = False  # files are alternatives (the first that exists), not parts to concatenate
    image_roots: tuple[str, ...] = (".",)  # where image paths start, tried in order
    image_column: str = ""
    image_template: str = ""  # "images/{study_id}/{image_id}.dicom"
    image_glob: str = ""  # "AllDICOMs/{File Name}_*.dcm": exactly one match
    label_columns: tuple[str, ...] = ()  # the first present is used (CBIS spells it two ways)
    label_map: str = "birads"  # a named map (labels.LABEL_MAPS)
    label_values: dict[str, str] = field(default_factory=dict)  # value -> A-D or "exclude: reason"
    label_unit: str = "image"  # what the label belongs to: image | breast | exam
    patient_column: str = ""
    patient_pattern: str = ""  # regex on the image path (relative to the image root); group 1 = patient
    study_column: str = ""
    view_column: str = ""
    laterality_column: str = ""
    split_column: str = ""
    test_values: tuple[str, ...] = ("test",)
    split_files: dict[str, str] = field(default_factory=dict)  # file-name glob -> "test" | "train"
    derived: tuple[Derived, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    join: Join | None = None
    repeated_rows: str = "refuse"  # "merge": one row per finding lists an image again (CBIS-DDSM)
    # "leave_out": an image the table lists but the folder lacks is counted and left out (the public
    # copies of KAU-BCMD lack a folder; EMBED is downloaded by cohort); "refuse": a missing file blocks
    missing_images: str = "refuse"
    detect_files: tuple[str, ...] = ()  # recognised when these match (in the folder or one below)
    detect_columns: tuple[str, ...] = ()  # ... and the first table has these columns
    source: str = ""  # where this description came from (a layout name or a file)

    def to_dict(self) -> dict[str, Any]:
        """What a run records (dataset.json): enough to read the data the same way again."""
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Description":
        """The inverse of to_dict (a recorded description)."""
        data = dict(data)
        data["derived"] = tuple(Derived(**d) for d in data.get("derived") or ())
        data["exclusions"] = tuple(Exclusion(**{**e, "values": tuple(e.get("values") or ()),
                                                "keep": tuple(e.get("keep") or ())})
                                   for e in data.get("exclusions") or ())
        join = data.get("join")
        data["join"] = Join(**{**join, "files": tuple(join["files"]), "columns": tuple(join["columns"])}) if join else None
        for key in ("files", "image_roots", "label_columns", "test_values", "detect_files", "detect_columns"):
            data[key] = tuple(data.get(key) or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})

    # --- what the description reads -------------------------------------------------------------

    def template_columns(self) -> list[str]:
        """Column names the image template / glob use ({name}), derived names excluded."""
        derived = {d.name for d in self.derived}
        names = []
        for text in (self.image_template, self.image_glob):
            for _, name, _, _ in string.Formatter().parse(text):
                if name is not None and name not in derived and name not in names:
                    names.append(name)
        return names

    def columns_read(self) -> set[str]:
        """Normalised names of every column the description reads from the main table."""
        names = [self.image_column, self.patient_column, self.study_column, self.view_column,
                 self.laterality_column, self.split_column, *self.label_columns, *self.template_columns(),
                 *(d.column for d in self.derived), *(e.column for e in self.exclusions)]
        if self.join:
            names.append(self.join.on)
        return {normalise_column(n) for n in names if n}

    def map_label(self, value: str) -> tuple[int | None, str | None]:
        """(class index, None), (None, reason) for a value that is not a density label, or
        (None, None) for a value the map does not know (the caller refuses it, naming the row)."""
        text = value.strip()
        if not text:
            return None, "blank"
        target = self.label_values.get(text) or self.label_values.get(text.upper()) or self.label_values.get(text.lower())
        if target is not None:
            if target.upper() in CLASS_NAMES:
                return CLASS_NAMES.index(target.upper()), None
            return None, target.split(":", 1)[1].strip() if ":" in target else f"{text} is not a density label"
        parsed = LABEL_MAPS[self.label_map](text)
        return parsed, None

    def summary(self) -> str:
        """One line: what was mapped (shown by plan and the wizard)."""
        where = (f"column {self.image_column!r}" if self.image_column else "") or \
                (f"template {self.image_template}" if self.image_template else "") or f"glob {self.image_glob}"
        if self.image_column and (self.image_template or self.image_glob):
            where += f", else {self.image_template or self.image_glob}"
        parts = [f"images: {where}", f"label: {' / '.join(self.label_columns)} ({self.label_map} map)"]
        if self.patient_column:
            parts.append(f"patient: {self.patient_column}")
        if self.patient_pattern:
            parts.append(f"patient from the file name: {self.patient_pattern}")
        if self.study_column:
            parts.append(f"study: {self.study_column}")
        if self.view_column:
            parts.append(f"view: {self.view_column}")
        if self.split_column or self.split_files:
            parts.append("official split: " + (self.split_column or ", ".join(self.split_files)))
        if self.join:
            parts.append(f"joined with {self.join.files[0]} on {self.join.on}")
        return "; ".join(parts)


# --- reading a description (TOML or a mapping) ---------------------------------------------------

_TOP_KEYS = {"name", "title", "note", "label_unit", "files", "one_of", "image", "label", "group", "view",
             "split", "derive", "exclude", "join", "rows", "detect"}


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise DatasetError(f"{where}: '{key}' must be a string or a list of strings; got {value!r}")


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: [{key}] must be a table (section); got {value!r}")
    return value


def _unknown(section: dict, allowed: set[str], what: str, where: str) -> None:
    extra = sorted(set(section) - allowed)
    if extra:
        raise DatasetError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)} in {what}; "
                           f"known: {', '.join(sorted(allowed))}")


def _check_regex(pattern: str, key: str, where: str) -> str:
    if pattern:
        try:
            re.compile(pattern)
        except re.error as error:
            raise DatasetError(f"{where}: {key} {pattern!r} is not a valid regular expression ({error})") from None
    return pattern


def _label_values(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: [label.values] must map a value to A, B, C, D or \"exclude: why\"")
    out = {}
    for value, target in raw.items():
        text = str(target).strip()
        if text.upper() not in CLASS_NAMES and not text.lower().startswith(EXCLUDE):
            raise DatasetError(f"{where}: [label.values] {value!r} = {target!r}: the target must be A, B, C, D or "
                               "\"exclude: why\" (a value that is not a density label)")
        out[str(value).strip()] = text
    return out


def from_mapping(data: dict[str, Any], where: str, name: str = "") -> Description:
    """Validate a parsed description (a TOML file's content); DatasetError names the bad key."""
    _unknown(data, _TOP_KEYS, "the description", where)
    image, label, group = _table(data, "image", where), _table(data, "label", where), _table(data, "group", where)
    view, split, rows = _table(data, "view", where), _table(data, "split", where), _table(data, "rows", where)
    detect = _table(data, "detect", where)
    _unknown(image, {"column", "template", "glob", "roots", "missing"}, "[image]", where)
    _unknown(label, {"column", "map", "values", "unit"}, "[label]", where)
    _unknown(group, {"patient", "pattern", "study"}, "[group]", where)
    _unknown(view, {"column", "laterality"}, "[view]", where)
    _unknown(split, {"column", "test", "files"}, "[split]", where)
    _unknown(rows, {"repeated"}, "[rows]", where)
    _unknown(detect, {"files", "columns"}, "[detect]", where)
    files = _strings(data.get("files"), "files", where)
    if not files:
        raise DatasetError(f"{where}: 'files' is missing: name the metadata table(s), e.g. files = [\"labels.csv\"]")
    if not (image.get("column") or image.get("template") or image.get("glob")):
        raise DatasetError(f"{where}: [image] needs column, template or glob: how a row names its image file")
    label_columns = _strings(label.get("column"), "label.column", where)
    if not label_columns:
        raise DatasetError(f"{where}: [label] column is missing: the column that holds the density label")
    label_map = str(label.get("map", "birads"))
    if label_map not in LABEL_MAPS:
        raise DatasetError(f"{where}: [label] map = {label_map!r} is not a known map; known: "
                           f"{', '.join(LABEL_MAPS)} (or list every value in [label.values])")
    derived = []
    for derived_name, spec in _table(data, "derive", where).items():
        if not isinstance(spec, dict) or not spec.get("column") or not spec.get("pattern"):
            raise DatasetError(f"{where}: [derive] {derived_name} needs column and pattern (a regex whose first "
                               "group is the value)")
        derived.append(Derived(derived_name, str(spec["column"]), _check_regex(str(spec["pattern"]),
                                                                              f"[derive] {derived_name}", where)))
    exclusions = []
    for index, rule in enumerate(data.get("exclude") or [], start=1):
        if not isinstance(rule, dict) or not rule.get("column") or not (rule.get("values") or rule.get("keep")):
            raise DatasetError(f"{where}: [[exclude]] number {index} needs column and values (or keep)")
        _unknown(rule, {"column", "values", "keep", "reason"}, f"[[exclude]] number {index}", where)
        exclusions.append(Exclusion(str(rule["column"]), str(rule.get("reason") or f"{rule['column']} excluded"),
                                    _strings(rule.get("values"), "values", where), _strings(rule.get("keep"), "keep", where)))
    join = None
    if data.get("join"):
        raw = _table(data, "join", where)
        _unknown(raw, {"files", "one_of", "on", "columns"}, "[join]", where)
        if not raw.get("files") or not raw.get("on") or not raw.get("columns"):
            raise DatasetError(f"{where}: [join] needs files, on (the key column in both tables) and columns "
                               "(the columns it brings)")
        join = Join(_strings(raw["files"], "join.files", where), str(raw["on"]),
                    _strings(raw["columns"], "join.columns", where), bool(raw.get("one_of", False)))
    missing = str(image.get("missing", "refuse"))
    if missing not in ("refuse", "leave_out"):
        raise DatasetError(f"{where}: [image] missing must be \"refuse\" or \"leave_out\"; got {missing!r}")
    repeated = str(rows.get("repeated", "refuse"))
    if repeated not in ("refuse", "merge"):
        raise DatasetError(f"{where}: [rows] repeated must be \"refuse\" or \"merge\"; got {repeated!r}")
    split_files = split.get("files") or {}
    if not isinstance(split_files, dict) or any(str(v) not in ("train", "test") for v in split_files.values()):
        raise DatasetError(f"{where}: [split] files must map a file-name glob to \"train\" or \"test\"")
    unit = str(label.get("unit", data.get("label_unit", "image")))
    if unit not in ("image", "breast", "exam"):
        raise DatasetError(f"{where}: [label] unit must be image, breast or exam; got {unit!r}")
    description = Description(
        name=str(data.get("name") or name or "custom"), title=str(data.get("title", "")), note=str(data.get("note", "")),
        files=files, one_of=bool(data.get("one_of", False)),
        image_roots=_strings(image.get("roots"), "image.roots", where) or (".",),
        image_column=str(image.get("column", "")), image_template=str(image.get("template", "")),
        image_glob=str(image.get("glob", "")), label_columns=label_columns, label_map=label_map,
        label_values=_label_values(label.get("values", {}), where), label_unit=unit,
        patient_column=str(group.get("patient", "")),
        patient_pattern=_check_regex(str(group.get("pattern", "")), "[group] pattern", where),
        study_column=str(group.get("study", "")), view_column=str(view.get("column", "")),
        laterality_column=str(view.get("laterality", "")), split_column=str(split.get("column", "")),
        test_values=_strings(split.get("test"), "split.test", where) or ("test",),
        split_files={str(k): str(v) for k, v in split_files.items()}, derived=tuple(derived),
        exclusions=tuple(exclusions), join=join, repeated_rows=repeated, missing_images=missing,
        detect_files=_strings(detect.get("files"), "detect.files", where) or files,
        detect_columns=_strings(detect.get("columns"), "detect.columns", where),
        source=where)
    return description


def load_description(path: str | Path) -> Description:
    """A description from a TOML file (`--dataset dataset.toml`)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"dataset description not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read the dataset description {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise DatasetError(f"{path}: not valid TOML ({error})") from None
    return from_mapping(data, str(path), name=path.stem)
