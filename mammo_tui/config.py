"""The training configuration: one dataclass, TOML presets, and `--set key=value` overrides.

Key names are a public contract (presets and scripts use them); add keys, never rename them.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, NamedTuple, get_type_hints

from mammo_tui.errors import ConfigError, TrackingError


def _presets_dir() -> Path:
    # Installed wheels carry the presets inside the package (pyproject maps presets/ there);
    # a source checkout or editable install reads the top-level presets/ folder users copy from.
    here = Path(__file__).resolve().parent
    for candidate in (here / "presets", here.parent / "presets"):
        if candidate.is_dir():
            return candidate
    return here.parent / "presets"


PRESETS_DIR = _presets_dir()
MORE_EPOCHS = 5  # what the suggested commands add to a run that trained all its epochs

CHOICES: dict[str, tuple[str, ...]] = {
    "arch": ("resnet18", "resnet34", "resnet50", "efficientnet_b0"),
    "freeze": ("head", "last_block", "last_two_blocks", "none"),
    "sampler": ("weighted", "none"),
    "class_weights": ("balanced", "none"),
    "loss": ("ce", "focal", "logit_adjusted"),
    "scheduler": ("cosine", "plateau", "none"),
    "on_collapse": ("warn", "stop", "recover"),
    "device": ("auto", "cpu", "cuda"),
}


@dataclass
class TrainConfig:
    # model
    arch: str = "resnet50"
    pretrained: bool = True
    weights: str = ""  # local weights file; "" = torchvision's weights API and cache
    allow_partial_weights: bool = False  # accept a weights file that leaves backbone layers unset
    freeze: str = "last_block"
    warmup_epochs: int = 2  # head-only epochs before the `freeze` blocks unfreeze
    # imbalance defenses
    sampler: str = "weighted"
    # weighted sampler: per-image weight count(class) ** -sampler_power; 1 = near-uniform batches,
    # 0.5 = square-root sampling (rare classes over-sampled, but less), 0 = the natural frequencies
    sampler_power: float = 1.0
    class_weights: str = "none"
    loss: str = "ce"
    focal_gamma: float = 2.0
    la_tau: float = 1.0
    allow_double_balancing: bool = False
    # optimisation
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 16
    img_size: int = 224
    # crop to the breast and flip right breasts so the chest wall is on the left (data/breast.py):
    # more of the img_size x img_size input lands on tissue; recorded in the checkpoint
    crop_breast: bool = True
    augment: bool = True
    scheduler: str = "cosine"
    grad_clip: float = 1.0
    early_stop_patience: int = 5  # epochs without a better selection score; 0 = off
    # decoupled classifier re-training (Kang et al. 2020): the last crt_epochs of the run re-train
    # a fresh head on the best backbone with class-balanced sampling; 0 = off
    crt_epochs: int = 0
    seed: int = 42
    # data
    val_fraction: float = 0.2
    num_workers: int = -1  # -1 = chosen from the CPU count
    preprocess_workers: int = -1  # processes decoding images on a first run; -1 = all cores but one
    frozen_feature_cache: bool = True  # precompute backbone features when nothing below the head trains
    # collapse detection (DESIGN.md rules)
    on_collapse: str = "warn"
    collapse_kappa: float = 0.2
    collapse_dominance: float = 0.99
    warn_bal_acc_adj: float = 0.3
    warn_drift: float = 0.2  # rise of the top class's prediction share between epochs
    warn_dominance: float = 0.9  # a class this far ahead in the predictions (but not in the truth)
    # runtime
    device: str = "auto"
    amp: bool = True  # CUDA only
    max_batches_per_epoch: int = 0  # 0 = all; for smoke tests
    # where else the run's events go, comma-separated: "mlflow:DIR_OR_URI,tensorboard:DIR" (tracking/);
    # --track adds more for one session. Not how the model trains: see NOT_TRAINING_KEYS
    track: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_mapping({**self.to_dict(), **changes}, source="change")


KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
# Keys that say where a run's events go, not how the model trains: diff() leaves them out, so a
# change on --resume, between a CV's folds or in the runs browser is no config change.
NOT_TRAINING_KEYS: tuple[str, ...] = ("track",)
_TYPES = get_type_hints(TrainConfig)


def key_type(key: str) -> type:
    """A config key's type (bool, int, float or str); KeyError for an unknown key."""
    return _TYPES[key]


class Range(NamedTuple):
    low: float
    high: float
    why: str
    open_low: bool = False  # (low, high]: low itself is refused
    open_high: bool = False

    def holds(self, value: float) -> bool:
        # written so that NaN fails every comparison, and +-inf fails the finite bounds
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def text(self) -> str:
        return (f"{'(' if self.open_low else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.open_high else ']'}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


MAX_EPOCHS = 10_000
# Every int and float key's allowed values: the one table coerce() checks (a test fails when a
# numeric key has no row). Out-of-range values would crash, hang or silently do nothing later.
RANGES: dict[str, Range] = {
    "warmup_epochs": Range(0, MAX_EPOCHS, "head-only epochs; 0 = none"),
    "sampler_power": Range(0, 1, "1 = inverse frequency, 0.5 = square-root sampling, 0 = natural frequencies"),
    "focal_gamma": Range(0, 10, "0 = plain cross-entropy; the focal-loss paper uses 0.5 to 5"),
    "la_tau": Range(0, 10, "0 = no logit adjustment; 1 is the paper's setting"),
    "lr": Range(0, 1, "AdamW steps above 1 diverge at once", open_low=True),
    "weight_decay": Range(0, 1, "decoupled AdamW decay; 0 = off"),
    "epochs": Range(1, MAX_EPOCHS, "at least one epoch; more is a typo"),
    "batch_size": Range(1, 1024, "one batch is held in memory at once"),
    "img_size": Range(16, 2048, "images are resized to img_size x img_size and held in memory; 2048 px is "
                                "about full mammogram resolution, 16 MiB per image"),
    "grad_clip": Range(0, 1000, "the largest gradient norm kept; 0 = no clipping"),
    "early_stop_patience": Range(0, MAX_EPOCHS, "epochs without improvement; 0 = off"),
    "crt_epochs": Range(0, MAX_EPOCHS, "the last epochs re-train the head; 0 = off"),
    # numpy and scikit-learn take seeds below 2**32; the run adds per-epoch and per-attempt offsets
    "seed": Range(0, 2**31 - 1, "numpy and scikit-learn seeds, with room for per-epoch offsets"),
    "val_fraction": Range(0, 1, "the share of patients in validation, e.g. 0.2", open_low=True, open_high=True),
    "num_workers": Range(-1, 64, "-1 = chosen from the CPU count; each worker is a process"),
    "preprocess_workers": Range(-1, 256, "-1 = all cores but one; processes decoding images on a first run"),
    "collapse_kappa": Range(-1, 1, "Cohen's kappa's range"),
    "collapse_dominance": Range(0, 1, "a share of the predictions", open_low=True),
    "warn_bal_acc_adj": Range(-1, 1, "adjusted balanced accuracy's range"),
    "warn_drift": Range(0, 1, "a rise of one class's prediction share", open_low=True),
    "warn_dominance": Range(0, 1, "a share of the predictions", open_low=True),
    "max_batches_per_epoch": Range(0, 10**9, "0 = all batches"),
}


def coerce(key: str, value: Any, source: str = "config") -> Any:
    """Check one value against the key's type and choices; strings from `--set` are parsed."""
    if key not in _TYPES:
        close = [k for k in KEYS if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}. Known keys: {', '.join(KEYS)}")
    kind = _TYPES[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                value = lowered in ("true", "1", "yes", "on")
            elif not isinstance(value, bool):
                raise ValueError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()
                                           and math.isfinite(value)):
                raise ValueError
            # nan and inf stay floats here: the range check below names them like any out-of-range value
            value = int(value) if not isinstance(value, float) or math.isfinite(value) else value
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {key} must be {kind.__name__}, got {value!r} ({type(value).__name__})"
        ) from None
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{source}: {key} must be one of {', '.join(CHOICES[key])}; got {value!r}")
    if key in RANGES and not RANGES[key].holds(value):
        span = RANGES[key]
        raise ConfigError(f"{source}: {key} must be in {span.text()} ({span.why}), got {value!r}")
    if kind is str and any(ch in value for ch in "\0\n\r"):
        raise ConfigError(f"{source}: {key} must be one line of text (no NUL bytes or line breaks), "
                          f"got {value!r}")
    if key == "track":
        for item in track_items(value):  # its syntax; the library is checked at training
            parse_track_item(item, source=f"{source}: track")
    return value


# -- tracking specs: `kind:target` (the `track` key, --track) -------------------------------------------
# Their syntax is checked here, without importing any tracking library; tracking/spec.py builds its
# TrackSpecs on these and checks the libraries.
TRACK_KINDS = {
    "mlflow": "mlflow:DIR_OR_URI (a folder, file:/..., http(s)://SERVER, databricks)",
    "tensorboard": "tensorboard:DIR",
}


def parse_track_item(text: str, source: str = "--track") -> tuple[str, str]:
    """One `kind:target` spec -> (kind, target); TrackingError naming the problem."""
    kind, sep, target = text.strip().partition(":")
    kind, target = kind.strip().lower(), target.strip()
    usage = " or ".join(TRACK_KINDS.values())
    if kind not in TRACK_KINDS:
        raise TrackingError(f"{source} {text!r}: unknown tracking kind {kind!r}; use {usage}")
    if not sep or not target:
        raise TrackingError(f"{source} {text!r}: say where to write, e.g. {TRACK_KINDS[kind]}")
    return kind, target


def track_items(value: str | Iterable[str]) -> list[str]:
    """A config value ("mlflow:x,tensorboard:y", split at commas) or a list of specs: the non-empty items."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item for item in items if item.strip()]


def _check_ranges(cfg: TrainConfig, source: str) -> None:
    """The rules between keys; each key's own range is RANGES, checked in coerce()."""
    if cfg.crt_epochs >= cfg.epochs:
        raise ConfigError(f"{source}: crt_epochs ({cfg.crt_epochs}) must be smaller than epochs "
                          f"({cfg.epochs}): they are the last epochs of the run")
    balancers = balancing(cfg)
    if len(balancers) > 1 and not cfg.allow_double_balancing:
        raise ConfigError(
            f"{source}: {' together with '.join(balancers)} balances the classes twice (rare classes "
            "are favoured by each of them), which over-corrects toward the rare classes and makes "
            "training unstable (logit-adjusted loss on sampler-balanced batches predicted A for "
            "every image). Use one of them, or set allow_double_balancing=true to force it."
        )
    if cfg.freeze != "none" and not cfg.pretrained and not cfg.weights:
        raise ConfigError(
            f"{source}: freeze={cfg.freeze} with pretrained=false freezes a randomly initialised backbone: "
            "its random features learn nothing, so freezing is no defense. Use freeze=none to train "
            "from scratch, or give pretrained weights (pretrained=true, or --weights FILE)."
        )


def balancing(cfg: TrainConfig) -> list[str]:
    """The class-balancing mechanisms a config turns on (more than one = double balancing).

    Each corrects for the class prior on its own: the sampler in the batches, class weights in the
    loss's weights, logit adjustment in the logits (the engine's prior is the training-label
    frequency, which is what sampled batches already undo). Focal loss is not one: it re-weights
    hard examples, not classes.
    """
    out = []
    if cfg.sampler == "weighted" and cfg.sampler_power > 0:
        out.append("sampler=weighted")
    if cfg.class_weights == "balanced":
        out.append("class_weights=balanced")
    if cfg.loss == "logit_adjusted" and cfg.la_tau > 0:
        out.append("loss=logit_adjusted")
    return out


def from_mapping(values: dict[str, Any], source: str = "config") -> TrainConfig:
    checked = {key: coerce(key, value, source) for key, value in values.items()}
    cfg = TrainConfig(**checked)
    _check_ranges(cfg, source)
    return cfg


# Keys added after run directories were written, with the value such a run trained with: an old
# run's saved config (config.toml, a checkpoint, cv.json) lacks the key, and taking the new default
# would change it on --resume or eval (e.g. images suddenly cropped).
LEGACY_VALUES: dict[str, Any] = {"crop_breast": False}


def saved_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """A run's saved config (config.toml, a checkpoint's, cv.json's): a key it predates keeps the
    value the run trained with (LEGACY_VALUES), not today's default."""
    return from_mapping({**LEGACY_VALUES, **values}, source=source)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path
    builtin = PRESETS_DIR / f"{name_or_path}.toml"
    if not builtin.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}. Built-in presets: {', '.join(preset_names())}; "
            "or pass the path of a .toml file"
        )
    return builtin


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset TOML (flat `key = value` table; a [train] table is accepted too)."""
    path = preset_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path}: not valid TOML: {exc}") from None
    data.pop("description", None)
    if isinstance(data.get("train"), dict):
        data = {**data.pop("train"), **data}
    for key, value in data.items():
        coerce(key, value, source=f"preset {path.name}")
    return data


def preset_description(name_or_path: str) -> str:
    data = tomllib.loads(preset_path(name_or_path).read_text(encoding="utf-8"))
    return str(data.get("description", ""))


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; TOML syntax for the value when it parses, else the raw string."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = coerce(key, value, source=f"--set {item}")
    return out


def resolve(preset: str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- preset <- overrides (CLI flags, then --set)."""
    values: dict[str, Any] = load_preset(preset) if preset else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_mapping(values, source=f"preset {preset}" if preset else "config")


def to_toml(cfg: TrainConfig | dict[str, Any], description: str = "", comments: list[str] | None = None) -> str:
    """Write a flat TOML table (only the value types TrainConfig uses), after `# comment` lines."""
    values = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    lines = [f"# {line}".rstrip() for text in (comments or []) for line in text.splitlines() or [""]]
    lines += [f'description = "{description}"'] if description else []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def diff(a: TrainConfig, b: TrainConfig, training_only: bool = True) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ; NOT_TRAINING_KEYS only with training_only=False."""
    da, db = a.to_dict(), b.to_dict()
    keys = [k for k in KEYS if k not in NOT_TRAINING_KEYS] if training_only else KEYS
    return {k: (da[k], db[k]) for k in keys if da[k] != db[k]}
