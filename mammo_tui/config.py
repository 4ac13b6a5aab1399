"""The training configuration: one dataclass, TOML presets, and `--set key=value` overrides.

Key names are a public contract (presets and scripts use them); add keys, never rename them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from mammo_tui.errors import ConfigError


def _presets_dir() -> Path:
    # Installed wheels carry the presets inside the package (pyproject maps presets/ there);
    # a source checkout or editable install reads the top-level presets/ folder users copy from.
    here = Path(__file__).resolve().parent
    for candidate in (here / "presets", here.parent / "presets"):
        if candidate.is_dir():
            return candidate
    return here.parent / "presets"


PRESETS_DIR = _presets_dir()

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_mapping({**self.to_dict(), **changes}, source="change")


KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
_TYPES = get_type_hints(TrainConfig)


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
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
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
    return value


def _check_ranges(cfg: TrainConfig, source: str) -> None:
    positive = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key} must be > 0, got {value}")
    if cfg.img_size < 16:
        raise ConfigError(f"{source}: img_size must be at least 16 px, got {cfg.img_size}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"{source}: val_fraction must be between 0 and 1, got {cfg.val_fraction}")
    if cfg.warmup_epochs < 0 or cfg.early_stop_patience < 0:
        raise ConfigError(f"{source}: warmup_epochs and early_stop_patience must be >= 0")
    if not 0 <= cfg.crt_epochs < cfg.epochs:
        raise ConfigError(f"{source}: crt_epochs ({cfg.crt_epochs}) must be >= 0 and smaller than epochs "
                          f"({cfg.epochs}): they are the last epochs of the run")
    if not 0.0 <= cfg.sampler_power <= 1.0:
        raise ConfigError(f"{source}: sampler_power must be between 0 and 1 (1 = inverse frequency, 0.5 = "
                          f"square-root sampling, 0 = natural frequencies), got {cfg.sampler_power}")
    if not 0.0 < cfg.warn_dominance <= 1.0:
        raise ConfigError(f"{source}: warn_dominance must be in (0, 1], got {cfg.warn_dominance}")
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


def diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in KEYS if da[k] != db[k]}
