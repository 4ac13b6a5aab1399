"""From what the user typed (a dataset folder, a table, a description, mapping flags) to one
DatasetSpec. The CLI, the wizard and plan all call this, so the same input is read the same way.

A folder: a built-in layout recognised in it (or forced with --layout), a description file
(--dataset FILE.toml), else class folders (A/ B/ C/ D/). A table: the reference layout with
--dicom-root, the generic `image_path,label` CSV, or any table described by mapping flags
(--image-col / --path-template / --image-glob, --label-col, --patient-col ...), with the images
under --image-root (default: the table's folder): a read-only dataset needs no writable copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_tui.errors import DatasetError


@dataclass
class MappingFlags:
    """The command line's part of a description (each None when not given)."""

    image_col: str | None = None
    path_template: str | None = None
    image_glob: str | None = None
    label_col: str | None = None
    label_map: str | None = None
    patient_col: str | None = None
    study_col: str | None = None
    view_col: str | None = None
    split_col: str | None = None

    def given(self) -> bool:
        return any(value is not None for value in self.__dict__.values())


def description_from_flags(table: str, flags: MappingFlags) -> dict:
    """A description (as recorded) for one table read through mapping flags."""
    from mammo_tui.data.description import from_mapping

    if not (flags.image_col or flags.path_template or flags.image_glob):
        raise DatasetError("mapping flags need how a row names its image: --image-col COLUMN, --path-template "
                           "'images/{study_id}/{image_id}.dcm' or --image-glob 'AllDICOMs/{File Name}_*.dcm'")
    data: dict = {"name": "custom", "files": [str(Path(table).expanduser().resolve())],
                  "image": {key: value for key, value in (("column", flags.image_col), ("template", flags.path_template),
                                                          ("glob", flags.image_glob)) if value},
                  "label": {"column": flags.label_col or "label", "map": flags.label_map or "birads"},
                  "group": {key: value for key, value in (("patient", flags.patient_col), ("study", flags.study_col))
                            if value},
                  "view": {"column": flags.view_col} if flags.view_col else {},
                  "split": {"column": flags.split_col} if flags.split_col else {}}
    return from_mapping(data, "the command line's mapping flags").to_dict()


def _description_file(path: str, layout: str | None) -> dict:
    from mammo_tui.data.layouts import load_layout

    if layout:
        raise DatasetError("give --layout NAME or --dataset FILE.toml, not both")
    return load_layout(path if path.endswith(".toml") else f"{path}.toml").to_dict()


def _has_class_folders(folder: Path) -> bool:
    from mammo_tui.labels import parse_label

    return any(entry.is_dir() and parse_label(entry.name) is not None for entry in folder.iterdir())


def dataset_spec(path: str | None = None, *, csv: str | None = None, dicom_root: str | None = None,
                 images: str | None = None, group_pattern: str | None = None, layout: str | None = None,
                 description: str | None = None, image_root: str | None = None, views: str | None = None,
                 flags: MappingFlags | None = None):
    """The DatasetSpec for these inputs, or None when none is given (the caller says what to pass)."""
    from mammo_tui.data.layouts import load_layout, recognise
    from mammo_tui.data.sources import DatasetSpec, unknown_layout_message

    flags = flags or MappingFlags()
    if path and (csv or images):
        raise DatasetError(f"give the dataset once: {path} or --csv/--images, not both")
    if path and not Path(path).is_dir():
        csv, path = path, None  # a table given as the positional argument
    common = dict(group_pattern=group_pattern, views=views)
    if description:
        recorded = _description_file(description, layout)
        root = path or image_root or str(Path(description).expanduser().resolve().parent)
        return DatasetSpec(root=root, description=recorded, **common)
    if csv and flags.given():
        root = image_root or str(Path(csv).expanduser().resolve().parent)
        return DatasetSpec(root=root, description=description_from_flags(csv, flags), **common)
    if flags.given():
        raise DatasetError("mapping flags (--image-col, --label-col, ...) describe a table: give it with --csv FILE")
    if csv and image_root and not dicom_root:
        from mammo_tui.data.table import read_columns

        columns = {c.strip().lower() for c in read_columns(csv)}
        generic = MappingFlags(image_col="image_path", label_col="label",
                               patient_col="patient_id" if "patient_id" in columns else None,
                               view_col="view" if "view" in columns else None)
        return DatasetSpec(root=image_root, description=description_from_flags(csv, generic), **common)
    if path:
        folder = Path(path)
        if layout:
            return DatasetSpec(root=path, description=load_layout(layout).to_dict(), **common)
        found = recognise(folder)
        if found is not None:
            return DatasetSpec(root=path, description=found.to_dict(), **common)
        if _has_class_folders(folder):
            return DatasetSpec(images=path, **common)
        raise DatasetError(unknown_layout_message(path))
    if layout:
        raise DatasetError(f"--layout {layout}: give the dataset's top folder too (mammo-tui plan DIR --layout {layout})")
    if csv or images:
        return DatasetSpec(csv=csv, dicom_root=dicom_root, images=images, **common)
    return None


FLAG_OF = {"image_column": "--image-col", "image_template": "--path-template", "image_glob": "--image-glob",
           "label_map": "--label-map", "patient_column": "--patient-col", "study_column": "--study-col",
           "view_column": "--view-col", "split_column": "--split-col"}


def description_args(root: str, description: dict | None, layout: str | None = None) -> list[str]:
    """The command-line words that read a described dataset again (a sweep's runs, a reproduce
    command): the folder and its layout, the description file, or the table and mapping flags."""
    from mammo_tui.data.layouts import layout_names

    if not description:
        return [root] + (["--layout", layout] if layout else [])
    name, source = description.get("name", ""), str(description.get("source", ""))
    if source == f"layout {name}" and name in layout_names():
        return [root, "--layout", name]
    if source.endswith(".toml"):
        return [root, "--dataset", source]
    words = ["--csv", description["files"][0], "--image-root", root, "--label-col", description["label_columns"][0]]
    for key, flag in FLAG_OF.items():
        if description.get(key):
            words += [flag, str(description[key])]
    return words
