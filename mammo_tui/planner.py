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

Pure Python: the wizard imports this at start-up.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

from mammo_tui.config import TrainConfig, load_preset
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
    freeze: str  # the preset's freeze value (overrides never change it)
    reasons: list[str]  # sentences the wizard shows, in order
    overrides: dict[str, Any]  # config changes on top of the preset
    n_images: int = 0
    imbalance: float = math.inf  # max/min; inf when a class is empty
    class_counts: list[int] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["imbalance"] = self.imbalance if math.isfinite(self.imbalance) else None  # strict JSON
        return out


def imbalance_ratio(class_counts: Sequence[int]) -> float:
    """max/min class count; inf when some class is empty."""
    smallest = min(class_counts)
    return math.inf if smallest == 0 else max(class_counts) / smallest


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


def plan(n_images: int, class_counts: Sequence[int]) -> Plan:
    """Walk the decision flow for a dataset with `n_images` images and these per-class counts."""
    counts = [int(c) for c in class_counts]
    if not counts or any(c < 0 for c in counts) or n_images < 0:
        raise ValueError("plan() needs a non-negative image count and at least one class count")
    ratio = imbalance_ratio(counts)
    empty = [_name(i, len(counts)) for i, c in enumerate(counts) if c == 0]
    small = n_images < SMALL_DATASET
    high = ratio > HIGH_IMBALANCE  # inf > 10: an empty class is the worst imbalance there is
    row = DECISION_TABLE[(0 if high else 1) if small else (2 if high else 3)]

    reasons: list[str] = []
    if empty:
        verb = "has" if len(empty) == 1 else "have"
        reasons.append(
            f"Class {', '.join(empty)} {verb} no images: the imbalance is infinite, treated as "
            f"> {HIGH_IMBALANCE:g}. The model cannot learn a class it never sees; add images if you can."
        )
    reasons.append(
        f"Rule {row.rule}: {n_images:,} images ({row.images}) and imbalance "
        f"{format_ratio(ratio)} (max/min, {row.imbalance}): {row.risk} risk -> {row.action}"
    )

    by_size = size_row(n_images)
    freeze = min(by_size.freeze, row.cap, key=FREEZE_ORDER.index)
    size_text = (f"Freezing depth by size: {n_images:,} images ({by_size.images}) -> "
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
    overrides: dict[str, Any] = {}
    for key, value in row.settings.items():
        # Warmup counts head-only epochs before blocks unfreeze; with head only nothing unfreezes.
        if key == "warmup_epochs" and freeze == "head":
            continue
        if preset_values.get(key) != value:
            overrides[key] = value

    if overrides:
        changes = ", ".join(f"{k} = {v}" for k, v in overrides.items())
        reasons.append(f"Preset {preset}, with {changes} as rule {row.rule} says.")
    else:
        reasons.append(f"Preset {preset} as it is.")
    if freeze == "head":
        reasons.append("Warmup does not apply: with head only the backbone never unfreezes.")
    if "sampler" not in row.settings:
        sampler = overrides.get("sampler", preset_values["sampler"])
        why = " (near-uniform batches; harmless when the classes are already balanced)"
        reasons.append(f"Sampler is optional at imbalance <= {HIGH_IMBALANCE:g}; the preset keeps "
                       f"sampler = {sampler}{why if sampler == 'weighted' else ''}.")

    return Plan(row.risk, preset, row.rule, freeze, reasons, overrides,
                n_images=int(n_images), imbalance=ratio, class_counts=counts, empty_classes=empty)


def format_plan(plan: Plan, width: int = 80) -> str:
    """The plan as plain text for `mammo-tui plan`: the data, the rule, why, and both tables."""
    n = len(plan.class_counts)
    counts = " / ".join(f"{_name(i, n)} {c:,}" for i, c in enumerate(plan.class_counts))
    header = [
        f"Dataset: {plan.n_images:,} images; {counts}; imbalance {format_ratio(plan.imbalance)} (max/min)",
        f"Rule {plan.rule} of {len(DECISION_TABLE)}: {plan.risk} risk -> preset {plan.preset} "
        f"(freeze = {plan.freeze})",
        "Overrides: " + (", ".join(f"{k} = {v}" for k, v in plan.overrides.items()) or "none"),
    ]
    lines: list[str] = []
    for text in header:
        lines += textwrap.wrap(text, width - 1, subsequent_indent="  ")
    lines += ["", "Why:"]
    for reason in plan.reasons:
        lines += textwrap.wrap(reason, width - 1, initial_indent="  - ", subsequent_indent="    ")
    lines += ["", "Decision flow (* = the rule that fired):"]
    lines.append(f"  {'':2}{'#':<2}{'images':<8}{'max/min':<8}{'risk':<8}table says")
    for row in DECISION_TABLE:
        mark = "*" if row.rule == plan.rule else ""
        lines.append(f"  {mark:<2}{row.rule:<2}{row.images:<8}{row.imbalance:<8}{row.risk:<8}{row.action}")
    size = size_row(plan.n_images)
    lines += ["", "Freezing depth by size (* = this dataset):"]
    for row in SIZE_TABLE:
        mark = "*" if row is size else ""
        lines.append(f"  {mark:<2}{row.images:<12}{FREEZE_TEXT[row.freeze]}")
    return "\n".join(lines)
