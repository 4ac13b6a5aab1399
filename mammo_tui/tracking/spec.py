"""Tracking specs: `mlflow:DIR_OR_URI` and `tensorboard:DIR`, parsed and checked without importing
either library. Their syntax is config's (config.parse_track_item: coerce checks the `track` key
with it); this module adds the TrackSpec, the merging and the library checks."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mammo_tui.config import TRACK_KINDS, parse_track_item, track_items
from mammo_tui.errors import TrackingError  # noqa: F401 (its home was here; the sinks import it from here)

KINDS = TRACK_KINDS
# kind -> (module that must import, the extra that installs it)
PACKAGES = {"mlflow": ("mlflow", "mammo-tui[mlflow]"), "tensorboard": ("tensorboard", "mammo-tui[tensorboard]")}
# MLflow stores behind SQLAlchemy: mlflow-skinny (the extra) opens them only with sqlalchemy + alembic
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class TrackSpec:
    kind: str  # mlflow | tensorboard
    target: str  # as given: a folder, or for mlflow a tracking URI

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.target}"

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str, source: str = "--track") -> TrackSpec:
    return TrackSpec(*parse_track_item(text, source))


def parse_specs(value: str | Iterable[str], source: str = "--track") -> list[TrackSpec]:
    """A config value ("mlflow:x,tensorboard:y", split at commas) or a list of specs (--track, one
    each); empty items are skipped, repeats dropped."""
    return merged([parse_spec(item, source) for item in track_items(value)])


def merged(*groups: Iterable[TrackSpec]) -> list[TrackSpec]:
    out: list[TrackSpec] = []
    for spec in (s for group in groups for s in group):
        if spec not in out:
            out.append(spec)
    return out


def mlflow_uri(target: str) -> str:
    """The tracking URI of an mlflow target: a plain path is a local store in that folder."""
    if _SCHEME.match(target):  # a scheme has 2+ letters: "C:" stays a (Windows) path
        return target
    return Path(target).expanduser().absolute().as_uri()


def require(specs: Iterable[TrackSpec]) -> None:
    """Each spec's library is installed (found, not imported); else the pip command to install it."""
    for spec in specs:
        module, extra = PACKAGES[spec.kind]
        if importlib.util.find_spec(module) is None:
            raise TrackingError(f"--track {spec.text}: {spec.kind} is not installed. Install it with: "
                                f'pip install "{extra}"')
        scheme = (_SCHEME.match(spec.target) or [None, ""])[1].lower().split("+")[0]
        if spec.kind == "mlflow" and scheme in DATABASE_SCHEMES and not all(
                importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")):
            raise TrackingError(f"--track {spec.text}: a {scheme} tracking store needs SQLAlchemy and Alembic, "
                                "which mlflow-skinny leaves out. Install them with: pip install sqlalchemy alembic "
                                "(or the full: pip install mlflow), or track to a folder: mlflow:DIR")


def tracking_specs(request_track: Iterable[str], config_track: str = "") -> list[TrackSpec]:
    """What a run tracks to: this session's --track specs and the config's `track`, libraries checked."""
    specs = merged(parse_specs(list(request_track)), parse_specs(config_track or "", source="config track"))
    require(specs)
    return specs
