"""Dataset fingerprint -> risk, preset and the reasons for it (DESIGN.md "Decision flow").

Two tables decide, and both are kept as data so the wizard can draw them:
- DECISION_TABLE (size x imbalance -> risk): which rule fires, the balancing and the warmup;
- SIZE_TABLE (images -> freezing depth).
How they combine: each rule sets the deepest training its risk allows (rule 1: head only; rules 2
and 3: last block; rule 4, low risk: no limit) and the size table picks the depth within that
limit. So for rules 1-3 the more frozen of the two tables wins (collapse is the failure this tool
exists to prevent, and few images leave little to fine-tune on); for rule 4 the size table wins,
which is the only way to reach full fine-tuning (> 10000 images).
The preset is the one named after the resulting depth; `overrides` holds what the rule states
that the preset file does not already say.

Three facts beyond the two tables shape the plan:
- *Independent samples.* The size conditions count patients when the dataset knows them: the
  four views of one exam are not four independent samples, and the split is by patient.
- *Pretrained weights.* Freezing preserves pretrained features; a frozen random backbone learns
  nothing, and head-only warmup epochs on random features are wasted (and look collapsed). When
  the weights are not available (see weights.py), the plan switches to the `from_scratch` preset
  (everything trains, no warmup) and says why.
- *The user's flags.* `overrides` given to plan() (CLI flags, `--set`, the demo's CPU sizing)
  win over the plan key by key; the resulting config and its collapse risks are part of the plan,
  so `plan`, the wizard, `train` and `cv` print and train the same thing.
- *The device and the detector.* Given a device (detect_device(), passed in so tests and snapshots
  do not depend on the machine), img_size follows it: a CPU keeps the preset's small size, a GPU
  gets 512 px for full-field images (density needs resolution), never more than the images hold.

Pure Python: the wizard imports this at start-up.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mammo_tui.config import TrainConfig, balancing, from_mapping, load_preset
from mammo_tui.labels import CLASS_NAMES

SMALL_DATASET = 1000  # images; below this the decision table treats a dataset as small
HIGH_IMBALANCE = 10.0  # max/min class count; above this the imbalance is high

# Freeze values from most frozen to full fine-tuning, and the preset file for each.
FREEZE_ORDER: tuple[str, ...] = ("head", "last_block", "last_two_blocks", "none")
PRESET_FOR_FREEZE = {
    "head": "head_only",
    "last_block": "last_block",
    "last_two_blocks": "last_two_blocks",
    "none": "full_finetune",
}
SCRATCH_PRESET = "from_scratch"  # no pretrained weights: nothing to freeze
DEMO_PRESET = "demo"
# What the demo preset sizes for a CPU; the defenses still come from the decision flow.
DEMO_SIZING = ("arch", "img_size", "batch_size", "epochs", "early_stop_patience")
# img_size by device: a CPU trains a resnet at 224 px at ~14 img/s (DESIGN.md); a GPU affords the
# resolution density needs. 1024 px is for a GPU with memory to spare (the user's choice).
DEVICE_IMG_SIZE = {"cpu": 224, "cuda": 512}
FULL_FIELD_SIDE = 1024  # images with a longer side below this gain nothing from more than the preset's size
FREEZE_TEXT = {
    "head": "head only",
    "last_block": "last block",
    "last_two_blocks": "last two blocks",
    "none": "full fine-tuning",
}


@dataclass(frozen=True)
class DecisionRow:
    rule: int
    images: str  # the condition on the image count, as the table prints it
    imbalance: str  # the condition on max/min
    risk: str
    action: str  # what the table says to do
    freeze: str  # the table's freezing depth
    cap: str  # the deepest freeze the rule allows when the size table asks for more
    settings: dict[str, Any]  # config values the rule states (beyond freezing)


DECISION_TABLE: list[DecisionRow] = [
    DecisionRow(1, "< 1000", "> 10", "highest", "frozen + head only, weighted sampler, warmup 3-5",
                "head", "head", {"sampler": "weighted", "warmup_epochs": 3}),
    DecisionRow(2, "< 1000", "<= 10", "medium", "frozen + last block, optional sampler, warmup 2",
                "last_block", "last_block", {"warmup_epochs": 2}),
    DecisionRow(3, ">= 1000", "> 10", "medium", "frozen + last block, weighted sampler, warmup 2",
                "last_block", "last_block", {"sampler": "weighted", "warmup_epochs": 2}),
    DecisionRow(4, ">= 1000", "<= 10", "low", "frozen + last two blocks, warmup 1",
                "last_two_blocks", "none", {"warmup_epochs": 1}),
]


@dataclass(frozen=True)
class SizeRow:
    images: str
    low: int  # inclusive
    high: float  # exclusive
    freeze: str


SIZE_TABLE: list[SizeRow] = [
    SizeRow("< 500", 0, 500, "head"),
    SizeRow("500-2000", 500, 2000, "last_block"),
    # "2000-10000" then "> 10000": 10000 itself still belongs to last two blocks.
    SizeRow("2000-10000", 2000, 10001, "last_two_blocks"),
    SizeRow("> 10000", 10001, math.inf, "none"),
]


@dataclass
class Plan:
    risk: str  # highest | medium | low
    preset: str  # a built-in preset name
    rule: int  # 1-4, the DECISION_TABLE row that fired
    freeze: str  # the preset's freeze value (the rule's; a user's --set freeze shows in config)
    reasons: list[str]  # sentences the wizard shows, in order
    overrides: dict[str, Any]  # config changes on top of the preset (rule, weights, sizing, user)
    n_images: int = 0
    imbalance: float = math.inf  # max/min; inf when a class is empty
    class_counts: list[int] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    n_patients: int | None = None  # independent samples, when the dataset knows its patients
    weights: Any = None  # weights.WeightsStatus, or None when not checked (assumed available)
    config: TrainConfig | None = None  # preset + overrides, validated
    warnings: list[str] = field(default_factory=list)  # collapse risks of that config here

    @property
    def samples(self) -> int:
        return independent_samples(self.n_images, self.n_patients)

    @property
    def headline(self) -> str:
        """`head_only (rule 1 of 4)`: what the console and config.toml say after `preset auto:`."""
        why = "; no pretrained weights" if self.preset == SCRATCH_PRESET else ""
        return f"{self.preset} (rule {self.rule} of {len(DECISION_TABLE)}{why})"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["imbalance"] = self.imbalance if math.isfinite(self.imbalance) else None  # strict JSON
        out["weights"] = self.weights.to_dict() if self.weights is not None else None
        out["config"] = self.config.to_dict() if self.config is not None else None
        return out


def imbalance_ratio(class_counts: Sequence[int]) -> float:
    """max/min class count; inf when some class is empty."""
    smallest = min(class_counts)
    return math.inf if smallest == 0 else max(class_counts) / smallest


def independent_samples(n_images: int, n_patients: int | None) -> int:
    """What the size rules count: patients when the dataset knows them (fewer than images), else images."""
    return n_patients if n_patients is not None and 0 < n_patients < n_images else n_images


def size_row(n_images: int) -> SizeRow:
    return next(row for row in SIZE_TABLE if row.low <= n_images < row.high)


def format_ratio(ratio: float) -> str:
    """One decimal, or more when one decimal would hide which side of 10 it is on (10.01)."""
    if not math.isfinite(ratio):
        return "infinite"
    text = f"{ratio:.1f}"
    if (float(text) > HIGH_IMBALANCE) != (ratio > HIGH_IMBALANCE):
        text = f"{ratio:.6g}"
    return text


def _name(index: int, n: int) -> str:
    return CLASS_NAMES[index] if n == len(CLASS_NAMES) else str(index)


WeightsProbe = Callable[[str, str, bool], Any]  # (arch, weights file, pretrained) -> WeightsStatus


def detect_device(requested: str = "auto") -> str:
    """'cpu' | 'cuda' for the config's device key without importing torch (the wizard plans at
    start-up): torch's answer when torch is already loaded, else whether an NVIDIA driver is there."""
    if requested in ("cpu", "cuda"):
        return requested
    if "torch" in sys.modules:
        return "cuda" if sys.modules["torch"].cuda.is_available() else "cpu"
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return "cpu"
    return "cuda" if os.path.exists("/proc/driver/nvidia/version") else "cpu"


def planning_device(overrides: dict[str, Any] | None = None) -> str:
    """The device a plan sizes images for: the user's `device` key, else what this box has."""
    return detect_device(str((overrides or {}).get("device") or "auto"))


def suggest_img_size(device: str, image_side: float | None, preset_size: int) -> tuple[int, str]:
    """(img_size, the reason) from the device and the detector size (median longer side, px)."""
    detector = f"{image_side:,.0f} px images" if image_side else "image sizes unknown"
    if device != "cuda":
        return preset_size, (f"Image size {preset_size} px: no GPU ({device}), where a network trains at "
                             f"{DEVICE_IMG_SIZE['cuda']} px too slowly ({detector}); on a GPU the plan says "
                             f"{DEVICE_IMG_SIZE['cuda']}.")
    if image_side is not None and image_side < FULL_FIELD_SIDE:
        return preset_size, (f"Image size {preset_size} px: a GPU, but the images are small ({detector}); "
                             "more pixels than the detector gives add nothing.")
    size = DEVICE_IMG_SIZE["cuda"]
    return size, (f"Image size {size} px: a GPU and full-field images ({detector}); density needs the "
                  "resolution (img_size = 1024 if GPU memory allows, with a smaller batch_size).")


def plan(n_images: int, class_counts: Sequence[int], n_patients: int | None = None, *,
         overrides: Mapping[str, Any] | None = None, demo: bool = False,
         weights_probe: WeightsProbe | None = None, device: str | None = None,
         image_side: float | None = None) -> Plan:
    """Walk the decision flow for a dataset with `n_images` images and these per-class counts.

    n_patients: distinct patients (groups) when known; the size rules count them.
    overrides: the user's config keys (flags, --set), applied last.
    demo: size the run for a CPU with the demo preset's sizing keys.
    weights_probe: weights.weights_status or a stand-in; None = not checked, assumed available.
    device: 'cpu' | 'cuda' (detect_device()) to suggest an img_size; None = the preset's, unexplained.
    image_side: the images' median longer side in px (the detector size), when known.
    """
    user = dict(overrides or {})
    counts = [int(c) for c in class_counts]
    if not counts or any(c < 0 for c in counts) or n_images < 0 or (n_patients is not None and n_patients < 0):
        raise ValueError("plan() needs a non-negative image count and at least one class count")
    ratio = imbalance_ratio(counts)
    empty = [_name(i, len(counts)) for i, c in enumerate(counts) if c == 0]
    # Views of one patient are not independent samples: the size rules count patients when known.
    samples = independent_samples(n_images, n_patients)
    small = samples < SMALL_DATASET
    high = ratio > HIGH_IMBALANCE  # inf > 10: an empty class is the worst imbalance there is
    row = DECISION_TABLE[(0 if high else 1) if small else (2 if high else 3)]

    reasons: list[str] = []
    if empty:
        verb = "has" if len(empty) == 1 else "have"
        reasons.append(
            f"Class {', '.join(empty)} {verb} no images: the imbalance is infinite, treated as "
            f"> {HIGH_IMBALANCE:g}. The model cannot learn a class it never sees; add images if you can."
        )
    if samples != n_images:
        size = f"{n_images:,} images from {samples:,} patients ({row.images} patients)"
        reasons.append(f"The size rules count patients, not images: the views of one patient are not "
                       f"independent samples ({n_images / samples:.1f} images per patient).")
    else:
        size = f"{n_images:,} images ({row.images})"
    reasons.append(
        f"Rule {row.rule}: {size} and imbalance "
        f"{format_ratio(ratio)} (max/min, {row.imbalance}): {row.risk} risk -> {row.action}"
    )

    by_size = size_row(samples)
    freeze = min(by_size.freeze, row.cap, key=FREEZE_ORDER.index)
    unit = "patients" if samples != n_images else "images"
    size_text = (f"Freezing depth by size: {samples:,} {unit} ({by_size.images}) -> "
                 f"{FREEZE_TEXT[by_size.freeze]}")
    if by_size.freeze == row.freeze:
        reasons.append(f"{size_text}, as rule {row.rule} says.")
    elif freeze == by_size.freeze and FREEZE_ORDER.index(freeze) < FREEZE_ORDER.index(row.freeze):
        reasons.append(f"{size_text}; the more frozen setting wins over rule {row.rule}'s "
                       f"{FREEZE_TEXT[row.freeze]}: few images leave little to fine-tune on.")
    elif freeze == by_size.freeze:
        reasons.append(f"{size_text}; {row.risk} risk allows it (rule {row.rule}'s "
                       f"{FREEZE_TEXT[row.freeze]} is for 2000-10000 images).")
    else:
        reasons.append(f"{size_text}, but {row.risk} risk keeps {FREEZE_TEXT[freeze]}: "
                       "the more frozen setting wins.")

    preset = PRESET_FOR_FREEZE[freeze]
    preset_values = {**TrainConfig().to_dict(), **load_preset(preset)}
    rule_overrides: dict[str, Any] = {}
    for key, value in row.settings.items():
        # Warmup counts head-only epochs before blocks unfreeze; with head only nothing unfreezes.
        if key == "warmup_epochs" and freeze == "head":
            continue
        if preset_values.get(key) != value:
            rule_overrides[key] = value

    if rule_overrides:
        changes = ", ".join(f"{k} = {v}" for k, v in rule_overrides.items())
        reasons.append(f"Preset {preset}, with {changes} as rule {row.rule} says.")
    else:
        reasons.append(f"Preset {preset} as it is.")
    if freeze == "head":
        reasons.append("Warmup does not apply: with head only the backbone never unfreezes.")
    if "sampler" not in row.settings:
        sampler = rule_overrides.get("sampler", preset_values["sampler"])
        why = " (near-uniform batches; harmless when the classes are already balanced)"
        reasons.append(f"Sampler is optional at imbalance <= {HIGH_IMBALANCE:g}; the preset keeps "
                       f"sampler = {sampler}{why if sampler == 'weighted' else ''}.")

    result = Plan(row.risk, preset, row.rule, freeze, reasons, rule_overrides, n_images=int(n_images),
                  imbalance=ratio, class_counts=counts, empty_classes=empty,
                  n_patients=None if n_patients is None else int(n_patients))
    if device is not None and not demo and "img_size" not in user:  # the demo sizes for a CPU itself
        size, why = suggest_img_size(device, image_side, int(preset_values["img_size"]))
        if size != preset_values["img_size"]:
            result.overrides["img_size"] = size
        reasons.append(why)
    _apply_weights_and_flags(result, row, user, demo, weights_probe)
    return result


def _apply_weights_and_flags(p: Plan, row: DecisionRow, user: dict[str, Any], demo: bool,
                             probe: WeightsProbe | None) -> None:
    """Demo sizing, then the pretrained-weights check, then the user's keys; p.config at the end."""
    if demo:
        demo_values = load_preset(DEMO_PRESET)
        sizing = {k: demo_values[k] for k in DEMO_SIZING if k in demo_values}
        p.overrides.update(sizing)
        p.reasons.append("Demo dataset: sized for a CPU from the demo preset ("
                         + ", ".join(f"{k} = {v}" for k, v in sizing.items()) + ").")

    def merged() -> dict[str, Any]:
        return {**TrainConfig().to_dict(), **load_preset(p.preset), **p.overrides, **user}

    values = merged()
    if probe is not None:
        p.weights = probe(values["arch"], values["weights"], values["pretrained"])
        if p.weights.available:
            p.reasons.append(f"Pretrained weights: {p.weights.detail}.")
        else:
            frozen = values["freeze"] != "none"
            p.reasons.append(f"No pretrained weights: {p.weights.detail}.")
            if p.preset != SCRATCH_PRESET and ("freeze" not in user or not frozen):
                kept = {k: v for k, v in p.overrides.items() if k in DEMO_SIZING or k == "sampler"}
                scratch = {**TrainConfig().to_dict(), **load_preset(SCRATCH_PRESET)}
                p.preset, p.freeze = SCRATCH_PRESET, scratch["freeze"]
                p.overrides = {k: v for k, v in kept.items() if scratch.get(k) != v}
                p.reasons.append(
                    f"So preset {SCRATCH_PRESET} instead of rule {row.rule}'s frozen backbone: a frozen "
                    "random backbone learns nothing and head-only warmup epochs would train a head on "
                    "random features (it looks collapsed), so every layer trains from the first epoch "
                    "(freeze = none, warmup_epochs = 0); expect a weaker model than with pretrained "
                    "weights. The rule's balancing still applies.")
            if "pretrained" not in user and values["pretrained"] and not values["weights"]:
                p.overrides["pretrained"] = False
            values = merged()
    p.overrides.update(user)
    p.config = from_mapping(values, source=f"preset auto: {p.preset}" + (" + your flags" if user else ""))
    if user:
        p.reasons.append("Your flags / --set win over the plan: "
                         + ", ".join(f"{k} = {v}" for k, v in user.items()) + ".")
    p.warnings = config_warnings(p.config, p.n_images, p.imbalance, p.weights)


def plan_for(fingerprint: Any, overrides: Mapping[str, Any] | None = None, demo: bool = False,
             weights_probe: WeightsProbe | None = None, device: str | None = None) -> Plan:
    """plan() for a data.fingerprint.Fingerprint (images, patients, class counts); the dataset's
    own warnings about patients (no ids: views may cross the split; identical images under two
    patients) join the plan's, since they make its validation numbers optimistic."""
    p = plan(fingerprint.n_images, fingerprint.class_counts, getattr(fingerprint, "n_patients", None),
             overrides=overrides, demo=demo, weights_probe=weights_probe, device=device,
             image_side=image_side(fingerprint))
    group_warning = getattr(fingerprint, "group_warning", None)
    if group_warning:
        p.warnings.insert(0, group_warning)
    leaks = getattr(fingerprint, "leakage_risks", 0)
    if leaks:
        p.warnings.insert(0, f"leakage risk: {leaks} images have the same bytes as an image of another "
                             "patient; they can land on both sides of the split (see the validation report).")
    return p


def image_side(fingerprint: Any) -> float | None:
    """The median longer image side of a fingerprint (its width / height SizeStats), or None."""
    width, height = getattr(fingerprint, "width", None), getattr(fingerprint, "height", None)
    if width is None or height is None:
        return None
    return float(max(width.median, height.median))


def config_warnings(cfg: TrainConfig, n_images: int | None, imbalance: float | None,
                    weights: Any = None) -> list[str]:
    """Collapse risks of a valid config for this dataset (invalid configs are ConfigErrors instead).

    weights: the WeightsStatus for cfg (None = not checked). Shared by `plan`, the wizard's
    configuration step and the console, so all three warn about the same things.
    """
    from mammo_tui.collapse import has_pretrained, lr_limit, lr_subject

    out: list[str] = []
    imbalanced = imbalance is not None and (not math.isfinite(imbalance) or imbalance > HIGH_IMBALANCE)
    small = n_images is not None and n_images <= SIZE_TABLE[-1].low - 1
    pretrained = weights.available if weights is not None else has_pretrained(cfg)
    balancers = balancing(cfg)
    if len(balancers) > 1:  # only reachable with allow_double_balancing = true
        out.append(f"double balancing: {' and '.join(balancers)} both favour rare classes; training "
                   "over-corrects and is unstable. Keep one.")
    if weights is not None and cfg.pretrained and not cfg.weights and not weights.available:
        out.append(f"pretrained = true, but {weights.detail}. The launch will fail; or set "
                   "pretrained = false to train from scratch.")
    if cfg.freeze == "none" and pretrained and (small or imbalanced):
        what = "small, imbalanced" if small and imbalanced else ("small" if small else "imbalanced")
        out.append(f"collapse risk: full fine-tuning (freeze = none) on a {what} dataset is what "
                   "collapsed in the reference (one class for every image). Prefer last_block.")
    if imbalanced and cfg.sampler == "none" and cfg.class_weights == "none" and cfg.loss == "ce":
        out.append("collapse risk: no sampler, no class weights and plain CE on an imbalanced set: "
                   "batches are dominated by the majority class. Set sampler = weighted.")
    limit = lr_limit(cfg)
    if cfg.lr > limit:
        out.append(f"lr {cfg.lr:g} is high for {lr_subject(cfg)} (> {limit:g}): large steps push the network "
                   "onto one class.")
    if cfg.freeze != "head" and cfg.warmup_epochs == 0 and pretrained:
        out.append("warmup_epochs = 0: random head gradients reach the pretrained backbone at once; "
                   "1-2 head-only epochs protect it.")
    if not pretrained and cfg.warmup_epochs > 0:
        out.append(f"warmup_epochs = {cfg.warmup_epochs} is skipped: without pretrained weights head-only "
                   "epochs would train a head on random features.")
    if cfg.warmup_epochs >= cfg.epochs and cfg.freeze != "head" and pretrained:
        out.append(f"warmup_epochs ({cfg.warmup_epochs}) >= epochs ({cfg.epochs}): the {cfg.freeze.replace('_', ' ')} "
                   "never unfreezes, so this run trains the head only. Raise epochs above warmup_epochs.")
    return out


def format_plan(plan: Plan, width: int = 80) -> str:
    """The plan as plain text for `mammo-tui plan`: the data, the rule, why, and both tables."""
    n = len(plan.class_counts)
    counts = " / ".join(f"{_name(i, n)} {c:,}" for i, c in enumerate(plan.class_counts))
    patients = f" from {plan.n_patients:,} patients" if plan.n_patients is not None else ""
    header = [
        f"Dataset: {plan.n_images:,} images{patients}; {counts}; imbalance "
        f"{format_ratio(plan.imbalance)} (max/min)",
        f"Rule {plan.rule} of {len(DECISION_TABLE)}: {plan.risk} risk -> preset {plan.preset} "
        f"(freeze = {plan.freeze})",
        "Overrides: " + (", ".join(f"{k} = {v}" for k, v in plan.overrides.items()) or "none"),
    ]
    if plan.weights is not None:
        header.append(("Pretrained weights: " if plan.weights.available else "Pretrained weights: NONE - ")
                      + plan.weights.detail)
    if plan.config is not None:
        c = plan.config
        header.append(f"Config: {c.arch} freeze={c.freeze} warmup={c.warmup_epochs} sampler={c.sampler} "
                      f"class_weights={c.class_weights} loss={c.loss} lr={c.lr:g} epochs={c.epochs} "
                      f"batch={c.batch_size} img={c.img_size} pretrained={str(c.pretrained).lower()}")
    lines: list[str] = []
    for text in header:
        lines += textwrap.wrap(text, width - 1, subsequent_indent="  ")
    lines += ["", "Why:"]
    for reason in plan.reasons:
        lines += textwrap.wrap(reason, width - 1, initial_indent="  - ", subsequent_indent="    ")
    if plan.warnings:
        lines += ["", "Warnings:"]
        for warning in plan.warnings:
            lines += textwrap.wrap(warning, width - 1, initial_indent="  ! ", subsequent_indent="    ")
    lines += ["", "Decision flow (* = the rule that fired):"]
    lines.append(f"  {'':2}{'#':<2}{'images':<8}{'max/min':<8}{'risk':<8}table says")
    for row in DECISION_TABLE:
        mark = "*" if row.rule == plan.rule else ""
        lines.append(f"  {mark:<2}{row.rule:<2}{row.images:<8}{row.imbalance:<8}{row.risk:<8}{row.action}")
    size = size_row(plan.samples)
    lines += ["", "Freezing depth by size (* = this dataset):"]
    for row in SIZE_TABLE:
        mark = "*" if row is size else ""
        lines.append(f"  {mark:<2}{row.images:<12}{FREEZE_TEXT[row.freeze]}")
    return "\n".join(lines)
