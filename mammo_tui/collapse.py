"""Collapse detector and config-derived suggestions (DESIGN.md "Collapse rules").

Rules, with the thresholds from TrainConfig (defaults in brackets):
- an epoch is *checked* when kappa < collapse_kappa [0.2] or a class present in the validation
  set has recall 0;
- it is **collapsed** when, in addition, one class takes >= collapse_dominance [99 %] of the
  predictions;
- otherwise it is a **warning** when a present class has recall 0, kappa < collapse_kappa,
  balanced-accuracy-adjusted < warn_bal_acc_adj [0.3], one class takes >= warn_dominance [90 %]
  of the predictions (more than its share of the truth), or the predictions drift toward one
  class: its share rose by >= warn_drift [20 points] in one epoch, or steadily over up to
  DRIFT_WINDOW epochs, or the majority of the predictions swung from one class to another.

Suggestions depend on *which* class the predictions pile onto. Onto a majority class (the
reference's collapse onto C): balance more, freeze more, lower the LR. Onto a rare class (every
image called A): the balancing over-corrects, so balance *less* (square-root sampling, a smaller
logit-adjustment tau, no class weights), lower the LR, freeze more; never "add a sampler".

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

from mammo_tui.config import TrainConfig, balancing as balancing_on, coerce
from mammo_tui.labels import CLASS_NAMES

HEALTHY, WARNING, COLLAPSED = "healthy", "warning", "collapsed"
STATUSES = (HEALTHY, WARNING, COLLAPSED)

# Comparisons on shares such as 0.75 - 0.55 must not miss a threshold by a rounding error.
_EPS = 1e-9

# Suggestion thresholds: learning rates above these tend to wreck pretrained features (backbone
# training) or make a linear head oscillate between majority classes (head only).
LR_HIGH_BACKBONE = 3e-4
LR_HIGH_HEAD = 3e-3  # also from scratch: there are no pretrained features to wreck
WARMUP_CAP = 5
DRIFT_WINDOW = 4  # epochs looked back for a slow drift
SWING_SHARE = 0.5  # a swing: the majority of the predictions moves from one class to another
SQRT_SAMPLING = 0.5  # sampler_power suggested when the sampler over-corrects
RARE_SHARE = 0.5  # a class is rare below this fraction of the uniform share (1 / K)
LR_FIRST_FACTOR = 10  # an lr this many times its limit is the first fix, before any balancing
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
    also: dict[str, Any] = field(default_factory=dict)  # keys that change with it (one fix)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def changes(self) -> dict[str, Any]:
        return suggestion_changes(self)


def suggestion_changes(suggestion: Suggestion | Mapping[str, Any]) -> dict[str, Any]:
    """Every key a suggestion sets, from a Suggestion or its to_dict() form (events, run log)."""
    if isinstance(suggestion, Mapping):
        return {suggestion.get("key"): suggestion.get("value"), **(suggestion.get("also") or {})}
    return {suggestion.key: suggestion.value, **suggestion.also}


def has_pretrained(cfg: TrainConfig) -> bool:
    """The backbone starts from pretrained weights (torchvision's or a --weights file)."""
    return bool(cfg.pretrained or cfg.weights)


def lr_subject(cfg: TrainConfig) -> str:
    """What lr_limit(cfg) protects, for the messages that quote it."""
    if cfg.freeze == "head":
        return "a head-only run"
    return "backbone layers" if has_pretrained(cfg) else "a network from scratch"


def lr_limit(cfg: TrainConfig) -> float:
    """Above this LR, steps tend to push the network onto one class: pretrained backbone layers
    are the fragile case; a linear head, or a network from scratch, takes larger steps."""
    return LR_HIGH_BACKBONE if cfg.freeze != "head" and has_pretrained(cfg) else LR_HIGH_HEAD


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


def _drift(metrics: dict[str, Any], history: list[list[float]], threshold: float) -> str | None:
    """Reason when the predictions moved toward one class, else None. `history`: the earlier
    epochs' prediction distributions, oldest first.

    Three shapes: a jump (the top class gained >= threshold in one epoch), a slow drift (it gained
    a little every epoch, >= threshold over up to DRIFT_WINDOW epochs) and a swing (the majority
    of the predictions moved from one class to another). A jump or drift also needs the
    distribution to end more concentrated than it started: a model spreading out from an early
    favourite moves shares a lot, but toward health.
    """
    now = metrics["prediction_distribution"]
    history = [h for h in history if len(h) == len(now)]
    if not history:
        return None
    top, share = _dominance(metrics)
    name = class_name(top, len(now))
    before = history[-1]
    for back in range(1, min(DRIFT_WINDOW, len(history)) + 1):
        start = history[-back]
        path = [h[top] for h in history[-back:]] + [share]
        steady = all(b >= a - _EPS for a, b in zip(path, path[1:]))
        rise = share - start[top]
        if steady and rise >= threshold - _EPS and share > max(start) + _EPS:
            points = f"+{rise * 100:.0f} points >= {threshold * 100:.0f}"
            if back == 1:
                return (f"predictions drift toward {name}: {format_percent(start[top])} -> "
                        f"{format_percent(share)} in one epoch ({points})")
            steps = " -> ".join(format_percent(v) for v in path)
            return f"predictions drift toward {name} over {back} epochs: {steps} ({points})"
    old = max(range(len(before)), key=lambda i: before[i])
    if old != top and before[old] >= SWING_SHARE - _EPS and share >= SWING_SHARE - _EPS:
        return (f"predictions swing from {class_name(old, len(now))} ({format_percent(before[old])}) "
                f"to {name} ({format_percent(share)}) in one epoch: the model jumps between classes")
    return None


def _distributions(previous: Any) -> list[list[float]]:
    """Earlier epochs' prediction distributions from one metrics dict or a list (oldest first)."""
    if not previous:
        return []
    items = [previous] if isinstance(previous, Mapping) else list(previous)
    return [list(m["prediction_distribution"]) for m in items if m and "prediction_distribution" in m]


def detect_collapse(
    metrics: dict[str, Any],
    previous: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    config: TrainConfig | None = None,
) -> CollapseResult:
    """Classify one validation epoch (a `compute_metrics` dict) as healthy, warning or collapsed.

    `previous`: the previous epoch's metrics, or the earlier epochs' metrics oldest first (the
    drift rules look back up to DRIFT_WINDOW epochs). Reasons name each rule that fired, with its
    numbers; a dominance reason comes first.
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
    true_share = _true_share(metrics, top)
    if checked and dominant:
        reasons.append(
            f"{class_name(top, n)} takes {format_percent(share)} of predictions "
            f"(>= {format_percent(cfg.collapse_dominance)}): "
            f"{format_distribution(metrics['prediction_distribution'])}"
        )
    elif share >= cfg.warn_dominance - _EPS and (true_share is None or true_share < cfg.warn_dominance - _EPS):
        truth = "" if true_share is None else f", but {format_percent(true_share)} of the images"
        reasons.append(
            f"{class_name(top, n)} takes {format_percent(share)} of predictions "
            f"(>= {format_percent(cfg.warn_dominance)}{truth}): "
            f"{format_distribution(metrics['prediction_distribution'])}"
        )
    if zero:
        reasons.append("recall 0 for " + ", ".join(class_name(i, n) for i in zero))
    if low_kappa:
        reasons.append(f"kappa {_below(kappa, cfg.collapse_kappa)} (unweighted)")
    bal_adj = float(metrics["balanced_accuracy_adjusted"])
    if bal_adj < cfg.warn_bal_acc_adj - _EPS:  # e.g. (0.475 - 0.25) / 0.75 is 0.29999999999999993
        one_class = sum(1 for count in metrics.get("true_counts") or [] if count) == 1
        reasons.append(f"balanced accuracy adj. {_below(bal_adj, cfg.warn_bal_acc_adj)}"
                       + (" (the validation set holds one class: nothing to tell apart)" if one_class else ""))
    drift = _drift(metrics, _distributions(previous), cfg.warn_drift)
    if drift:
        reasons.append(drift)

    if checked and dominant:
        return CollapseResult(COLLAPSED, reasons)
    return CollapseResult(WARNING if reasons else HEALTHY, reasons)


def _true_share(metrics: dict[str, Any], index: int) -> float | None:
    dist = metrics.get("true_distribution")
    return float(dist[index]) if dist and index < len(dist) else None


def _make(key: str, value: Any, reason: str, **also: Any) -> Suggestion:
    return Suggestion(key, coerce(key, value, source="suggestion"), reason,
                      {k: coerce(k, v, source="suggestion") for k, v in also.items()})


def _round_lr(lr: float) -> float:
    # 3 significant digits: 3e-4 / 10 shows as 3e-05, not 2.9999999999999997e-05.
    return float(f"{lr:.3g}")


def _lower_lr(lr: float, limit: float) -> float:
    """A tenth of lr, and in any case below the limit the reason quotes (lr 0.5 > 3e-4 -> 1e-4)."""
    return _round_lr(min(lr / 10, limit / 3))


def collapse_target(metrics: dict[str, Any] | None, config: TrainConfig,
                    train_counts: Sequence[int] | None = None) -> tuple[int, str] | None:
    """(class, "majority" | "rare" | "middle") the predictions pile onto, or None when they do not.

    "Pile onto" = the top class takes >= warn_dominance of the predictions. Its place in the class
    prior (the training counts, else the validation truth, which the stratified split keeps close)
    says why: the majority class = the imbalance won; a rare class (under half the uniform share:
    A at 2.5 % in the reference) = the balancing over-corrects; a middle class (B, D) says neither.
    """
    if not metrics or not metrics.get("prediction_distribution"):
        return None
    top, share = _dominance(metrics)
    if share < config.warn_dominance - _EPS:
        return None
    prior = list(train_counts) if train_counts else list(metrics.get("true_counts") or [])
    total = sum(prior)
    if not total or len(prior) != len(metrics["prediction_distribution"]):
        return top, "middle"
    shares = [c / total for c in prior]
    if shares[top] >= max(shares) - _EPS:
        return top, "majority"
    if shares[top] < RARE_SHARE / len(shares) - _EPS:
        return top, "rare"
    return top, "middle"


def suggest(
    config: TrainConfig, result: CollapseResult, metrics: dict[str, Any] | None = None,
    train_counts: Sequence[int] | None = None,
) -> list[Suggestion]:
    """Concrete config changes for a warning or collapse, most useful first; [] when healthy.

    Every suggestion follows from the *current* config and changes something that is not already
    set. `metrics` (the epoch's) and `train_counts` (images per class in training) tell which
    class the predictions pile onto and so which way to push: see collapse_target().
    """
    if result.status == HEALTHY:
        return []
    cfg = config
    target = collapse_target(metrics, cfg, train_counts)
    if target is not None and target[1] == "rare":
        out = _less_balancing(cfg, class_name(target[0], len(metrics["prediction_distribution"])), metrics,
                              train_counts)
    else:
        out = _more_balancing(cfg, result, target, metrics)
    out += _steadier(cfg, rare=target is not None and target[1] == "rare")
    # A step ten times the limit explains any collapse best: fix it first. Just above the limit
    # (lr 1e-3 on a pretrained backbone), the balancing comes first: in bench_collapse.py the
    # lower lr alone let an unbalanced run drift back to ~95 % C, the sampler alone never collapsed.
    if cfg.lr >= LR_FIRST_FACTOR * lr_limit(cfg):
        out.sort(key=lambda s: s.key != "lr")
    seen: set[str] = set()
    unique = []
    for s in out:  # one suggestion per key, each a change from the current config
        if s.key not in seen and any(getattr(cfg, k) != v for k, v in s.changes.items()):
            seen.add(s.key)
            unique.append(s)
    return unique


def _more_balancing(cfg: TrainConfig, result: CollapseResult, target: tuple[int, str] | None,
                    metrics: dict[str, Any] | None) -> list[Suggestion]:
    """The imbalance won (or nothing says otherwise): balance, and balance enough."""
    out: list[Suggestion] = []
    sampler_on = cfg.sampler == "weighted" and cfg.sampler_power > 0
    weights_on = cfg.class_weights == "balanced"
    la_on = cfg.loss == "logit_adjusted"
    onto = (f"the predictions pile onto {class_name(target[0], len(metrics['prediction_distribution']))}, "
            "the majority class: ") if target and target[1] == "majority" else ""
    if not (sampler_on or weights_on or la_on):
        out.append(_make("sampler", "weighted", onto +
                         "no sampler and no class weights: batches are dominated by the majority "
                         "class; the inverse-frequency sampler makes them near-uniform",
                         **({"sampler_power": 1.0} if cfg.sampler_power != 1.0 else {})))
    elif len(balancing_on(cfg)) > 1:
        keep = "sampler" if sampler_on else "logit-adjusted loss"
        out.append(_make("class_weights" if weights_on else "loss", "none" if weights_on else "ce",
                         f"{' and '.join(balancing_on(cfg))} balance twice (rare classes are favoured by "
                         f"each), which is unstable; keep the {keep} only"))
    elif sampler_on and cfg.sampler_power < 1.0 and target and target[1] == "majority":
        out.append(_make("sampler_power", 1.0, onto + f"sampler_power {cfg.sampler_power:g} leaves the "
                         "batches dominated by it; inverse-frequency sampling (1.0) makes them near-uniform"))
    # The loss: balancing is on and it still collapsed onto the majority -> correct the logits for
    # the class prior inside the loss. It replaces the balancer (apply_suggestion switches it off):
    # the engine's prior is the training-label frequency, so on sampled batches it balances twice.
    if result.status == COLLAPSED and cfg.loss == "ce" and (sampler_on or weights_on) and \
            (target is None or target[1] == "majority"):
        out.append(_make("loss", "logit_adjusted",
                         "collapsed although the classes are balanced: logit-adjusted loss corrects "
                         "the class prior inside the loss, instead of the sampler / class weights"))
    return out


def _less_balancing(cfg: TrainConfig, name: str, metrics: dict[str, Any],
                    train_counts: Sequence[int] | None) -> list[Suggestion]:
    """The predictions pile onto a rare class: the balancing over-corrects. Balance less."""
    top, _ = _dominance(metrics)
    prior = list(train_counts) if train_counts else list(metrics.get("true_counts") or [])
    share = f" ({format_percent(prior[top] / sum(prior))} of the images)" if prior and sum(prior) else ""
    why = f"the predictions pile onto {name}, a rare class{share}: the balancing over-corrects; "
    out: list[Suggestion] = []
    if cfg.loss == "logit_adjusted" and cfg.la_tau > 0.25:
        out.append(_make("la_tau", round(cfg.la_tau / 2, 3), why + f"halve the logit adjustment "
                         f"(la_tau {cfg.la_tau:g} -> {cfg.la_tau / 2:g}) so rare classes are favoured less"))
    if cfg.sampler == "weighted" and cfg.sampler_power > SQRT_SAMPLING:
        out.append(_make("sampler_power", SQRT_SAMPLING, why + "square-root sampling still over-samples "
                         "rare classes, but half as strongly (sampler_power 1 -> 0.5)"))
    elif cfg.sampler == "weighted" and cfg.sampler_power > 0:
        out.append(_make("sampler", "none", why + "stop re-sampling; watch the per-class recall"))
    if cfg.class_weights == "balanced":
        out.append(_make("sampler", "weighted", why + "class weights up-weight every rare image in "
                         "every batch; square-root sampling instead favours them more gently",
                         sampler_power=SQRT_SAMPLING, class_weights="none"))
    return out


def _steadier(cfg: TrainConfig, rare: bool) -> list[Suggestion]:
    """Fewer trainable layers, smaller steps, longer warmup: useful whichever way it collapsed."""
    out: list[Suggestion] = []
    # Fewer trainable layers = less room to overfit one class. A random backbone must train.
    step = _FREEZE_STEPS.get(cfg.freeze)
    if step and has_pretrained(cfg):
        why = ("full fine-tuning of a small imbalanced set is what collapsed in the reference; "
               "freeze the backbone and train the last block only") if cfg.freeze == "none" else (
               f"train fewer layers: freeze={cfg.freeze} -> {step}")
        out.append(_make("freeze", step, why))
    limit = lr_limit(cfg)
    backbone_trains = cfg.freeze != "head"
    lr_high = cfg.lr > limit
    if lr_high:
        out.append(_make("lr", _lower_lr(cfg.lr, limit),
                         f"lr {cfg.lr:g} is high for {lr_subject(cfg)} (> {limit:g}); "
                         "large steps push the network onto one class"))
    elif rare:
        out.append(_make("lr", _round_lr(cfg.lr / 3), f"smaller steps (lr {cfg.lr:g} -> "
                         f"{_round_lr(cfg.lr / 3):g}): the model over-shoots onto the up-weighted class"))
    # Warmup only matters when pretrained blocks unfreeze after it; none at all is risky.
    if backbone_trains and has_pretrained(cfg) and cfg.warmup_epochs < WARMUP_CAP and \
            (lr_high or cfg.warmup_epochs == 0):
        out.append(_make("warmup_epochs", cfg.warmup_epochs + 1,
                         "train the head alone for longer before the backbone unfreezes, so random "
                         "head gradients do not wreck the pretrained features"))
    return out


def apply_suggestion(config: TrainConfig, suggestion: Suggestion | Mapping[str, Any]) -> TrainConfig:
    """The config with one suggestion applied (validated by TrainConfig.replace).

    Accepts a Suggestion or its to_dict() form (what events and the run log carry).
    Turning one balancer on switches the others off unless double balancing is explicitly allowed:
    a suggestion never means "balance twice" (replace() would refuse sampler + class weights with
    a ConfigError; logit-adjusted loss on top of either over-corrects toward the rare classes).
    """
    wanted = suggestion_changes(suggestion)
    key, value = next(iter(wanted.items()))
    changes: dict[str, Any] = {}
    if not config.allow_double_balancing:
        if key == "sampler" and value == "weighted":
            changes.update(class_weights="none", loss="ce" if config.loss == "logit_adjusted" else config.loss)
        elif key == "class_weights" and value == "balanced":
            changes.update(sampler="none", loss="ce" if config.loss == "logit_adjusted" else config.loss)
        elif key == "loss" and value == "logit_adjusted":
            changes.update(sampler="none", class_weights="none")
    changes.update(wanted)
    return config.replace(**changes)
