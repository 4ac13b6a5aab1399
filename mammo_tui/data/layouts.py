"""The built-in dataset layouts (descriptions of the public density datasets as downloaded) and
their recognition: `plan DIR` / `train DIR` on a dataset's top folder find the layout by its
metadata file names and columns, with no flags.

The layouts are TOML files shipped with the package (`layouts/` at the top of the repository, like
`presets/`): readable, and copyable as the start of a description for one's own dataset.
"""

from __future__ import annotations

from pathlib import Path

from mammo_tui.data.description import Description, from_mapping, load_description
from mammo_tui.errors import DatasetError


def _layout_dir() -> Path:
    # as presets/: inside the package in a wheel, the top-level folder in a checkout / editable install
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "layouts", here.parent / "layouts"):
        if candidate.is_dir():
            return candidate
    return here.parent / "layouts"


def layout_names() -> list[str]:
    return sorted(entry.name[:-5] for entry in _layout_dir().iterdir() if entry.name.endswith(".toml"))


def layout_file(name: str) -> Path:
    return _layout_dir() / f"{name}.toml"


def load_layout(name: str) -> Description:
    """A built-in layout by name, or a description file (a path ending in .toml)."""
    import tomllib

    if name.endswith(".toml") or "/" in name:
        return load_description(name)
    if name not in layout_names():
        raise DatasetError(f"unknown layout {name!r}; the built-in layouts are: {', '.join(layout_names())} "
                           "(or give a description file: --dataset FILE.toml)")
    data = tomllib.loads(layout_file(name).read_text(encoding="utf-8"))
    return from_mapping(data, f"layout {name}", name=name)


def _columns_of(path: Path, wanted: set[str]) -> set[str]:
    from mammo_tui.data.table import normalise_column, read_columns

    try:
        return {normalise_column(c) for c in read_columns(path, prefer=wanted)}
    except (DatasetError, OSError, UnicodeDecodeError):
        return set()


def _matches(description: Description, root: Path) -> bool:
    """Every detect file matches, and one file of the first has every detect column."""
    from mammo_tui.data.described import find_files
    from mammo_tui.data.table import normalise_column

    found = [find_files(root, pattern) for pattern in description.detect_files]
    if not all(found):
        return False
    wanted = {normalise_column(c) for c in description.detect_columns}
    return not wanted or any(wanted <= _columns_of(path, wanted) for path in found[0])


def recognise(root: str | Path) -> Description | None:
    """The built-in layout whose metadata files (and columns) the folder has; None when none does.
    DatasetError when two layouts match (say which with --layout)."""
    root = Path(root)
    found = [load_layout(name) for name in layout_names()]
    matching = [d for d in found if _matches(d, root)]
    if len(matching) > 1:
        raise DatasetError(f"{root} looks like more than one dataset layout ({', '.join(d.name for d in matching)}); "
                           "say which with --layout NAME")
    return matching[0] if matching else None
