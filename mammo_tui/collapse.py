"""Collapse detector and config-derived suggestions (DESIGN.md "Collapse rules").

Rules, with the thresholds from TrainConfig (defaults in brackets):
- an epoch is *checked* when kappa < collapse_kappa [0.2] or a class present in the validation
  set has recall 0;
- it is **collapsed** when, in addition, one class takes >= collapse_dominance [99 %] of the
  predictions;
- otherwise it is a **warning** when a present class has recall 0, kappa < collapse_kappa,
  balanced-accuracy-adjusted < warn_bal_acc_adj [0.3], or the predictions drift sharply toward
  one class since the previous epoch (its share rose by >= warn_drift [20 points]).

Which kappa: the rule uses the *unweighted* Cohen's kappa (`metrics["kappa"]`), not the headline
quadratic one. The 0.2 threshold comes from the reference write-up, which used Cohen's kappa; and
quadratic weights give partial credit to near misses, so a model stuck on a middle class (B or C,
the majority in mammography) looks better than it is: predicting C for 93 % of a reference-like
set and D for the rest scores 0.248 quadratic (passes) but 0.196 unweighted (fails). The rule is
meant to catch exactly that kind of near-constant predictor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from mammo_tui.config import TrainConfig, coerce
from mammo_tui.labels import CLASS_NAMES

HEALTHY, WARNING, COLLAPSED = "healthy", "warning", "collapsed"
STATUSES = (HEALTHY, WARNING, COLLAPSED)

# Comparisons on shares such as 0.75 - 0.55 must not miss a threshold by a rounding error.
_EPS = 1e-9

# Suggestion thresholds: learning rates above these tend to wreck pretrained features (backbone
# training) or make a linear head oscillate between majority classes (head only).
LR_HIGH_BACKBONE = 3e-4
LR_HIGH_HEAD = 3e-3
WARMUP_CAP = 5
# One step toward the head per suggestion, from the deepest training to the most frozen.
_FREEZE_STEPS = {"none": "last_block", "last_two_blocks": "last_block", "last_block": "head"}


@dataclass
class CollapseResult:
    status: str  # healthy | warning | collapsed
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Suggestion:
    key: str  # a TrainConfig key
    value: Any  # already checked with config.coerce
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_name(index: int, num_classes: int) -> str:
    return CLASS_NAMES[index] if num_classes == len(CLASS_NAMES) else str(index)


def format_percent(fraction: float) -> str:
    """`100 %`, `0 %`, `52 %`; one decimal near the ends so 99.6 % never shows as 100 %."""
    value = fraction * 100
    if 0 < value < 1 or 99 < value < 100:
        return f"{value:.1f} %"
    return f"{value:.0f} %"


def format_distribution(fractions: Sequence[float]) -> str:
    """`[A 0 %, B 0 %, C 100 %, D 0 %]`"""
    n = len(fractions)
    return "[" + ", ".join(f"{class_name(i, n)} {format_percent(f)}" for i, f in enumerate(fractions)) + "]"


def _below(value: float, threshold: float) -> str:
    """`0.00 < 0.20`, with more digits when two decimals would print `0.20 < 0.20`."""
    for digits in (2, 3, 4, 5, 6):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            break
    return f"{a} < {b}"


def _dominance(metrics: dict[str, Any]) -> tuple[int, float]:
    dist = metrics["prediction_distribution"]
    top = max(range(len(dist)), key=lambda i: dist[i])
    return top, float(dist[top])


def _zero_recall(metrics: dict[str, Any]) -> list[int]:
    # A class absent from the validation set has recall 0 by convention, not by failure.
    return [
        i
        for i, (recall, count) in enumerate(zip(metrics["recall_per_class"], metrics["true_counts"]))
        if count > 0 and recall <= 0.0
    ]


def _drift(metrics: dict[str, Any], previous: dict[str, Any] | None, threshold: float) -> str | None:
    """Reason when the predictions moved sharply toward one class since `previous`, else None.

    Drift means the current top class gained >= threshold AND the distribution got more
    concentrated (top share above the previous top share): a model spreading out from an early
    favourite also moves shares a lot, but toward health.
    """
    if not previous or "prediction_distribution" not in previous:
        return None
    now, before = metrics["prediction_distribution"], previous["prediction_distribution"]
    if len(now) != len(before):
        return None
    top, share = _dominance(metrics)
    rise = share - before[top]
    if rise >= threshold - _EPS and share > max(before) + _EPS:
        name = class_name(top, len(now))
        return (
            f"predictions drift toward {name}: {format_percent(before[top])} -> "
            f"{format_percent(share)} in one epoch (+{rise * 100:.0f} points >= {threshold * 100:.0f})"
        )
    return None


def detect_collapse(
    metrics: dict[str, Any],
    previous: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
) -> CollapseResult:
    """Classify one validation epoch (a `compute_metrics` dict) as healthy, warning or collapsed.

    `previous` is the previous epoch's metrics (for the drift rule). Reasons name each rule that
    fired, with its numbers; the dominance reason comes first when collapsed.
    """
    cfg = config or TrainConfig()
    n = len(metrics["prediction_distribution"])
    kappa = float(metrics["kappa"])
    zero = _zero_recall(metrics)
    top, share = _dominance(metrics)

    low_kappa = kappa < cfg.collapse_kappa - _EPS  # a value equal to a threshold passes it
    checked = low_kappa or bool(zero)
    dominant = share >= cfg.collapse_dominance - _EPS

    reasons: list[str] = []
    if checked and dominant:
        reasons.append(
            f"{class_name(top, n)} takes {format_percent(share)} of predictions "
            f"(>= {format_percent(cfg.collapse_dominance)}): "
            f"{format_distribution(metrics['prediction_distribution'])}"
        )
    if zero:
        reasons.append("recall 0 for " + ", ".join(class_name(i, n) for i in zero))
    if low_kappa:
        reasons.append(f"kappa {_below(kappa, cfg.collapse_kappa)} (unweighted)")
    bal_adj = float(metrics["balanced_accuracy_adjusted"])
    if bal_adj < cfg.warn_bal_acc_adj - _EPS:  # e.g. (0.475 - 0.25) / 0.75 is 0.29999999999999993
        reasons.append(f"balanced accuracy adj. {_below(bal_adj, cfg.warn_bal_acc_adj)}")
    drift = _drift(metrics, previous, cfg.warn_drift)
    if drift:
        reasons.append(drift)

    if checked and dominant:
        return CollapseResult(COLLAPSED, reasons)
    return CollapseResult(WARNING if reasons else HEALTHY, reasons)


def _make(key: str, value: Any, reason: str) -> Suggestion:
    return Suggestion(key, coerce(key, value, source="suggestion"), reason)


def _tenth(lr: float) -> float:
    # 3 significant digits: 3e-4 / 10 shows as 3e-05, not 2.9999999999999997e-05.
    return float(f"{lr / 10:.3g}")


def suggest(
    config: TrainConfig, result: CollapseResult, metrics: dict[str, Any] | None = None
) -> list[Suggestion]:
    """Concrete config changes for a warning or collapse, most useful first; [] when healthy.

    Every suggestion follows from the *current* config and changes something that is not already
    set. `metrics` is accepted for the contract (and future rules) but the rules need only the
    config and the status.
    """
    if result.status == HEALTHY:
        return []
    cfg = config
    out: list[Suggestion] = []
    sampler_on = cfg.sampler == "weighted"
    weights_on = cfg.class_weights == "balanced"

    # 1. Balancing: the reference's collapse was an unbalanced run; double balancing over-corrects.
    if not sampler_on and not weights_on:
        out.append(_make("sampler", "weighted",
                         "no sampler and no class weights: batches are dominated by the majority "
                         "class; the inverse-frequency sampler makes them near-uniform"))
    elif sampler_on and weights_on:
        out.append(_make("class_weights", "none",
                         "sampler and class weights together balance twice (rare classes are "
                         "over-sampled AND up-weighted), which is unstable; keep the sampler only"))

    # 2. Freezing: fewer trainable layers means less room to overfit the majority class.
    # A randomly initialised backbone must train, so never suggest freezing it.
    step = _FREEZE_STEPS.get(cfg.freeze)
    if step and cfg.pretrained:
        why = ("full fine-tuning of a small imbalanced set is what collapsed in the reference; "
               "freeze the backbone and train the last block only") if cfg.freeze == "none" else (
               f"train fewer layers: freeze={cfg.freeze} -> {step}")
        out.append(_make("freeze", step, why))

    # 3. Learning rate and warmup.
    backbone_trains = cfg.freeze != "head"
    limit = LR_HIGH_BACKBONE if backbone_trains else LR_HIGH_HEAD
    lr_high = cfg.lr > limit
    if lr_high:
        what = "backbone layers" if backbone_trains else "a head-only run"
        out.append(_make("lr", _tenth(cfg.lr),
                         f"lr {cfg.lr:g} is high for {what} (> {limit:g}); "
                         "large steps push the network onto one class"))
    # Warmup only matters when blocks unfreeze after it; none at all is risky with any LR.
    if backbone_trains and cfg.warmup_epochs < WARMUP_CAP and (lr_high or cfg.warmup_epochs == 0):
        out.append(_make("warmup_epochs", cfg.warmup_epochs + 1,
                         "train the head alone for longer before the backbone unfreezes, so random "
                         "head gradients do not wreck the "
                         + ("pretrained features" if cfg.pretrained or cfg.weights else "features learned so far")))

    # 4. Loss: balancing is on and it still collapsed -> correct the logits for the class prior.
    # It replaces the balancer (apply_suggestion switches it off): the engine's prior is the
    # training-label frequency, so logit adjustment on sampled batches would balance twice.
    if result.status == COLLAPSED and cfg.loss == "ce" and (sampler_on or weights_on):
        out.append(_make("loss", "logit_adjusted",
                         "collapsed although the classes are balanced: logit-adjusted loss corrects "
                         "the class prior inside the loss, instead of the sampler / class weights"))

    return [s for s in out if getattr(cfg, s.key) != s.value]


def apply_suggestion(config: TrainConfig, suggestion: Suggestion | Mapping[str, Any]) -> TrainConfig:
    """The config with one suggestion applied (validated by TrainConfig.replace).

    Accepts a Suggestion or its to_dict() form (what events and the run log carry).
    Turning one balancer on switches the others off unless double balancing is explicitly allowed:
    a suggestion never means "balance twice" (replace() would refuse sampler + class weights with
    a ConfigError; logit-adjusted loss on top of either over-corrects toward the rare classes).
    """
    if isinstance(suggestion, Mapping):
        key, value = suggestion["key"], suggestion["value"]
    else:
        key, value = suggestion.key, suggestion.value
    changes: dict[str, Any] = {key: value}
    if not config.allow_double_balancing:
        if key == "sampler" and value == "weighted":
            changes["class_weights"] = "none"
        elif key == "class_weights" and value == "balanced":
            changes["sampler"] = "none"
        elif key == "loss" and value == "logit_adjusted":
            changes.update(sampler="none", class_weights="none")
    return config.replace(**changes)
