"""The sweep spec: a TOML file naming the configurations to compare (pure: no torch).

    [sweep]       base = "auto" | preset name | preset path;  seeds = [0, 1];  description = "..."
    [set]         config keys applied to every run on top of the base
    [[variants]]  name = "...";  set = { key = value, ... }        (named configurations, in order)
    [grid]        key = [value, ...]   (every variant crossed with every combination of these)
    [search]      trials, sampler = "tpe" | "random", prune;  [search.space] key = [choices] or
                  { low, high, log, step }   (an Optuna study; the optional extra `optuna`)

Every value goes through config.coerce, so a sweep refuses what `--set` refuses, naming the file,
the table and the key. The parsed spec is stored in sweep.json (`to_dict`), which is how
`sweep --resume` rebuilds it and how a re-run spots a changed spec (`spec_changes`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_tui.config import KEYS, PRESETS_DIR, coerce, key_type, preset_path
from mammo_tui.errors import ConfigError
from mammo_tui.rundir import names_something, safe_run_name

SWEEPS_DIR = PRESETS_DIR / "sweeps"
SEARCH_SAMPLERS = ("tpe", "random")
MAX_RUNS = 5000  # runs one sweep may train (its sweep.json lists them all; a run takes minutes at least)
OPTUNA_HINT = "pip install 'mammo-tui[optuna]' (or pip install 'optuna>=3.4')"
_TABLES = {"sweep": ("base", "seeds", "description"), "set": None, "variants": None, "grid": None,
           "search": ("trials", "sampler", "prune", "space")}
_VARIANT_KEYS = ("name", "set", "description")
_RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Configuration:
    """One configuration of the sweep: a variant with one combination of grid values."""

    config_id: str  # e.g. "focal+lr=0.0003"
    changes: dict[str, Any]  # keys set on top of the base (+ [set]): the variant's, then the grid's


@dataclass(frozen=True)
class QueuedRun:
    """One run of the queue: a configuration trained with one seed."""

    run: str  # its folder name in the sweep folder: safe_run_name(f"{config_id}-seed{seed}")
    config_id: str
    seed: int
    changes: dict[str, Any]
    trial: int | None = None  # an Optuna trial's number (search runs)

    def member(self) -> dict[str, Any]:
        """Its entry in sweep.json's `members`."""
        out = {"run": self.run, "config_id": self.config_id, "seed": self.seed, "changes": self.changes}
        if self.trial is not None:
            out["trial"] = self.trial
        return out


@dataclass
class SearchSpec:
    trials: int
    sampler: str = "tpe"
    prune: bool = True
    space: dict[str, Any] = field(default_factory=dict)  # key -> [choices] | {low, high, log, step}


@dataclass
class SweepSpec:
    source: str  # the file it came from (for messages)
    base: str = "auto"  # "auto", a built-in preset name, or an absolute preset path
    seeds: list[int] = field(default_factory=lambda: [42])
    set: dict[str, Any] = field(default_factory=dict)
    variants: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: SearchSpec | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return Path(self.source).stem or "sweep"

    def to_dict(self) -> dict[str, Any]:
        """The spec as sweep.json stores it (also what `from_dict` reads back)."""
        search = None if self.search is None else {
            "trials": self.search.trials, "sampler": self.search.sampler, "prune": self.search.prune,
            "space": self.search.space}
        return {"base": self.base, "seeds": list(self.seeds), "set": dict(self.set),
                "variants": [{"name": n, "set": dict(s)} for n, s in self.variants],
                "grid": {k: list(v) for k, v in self.grid.items()}, "search": search,
                "description": self.description}

    def digest(self) -> str:
        """sha256 of the normalised spec (comments and formatting do not count)."""
        text = json.dumps({k: v for k, v in self.to_dict().items() if k != "description"}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def configurations(self) -> list[Configuration]:
        """Variants (in order) crossed with every grid combination (keys in file order)."""
        variants = self.variants or [("", {})]
        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys))) if keys else [()]
        if not self.variants and not keys:
            return [Configuration("base", {})] if self.search is None else []
        out = []
        for name, changes in variants:
            for combo in combos:
                values = dict(zip(keys, combo))
                parts = [name] if name else []
                parts += [f"{k}={format_value(v)}" for k, v in values.items()]
                out.append(Configuration("+".join(parts), {**changes, **values}))
        return out

    def queue(self) -> list[QueuedRun]:
        """The variant / grid runs, seed-major: every configuration with the first seed, then every
        one with the second..., so a sweep stopped part-way has already ranked every configuration.
        (Search trials are asked for one at a time after these; see drivers/sweep.py.)"""
        return [QueuedRun(run_name(c.config_id, seed), c.config_id, seed, c.changes)
                for seed in self.seeds for c in self.configurations()]

    def planned(self) -> int:
        """How many runs the sweep will train (search trials included)."""
        return len(self.queue()) + (self.search.trials * len(self.seeds) if self.search else 0)


def run_name(config_id: str, seed: int) -> str:
    return safe_run_name(f"{config_id}-seed{seed}", what=f"the run folder of configuration {config_id!r}")


def format_value(value: Any) -> str:
    """A value in a configuration id: shortest float repr (3e-4 -> 0.0003), true / false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


# -- reading -----------------------------------------------------------------------------------


def spec_path(name_or_path: str) -> Path:
    """A spec file, or a built-in sweep by name (`mammo-tui sweep defenses`)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file() or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"sweep spec {path} does not exist" + (" (it is a directory; to continue a "
                              f"sweep use --resume {path})" if path.is_dir() else ""))
        return path
    builtin = SWEEPS_DIR / f"{name_or_path}.toml"
    if not builtin.is_file():
        raise ConfigError(f"unknown sweep {name_or_path!r}. Built-in sweeps: {', '.join(sweep_names()) or 'none'}; "
                          "or pass the path of a .toml spec")
    return builtin


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.toml"))


def load_spec(name_or_path: str) -> SweepSpec:
    path = spec_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep spec {path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"sweep spec {path}: cannot read it: {exc.strerror or exc}") from None
    return parse_spec(data, str(path))


def from_dict(data: dict[str, Any], source: str) -> SweepSpec:
    """A spec stored in sweep.json (SweepSpec.to_dict), checked again like a file."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: no \"spec\" table; it was edited or damaged")
    table = {"sweep": {"base": data.get("base", "auto"), "seeds": data.get("seeds"),
                       "description": data.get("description", "")},
             "set": data.get("set") or {}, "variants": data.get("variants") or [], "grid": data.get("grid") or {}}
    if data.get("search"):
        table["search"] = data["search"]
    # the base is not looked up again: sweep.json holds the config it gave (a preset file may be gone)
    spec = parse_spec({**table, "sweep": {**table["sweep"], "base": "auto"}}, source, base_dir=None)
    spec.base = str(data.get("base") or "auto")
    return spec


def parse_spec(data: dict[str, Any], source: str, base_dir: Path | None = ...) -> SweepSpec:
    """Check a parsed TOML table; every mistake is a ConfigError naming source, table and key."""
    if base_dir is ...:
        base_dir = Path(source).resolve().parent
    for table in data:
        if table not in _TABLES:
            raise ConfigError(f"{source}: unknown table [{table}]; a sweep spec has {', '.join(f'[{t}]' for t in _TABLES)}")
    sweep = _table(data, "sweep", source)
    for key in sweep:
        if key not in _TABLES["sweep"]:
            raise ConfigError(f"{source}: [sweep] has no key {key!r} (known: {', '.join(_TABLES['sweep'])}); "
                              "config keys belong in [set]")
    spec = SweepSpec(source=source, base=_base(sweep.get("base", "auto"), source, base_dir),
                     description=str(sweep.get("description", "")))
    spec.set = _changes(_table(data, "set", source), f"{source} [set]")
    spec.seeds = _seeds(sweep.get("seeds"), spec.set, source)
    spec.variants = _variants(data.get("variants", []), source)
    spec.grid = _grid(_table(data, "grid", source), source)
    if "search" in data:
        spec.search = _search(_table(data, "search", source), source)
    _refuse_too_many_runs(spec, source)  # before the queue is built: a 10^9 grid would fill the memory
    seen: dict[str, str] = {}
    for run in spec.queue():  # two ids that sanitise to one folder name would share a run
        if run.run in seen and seen[run.run] != run.config_id:
            raise ConfigError(f"{source}: configurations {seen[run.run]!r} and {run.config_id!r} would both "
                              f"train in the folder {run.run}; rename a variant")
        seen[run.run] = run.config_id
    return spec


def _refuse_too_many_runs(spec: SweepSpec, source: str) -> None:
    """ConfigError naming the product when the sweep would train more than MAX_RUNS runs."""
    sizes = [len(values) for values in spec.grid.values()]
    configurations = max(1, len(spec.variants)) * math.prod(sizes) if (spec.variants or sizes) else \
        (0 if spec.search else 1)
    trials = spec.search.trials if spec.search else 0
    runs = (configurations + trials) * len(spec.seeds)
    if runs <= MAX_RUNS:
        return
    product = " x ".join(([f"{len(spec.variants)} variants"] if spec.variants else [])
                         + [f"{len(values)} {key}" for key, values in spec.grid.items()])
    what = f"{configurations:,} configurations ({product})" if product else f"{configurations} configuration"
    what += f" + {trials:,} search trials" if trials else ""
    raise ConfigError(f"{source}: the sweep would train {runs:,} runs: {what}, x {len(spec.seeds):,} seeds; at "
                      f"most {MAX_RUNS:,} are accepted. Narrow the grid or the seeds, or split it into sweeps.")


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {value!r}")
    return value


def _base(value: Any, source: str, base_dir: Path | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: [sweep] base must be \"auto\", a preset name or a preset path, got {value!r}")
    if value == "auto":
        return value
    path = Path(value)
    if base_dir is not None and (path.suffix == ".toml" or "/" in value) and not path.is_absolute():
        path = base_dir / path  # relative to the spec file, like an include
    try:
        found = preset_path(str(path) if (path.suffix == ".toml" or "/" in value) else value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [sweep] base: {exc}") from None
    return value if found.parent == PRESETS_DIR and found.stem == value else str(found.resolve())


def _seeds(value: Any, common: dict[str, Any], source: str) -> list[int]:
    if value is None:
        return [common.get("seed", 42)]
    if "seed" in common:
        raise ConfigError(f"{source}: [set] seed and [sweep] seeds both given; list the seeds in [sweep] seeds only")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: [sweep] seeds must be a non-empty list of whole numbers, e.g. [0, 1]; got {value!r}")
    seeds = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"{source}: [sweep] seeds must be whole numbers, e.g. [0, 1]; got {item!r}")
        seeds.append(coerce("seed", item, source=f"{source} [sweep] seeds"))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: [sweep] seeds lists a seed twice: {value!r}")
    return seeds


def _changes(values: dict[str, Any], where: str, seed_ok: bool = True) -> dict[str, Any]:
    if not seed_ok and "seed" in values:
        raise ConfigError(f"{where}: seed cannot vary here; list the seeds in [sweep] seeds")
    return {key: coerce(key, value, source=where) for key, value in values.items()}


def _variants(value: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: variants must be [[variants]] tables with a name and a set table")
    out: list[tuple[str, dict[str, Any]]] = []
    for number, variant in enumerate(value, 1):
        where = f"{source} [[variants]] #{number}"
        for key in variant:
            if key not in _VARIANT_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (a variant has name and set = {{ key = value }})")
        name = variant.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: needs a name, e.g. name = \"focal\"")
        if any(ch in name for ch in "+=\0\n\r") or not names_something(name):
            raise ConfigError(f"{where}: name {name!r} needs a letter or digit and may not hold '+', '=' or "
                              "line breaks (they separate the parts of a configuration id)")
        if re.fullmatch(r"trial-\d+", name.strip()):  # the search's own ids (sweep_search): one folder for two
            raise ConfigError(f"{where}: name {name!r} is how the search names its trials; pick another name")
        if name in (n for n, _ in out):
            raise ConfigError(f"{where}: the name {name!r} is used twice; each variant needs its own name")
        changes = variant.get("set", {})
        if not isinstance(changes, dict):
            raise ConfigError(f"{where} ({name}): set must be a table, e.g. set = {{ loss = \"focal\" }}")
        out.append((name, _changes(changes, f"{where} ({name}) set", seed_ok=False)))
    return out


def _grid(values: dict[str, Any], source: str) -> dict[str, list[Any]]:
    out = {}
    for key, items in values.items():
        where = f"{source} [grid] {key}"
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: must be a non-empty list of values, e.g. {key} = [1e-4, 3e-4]; got {items!r}")
        if key == "seed":
            raise ConfigError(f"{where}: seeds are listed in [sweep] seeds, not in the grid")
        checked = [coerce(key, item, source=where) for item in items]
        if len({json.dumps(v) for v in checked}) != len(checked):
            raise ConfigError(f"{where}: lists a value twice: {items!r}")
        out[key] = checked
    return out


def _search(values: dict[str, Any], source: str) -> SearchSpec:
    for key in values:
        if key not in _TABLES["search"]:
            raise ConfigError(f"{source}: [search] has no key {key!r} (known: {', '.join(_TABLES['search'])})")
    trials = values.get("trials")
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 10_000:
        raise ConfigError(f"{source}: [search] trials must be a whole number from 1 to 10000, got {trials!r}")
    sampler = values.get("sampler", "tpe")
    if sampler not in SEARCH_SAMPLERS:
        raise ConfigError(f"{source}: [search] sampler must be one of {', '.join(SEARCH_SAMPLERS)}; got {sampler!r}")
    prune = values.get("prune", True)
    if not isinstance(prune, bool):
        raise ConfigError(f"{source}: [search] prune must be true or false, got {prune!r}")
    space = values.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{source}: [search.space] must name at least one key to search, e.g. "
                          "lr = { low = 1e-5, high = 1e-2, log = true }")
    return SearchSpec(trials=trials, sampler=sampler, prune=prune,
                      space={key: _dimension(key, dim, source) for key, dim in space.items()})


def _dimension(key: str, dim: Any, source: str) -> Any:
    where = f"{source} [search.space] {key}"
    if key not in KEYS:
        coerce(key, None, source=where)  # the unknown-key message with its suggestions
    if key == "seed":
        raise ConfigError(f"{where}: seeds are listed in [sweep] seeds, not searched")
    if isinstance(dim, list):
        if not dim:
            raise ConfigError(f"{where}: an empty list of choices")
        choices = [coerce(key, item, source=where) for item in dim]
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: lists a choice twice: {dim!r}")
        return choices
    kind = key_type(key)
    if not isinstance(dim, dict) or kind not in (int, float):
        raise ConfigError(f"{where}: give a list of choices" + (", or a range { low = ..., high = ... } "
                          "(a number key)" if kind in (int, float) else f" ({key} is not a number)")
                          + f"; got {dim!r}")
    for part in dim:
        if part not in _RANGE_KEYS:
            raise ConfigError(f"{where}: unknown key {part!r} in the range (known: {', '.join(_RANGE_KEYS)})")
    if "low" not in dim or "high" not in dim:
        raise ConfigError(f"{where}: a range needs low and high, e.g. {{ low = 1e-5, high = 1e-2, log = true }}")
    low, high = (coerce(key, dim[b], source=f"{where} {b}") for b in ("low", "high"))
    if not low < high:
        raise ConfigError(f"{where}: low ({low!r}) must be below high ({high!r})")
    log = dim.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low!r}")
    out: dict[str, Any] = {"low": low, "high": high, "log": log}
    if "step" in dim:
        step = dim["step"]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log:
            raise ConfigError(f"{where}: step must be a number > 0, and not with log = true; got {step!r}")
        out["step"] = int(step) if kind is int else float(step)
    return out


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two stored specs, in words (`[grid] lr: [...] -> [...]`)."""
    out = []
    for part in ("base", "seeds"):
        if old.get(part) != new.get(part):
            out.append(f"[sweep] {part}: {old.get(part)!r} -> {new.get(part)!r}")
    for part in ("set", "grid"):
        a, b = old.get(part) or {}, new.get(part) or {}
        out += [f"[{part}] {k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
                for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
    a = {v["name"]: v["set"] for v in old.get("variants") or []}
    b = {v["name"]: v["set"] for v in new.get("variants") or []}
    out += [f"variant {n!r} removed" for n in a if n not in b]
    out += [f"variant {n!r} added" for n in b if n not in a]
    out += [f"variant {n!r}: set {a[n]!r} -> {b[n]!r}" for n in a if n in b and a[n] != b[n]]
    if not out and list(a) != list(b):
        out.append(f"variants reordered: {list(a)} -> {list(b)}")
    a, b = old.get("search") or {}, new.get("search") or {}
    if bool(a) != bool(b):
        out.append(f"[search] {'removed' if a else 'added'}")
    elif a:
        out += [f"[search] {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in ("trials", "sampler", "prune", "space")
                if a.get(k) != b.get(k)]
    return out
