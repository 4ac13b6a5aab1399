"""Collapse detector (DESIGN.md rules) and config-derived suggestions."""

from __future__ import annotations

import itertools
import json

import pytest

from mammo_tui.collapse import (
    COLLAPSED,
    HEALTHY,
    WARNING,
    CollapseResult,
    Suggestion,
    apply_suggestion,
    detect_collapse,
    format_distribution,
    format_percent,
    suggest,
)
from mammo_tui import config
from mammo_tui.config import CHOICES, ConfigError, TrainConfig, coerce, load_preset
from mammo_tui.metrics import compute_metrics


def from_cm(cm: list[list[int]]) -> dict:
    """Metrics for a confusion matrix (rows = true class, columns = predicted)."""
    y_true, y_pred = [], []
    for i, row in enumerate(cm):
        for j, count in enumerate(row):
            y_true += [i] * count
            y_pred += [j] * count
    return compute_metrics(y_true, y_pred)


HEALTHY_CM = [[6, 2, 0, 0], [3, 55, 12, 3], [1, 20, 130, 19], [0, 4, 13, 50]]
CONSTANT_C = [[0, 0, 8, 0], [0, 0, 73, 0], [0, 0, 170, 0], [0, 0, 67, 0]]
# The DESIGN.md drift example: [8, 24, 52, 16] % of predictions, then [2, 18, 75, 5] %.
DRIFT_BEFORE = [[5, 2, 3, 0], [3, 18, 4, 0], [0, 4, 39, 2], [0, 0, 6, 14]]
DRIFT_AFTER = [[2, 3, 5, 0], [0, 13, 12, 0], [0, 2, 43, 0], [0, 0, 15, 5]]


# --- detector ---------------------------------------------------------------------------------

def test_constant_predictor_is_collapsed() -> None:
    result = detect_collapse(from_cm(CONSTANT_C))
    assert result.status == COLLAPSED
    assert result.reasons[0].startswith("C takes 100 % of predictions (>= 99 %)")
    assert "[A 0 %, B 0 %, C 100 %, D 0 %]" in result.reasons[0]
    assert "recall 0 for A, B, D" in result.reasons
    assert "kappa 0.00 < 0.20 (unweighted)" in result.reasons


def test_healthy_confusion_matrix_passes() -> None:
    m = from_cm(HEALTHY_CM)
    assert m["kappa"] > 0.4 and m["balanced_accuracy_adjusted"] > 0.5
    assert detect_collapse(m, previous=from_cm(HEALTHY_CM)) == CollapseResult(HEALTHY, [])


def test_design_drift_example_warns() -> None:
    before, after = from_cm(DRIFT_BEFORE), from_cm(DRIFT_AFTER)
    assert after["prediction_distribution"] == pytest.approx([0.02, 0.18, 0.75, 0.05])
    assert before["prediction_distribution"] == pytest.approx([0.08, 0.24, 0.52, 0.16])
    assert detect_collapse(after).status == HEALTHY  # nothing else is wrong with it
    result = detect_collapse(after, previous=before)
    assert result.status == WARNING
    assert len(result.reasons) == 1
    assert "drift toward C: 52 % -> 75 %" in result.reasons[0]
    assert "+23 points >= 20" in result.reasons[0]


def _dist_metrics(dist: list[float]) -> dict:
    # Only the drift rule reads these; everything else is set to healthy values.
    return {"prediction_distribution": dist, "kappa": 0.6, "balanced_accuracy_adjusted": 0.6,
            "recall_per_class": [0.5] * 4, "true_counts": [10] * 4}


@pytest.mark.parametrize(
    "before, after, warns",
    [
        ([0.10, 0.30, 0.55, 0.05], [0.05, 0.15, 0.75, 0.05], True),  # exactly +20 points
        ([0.10, 0.30, 0.56, 0.04], [0.05, 0.15, 0.75, 0.05], False),  # +19 points
        ([0.10, 0.40, 0.40, 0.10], [0.30, 0.25, 0.25, 0.20], False),  # spreading out, not drifting
        ([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], False),
    ],
)
def test_drift_threshold(before: list[float], after: list[float], warns: bool) -> None:
    result = detect_collapse(_dist_metrics(after), previous=_dist_metrics(before))
    assert result.status == (WARNING if warns else HEALTHY)


def test_unweighted_kappa_drives_the_rule() -> None:
    # Mostly C, a few right answers in every class: quadratic kappa passes 0.2, Cohen's does not.
    m = from_cm([[1, 0, 7, 0], [0, 1, 72, 0], [0, 0, 170, 0], [0, 0, 50, 17]])
    assert m["kappa"] < 0.2 <= m["kappa_quadratic"]
    assert all(r > 0 for r in m["recall_per_class"])
    result = detect_collapse(m, config=TrainConfig(warn_bal_acc_adj=0.0, warn_dominance=1.0))
    assert result.status == WARNING
    assert result.reasons == [f"kappa {m['kappa']:.2f} < 0.20 (unweighted)"]


def test_a_warning_names_a_dominant_class_first() -> None:
    # 94 % of the predictions are C, 53 % of the images are: a warning (not collapsed: < 99 %)
    # that says so before anything else.
    m = from_cm([[1, 0, 7, 0], [0, 1, 72, 0], [0, 0, 170, 0], [0, 0, 50, 17]])
    result = detect_collapse(m)
    assert result.status == WARNING
    assert result.reasons[0].startswith("C takes 94 % of predictions (>= 90 %, but 53 % of the images)")
    # A validation set that really is 95 % C, predicted right, is no warning.
    honest = from_cm([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 190, 0], [0, 0, 0, 0]])
    assert detect_collapse(honest).status == HEALTHY
    assert detect_collapse(m, config=TrainConfig(warn_dominance=0.95)).reasons[0].startswith("recall") is False


def test_an_oscillation_between_two_classes_warns() -> None:
    b_heavy, c_heavy = [0.05, 0.80, 0.10, 0.05], [0.05, 0.10, 0.80, 0.05]
    result = detect_collapse(_dist_metrics(c_heavy), previous=_dist_metrics(b_heavy))
    assert result.status == WARNING
    assert result.reasons == ["predictions swing from B (80 %) to C (80 %) in one epoch: the model jumps "
                              "between classes"]
    # and back again
    assert detect_collapse(_dist_metrics(b_heavy), previous=_dist_metrics(c_heavy)).status == WARNING
    # two balanced epochs whose top class changes are no swing
    assert detect_collapse(_dist_metrics([0.2, 0.3, 0.28, 0.22]),
                           previous=_dist_metrics([0.2, 0.28, 0.3, 0.22])).status == HEALTHY


def test_a_slow_drift_over_several_epochs_warns() -> None:
    # +8 points a time never trips the one-epoch rule; over three epochs it is +23.
    path = [[0.16, 0.24, 0.52, 0.08], [0.14, 0.20, 0.60, 0.06], [0.11, 0.16, 0.68, 0.05]]
    now = [0.08, 0.12, 0.75, 0.05]
    history = [_dist_metrics(d) for d in path]
    assert detect_collapse(_dist_metrics(now), previous=history[-1]).status == HEALTHY
    result = detect_collapse(_dist_metrics(now), previous=history)
    assert result.status == WARNING
    assert result.reasons == ["predictions drift toward C over 3 epochs: 52 % -> 60 % -> 68 % -> 75 % "
                              "(+23 points >= 20)"]
    # not steady (it fell back in between): no drift
    wobbly = [path[0], [0.10, 0.12, 0.70, 0.08], [0.12, 0.20, 0.60, 0.08]]  # 52, 70, 60
    assert detect_collapse(_dist_metrics(now), previous=[_dist_metrics(d) for d in wobbly]).status == HEALTHY
    # a model spreading out from an early favourite is not drifting, however long the window
    spreading = [[0.02, 0.05, 0.90, 0.03], [0.05, 0.10, 0.80, 0.05], [0.08, 0.14, 0.70, 0.08]]
    assert detect_collapse(_dist_metrics([0.10, 0.20, 0.60, 0.10]),
                           previous=[_dist_metrics(d) for d in spreading]).status == HEALTHY


def test_threshold_at_two_decimals_gets_more_digits() -> None:
    m = {**_dist_metrics([0.25] * 4), "kappa": 0.196}
    assert detect_collapse(m).reasons == ["kappa 0.196 < 0.200 (unweighted)"]


@pytest.mark.parametrize("n_top, status", [(99, COLLAPSED), (98, WARNING)])
def test_dominance_threshold(n_top: int, status: str) -> None:
    # 100 validation images, 25 per class; the model puts n_top of its predictions on C.
    rest = 100 - n_top
    cm = [[0, 0, 25, 0], [0, 0, 25, 0], [0, 0, 25, 0], [0, 0, 25, 0]]
    cm[3] = [0, 0, 25 - rest, rest]
    result = detect_collapse(from_cm(cm))
    assert result.status == status


def test_dominance_alone_is_not_collapse() -> None:
    # The validation set itself is 99.5 % C and the model is right on every image.
    m = from_cm([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 199, 0], [0, 0, 0, 0]])
    assert detect_collapse(m).status == HEALTHY


def test_absent_class_recall_is_not_counted() -> None:
    m = from_cm([[0, 0, 0, 0], [0, 30, 5, 0], [0, 5, 40, 5], [0, 0, 5, 20]])
    assert m["recall_per_class"][0] == 0.0
    assert detect_collapse(m).status == HEALTHY


def test_recall_zero_warns() -> None:
    m = from_cm([[0, 8, 0, 0], [0, 60, 13, 0], [0, 10, 150, 10], [0, 2, 10, 55]])
    result = detect_collapse(m)
    assert result.status == WARNING
    assert "recall 0 for A" in result.reasons


def test_low_balanced_accuracy_warns() -> None:
    m = {**_dist_metrics([0.25] * 4), "balanced_accuracy_adjusted": 0.12}
    assert detect_collapse(m).reasons == ["balanced accuracy adj. 0.12 < 0.30"]


def test_values_just_below_a_threshold_print_as_below_and_float_noise_passes() -> None:
    # seen in a demo run: bal-acc-adj 0.299983 printed as "0.3000 < 0.3000"
    m = {**_dist_metrics([0.25] * 4), "balanced_accuracy_adjusted": 0.299983113812901}
    assert detect_collapse(m).reasons == ["balanced accuracy adj. 0.29998 < 0.30000"]
    m["balanced_accuracy_adjusted"] = 0.3 - 1e-12  # equal up to floating-point rounding: passes
    assert detect_collapse(m).reasons == []


def test_thresholds_come_from_config() -> None:
    m = from_cm(HEALTHY_CM)
    strict = TrainConfig(collapse_kappa=0.99, collapse_dominance=0.5)
    assert detect_collapse(m, config=strict).status == WARNING
    m_const = from_cm(CONSTANT_C)
    assert detect_collapse(m_const, config=TrainConfig(collapse_dominance=1.0)).status == COLLAPSED


def test_result_is_json() -> None:
    result = detect_collapse(from_cm(CONSTANT_C))
    assert json.loads(json.dumps(result.to_dict()))["status"] == "collapsed"


def test_format_distribution() -> None:
    assert format_distribution([0, 0, 1.0, 0]) == "[A 0 %, B 0 %, C 100 %, D 0 %]"
    assert format_distribution([0.02, 0.18, 0.75, 0.05]) == "[A 2 %, B 18 %, C 75 %, D 5 %]"
    assert format_percent(0.996) == "99.6 %" and format_percent(0.004) == "0.4 %"
    assert format_distribution([0.5, 0.5]) == "[0 50 %, 1 50 %]"


# --- suggestions ------------------------------------------------------------------------------

COLLAPSE = CollapseResult(COLLAPSED, ["x"])
WARN = CollapseResult(WARNING, ["x"])


def keys(suggestions: list[Suggestion]) -> dict:
    return {s.key: s.value for s in suggestions}


def test_healthy_suggests_nothing() -> None:
    cfg = TrainConfig(freeze="none", sampler="none", lr=1e-2)
    assert suggest(cfg, CollapseResult(HEALTHY, []), {}) == []


def test_reference_collapse_suggests_the_reference_fix() -> None:
    # Full fine-tuning without balancing collapsed; the fix was freeze + last block + sampler.
    cfg = TrainConfig(freeze="none", sampler="none", class_weights="none", lr=1e-4, warmup_epochs=1)
    out = suggest(cfg, COLLAPSE, from_cm(CONSTANT_C))
    assert [s.key for s in out][:2] == ["sampler", "freeze"]
    assert keys(out) == {"sampler": "weighted", "freeze": "last_block"}
    for s in out:
        cfg = apply_suggestion(cfg, s)
    reference = load_preset("last_block")
    assert (cfg.sampler, cfg.freeze, cfg.class_weights) == (
        reference["sampler"], reference["freeze"], reference["class_weights"])


def test_class_weights_count_as_a_balancer() -> None:
    cfg = TrainConfig(sampler="none", class_weights="balanced", freeze="head", loss="focal")
    assert suggest(cfg, WARN, {}) == []


def test_double_balancing_drops_class_weights() -> None:
    cfg = TrainConfig(sampler="weighted", class_weights="balanced", allow_double_balancing=True, freeze="head")
    out = suggest(cfg, WARN, {})
    assert out[0].key == "class_weights" and out[0].value == "none"


@pytest.mark.parametrize(
    "freeze, expected",
    [("none", "last_block"), ("last_two_blocks", "last_block"), ("last_block", "head"), ("head", None)],
)
def test_freeze_steps_toward_the_head(freeze: str, expected: str | None) -> None:
    out = keys(suggest(TrainConfig(freeze=freeze, warmup_epochs=2), WARN, {}))
    assert out.get("freeze") == expected


def test_random_backbone_is_never_frozen() -> None:
    assert "freeze" not in keys(suggest(TrainConfig(freeze="none", pretrained=False), WARN, {}))


@pytest.mark.parametrize(
    "freeze, lr, expected_lr",
    [("last_block", 1e-3, 1e-4), ("none", 3e-4, None), ("none", 3.1e-4, 3.1e-5),
     ("head", 1e-3, None), ("head", 3e-3, None), ("head", 5e-3, 5e-4), ("last_block", 0.5, 1e-4),
     ("head", 0.5, 1e-3)],
)
def test_high_learning_rate(freeze: str, lr: float, expected_lr: float | None) -> None:
    out = keys(suggest(TrainConfig(freeze=freeze, lr=lr, warmup_epochs=2), WARN, {}))
    assert out.get("lr") == expected_lr


def test_warmup_rises_with_high_lr_up_to_a_cap() -> None:
    assert keys(suggest(TrainConfig(lr=1e-3, warmup_epochs=2), WARN, {}))["warmup_epochs"] == 3
    assert "warmup_epochs" not in keys(suggest(TrainConfig(lr=1e-3, warmup_epochs=5), WARN, {}))
    assert "warmup_epochs" not in keys(suggest(TrainConfig(lr=1e-4, warmup_epochs=2), WARN, {}))
    # no warmup at all is risky even at a low LR; with head only it does not apply
    assert keys(suggest(TrainConfig(lr=1e-4, warmup_epochs=0), WARN, {}))["warmup_epochs"] == 1
    assert "warmup_epochs" not in keys(suggest(TrainConfig(freeze="head", lr=1e-2, warmup_epochs=0), WARN, {}))


def test_logit_adjusted_only_when_balanced_and_still_collapsed() -> None:
    balanced = TrainConfig(sampler="weighted", loss="ce", freeze="head")
    assert keys(suggest(balanced, COLLAPSE, {})) == {"loss": "logit_adjusted"}
    assert "loss" not in keys(suggest(balanced, WARN, {}))
    assert "loss" not in keys(suggest(balanced.replace(loss="focal"), COLLAPSE, {}))
    assert "loss" not in keys(suggest(balanced.replace(sampler="none"), COLLAPSE, {}))
    # onto the majority despite balancing: yes; onto a middle class (D, 21 %): the prior is not why
    assert keys(suggest(balanced, COLLAPSE, from_cm(CONSTANT_C)))["loss"] == "logit_adjusted"
    all_d = from_cm([[0, 0, 0, 8], [0, 0, 0, 73], [0, 0, 0, 170], [0, 0, 0, 67]])
    assert "loss" not in keys(suggest(balanced, COLLAPSE, all_d))


def test_a_far_too_high_lr_is_the_first_fix() -> None:
    cfg = TrainConfig(freeze="none", sampler="none", lr=0.05, warmup_epochs=0)
    out = suggest(cfg, COLLAPSE, from_cm(CONSTANT_C))
    assert (out[0].key, out[0].value) == ("lr", 1e-4)
    assert "sampler" in keys(out)
    # just above its limit (1e-3 > 3e-4), the missing balancing is the first fix
    near = suggest(cfg.replace(lr=1e-3), COLLAPSE, from_cm(CONSTANT_C))
    assert [s.key for s in near][:1] == ["sampler"] and keys(near)["lr"] == 1e-4


ALL_A = [[8, 0, 0, 0], [73, 0, 0, 0], [170, 0, 0, 0], [67, 0, 0, 0]]


@pytest.mark.slow
def test_every_suggestion_is_new_valid_and_applicable() -> None:
    grid = itertools.product(CHOICES["freeze"], CHOICES["sampler"], (1.0, 0.5), CHOICES["class_weights"],
                             CHOICES["loss"], (1e-5, 1e-4, 5e-4, 1e-3, 1e-2), (0, 2, 5), (True, False))
    seen = set()
    for freeze, sampler, power, weights, loss, lr, warmup, pretrained in grid:
        try:
            cfg = config.from_mapping(dict(freeze=freeze, sampler=sampler, sampler_power=power,
                                           class_weights=weights, loss=loss, lr=lr, warmup_epochs=warmup,
                                           pretrained=pretrained, allow_double_balancing=True))
        except ConfigError:  # a frozen random backbone: refused before any suggestion could apply
            assert freeze != "none" and not pretrained
            continue
        for result, metrics in ((WARN, {}), (COLLAPSE, {}), (COLLAPSE, from_cm(CONSTANT_C)),
                                (COLLAPSE, from_cm(ALL_A))):
            out = suggest(cfg, result, metrics)
            assert len({s.key for s in out}) == len(out)
            for s in out:
                seen.add(s.key)
                assert any(getattr(cfg, k) != v for k, v in s.changes.items())
                assert coerce(s.key, s.value) == s.value
                applied = apply_suggestion(cfg, s)
                assert all(getattr(applied, k) == v for k, v in s.changes.items())
                assert s.reason
                json.dumps(s.to_dict())
    assert seen == {"sampler", "sampler_power", "class_weights", "freeze", "lr", "warmup_epochs", "loss", "la_tau"}


@pytest.mark.parametrize("sampler, weights, loss", [("weighted", "none", "ce"), ("none", "balanced", "ce"),
                                                    ("none", "none", "logit_adjusted"), ("none", "none", "ce")])
def test_a_collapse_onto_a_rare_class_never_asks_for_more_balancing(sampler, weights, loss) -> None:
    """Everything predicted A (the rarest class): the balancing over-corrects, or the LR is too high."""
    cfg = TrainConfig(freeze="last_block", sampler=sampler, class_weights=weights, loss=loss, lr=1e-4,
                      warmup_epochs=2)
    m = from_cm(ALL_A)
    result = detect_collapse(m)
    assert result.status == COLLAPSED
    out = suggest(cfg, result, m, train_counts=[32, 290, 680, 268])
    for s in out:
        assert "dominated by the majority" not in s.reason
        assert s.changes != {"sampler": "weighted"} and s.changes.get("sampler_power", 0.5) <= 0.5
        assert s.key != "loss" or s.value != "logit_adjusted"
        assert s.key != "class_weights" or s.value != "balanced"
        assert s.key != "lr" or s.value < cfg.lr
    got = keys(out)
    assert got["freeze"] == "head" and got["lr"] < 1e-4  # more freezing and a lower LR, always
    expected_first = {("weighted", "none", "ce"): ("sampler_power", 0.5),
                      ("none", "balanced", "ce"): ("sampler", "weighted"),
                      ("none", "none", "logit_adjusted"): ("la_tau", 0.5),
                      ("none", "none", "ce"): ("freeze", "head")}[(sampler, weights, loss)]
    assert (out[0].key, out[0].value) == expected_first
    assert "pile onto A, a rare class" in out[0].reason or sampler == weights == "none"
    if weights == "balanced":  # class weights swapped for the gentler square-root sampling
        assert out[0].also == {"sampler_power": 0.5, "class_weights": "none"}
        new = apply_suggestion(cfg, out[0])
        assert (new.sampler, new.sampler_power, new.class_weights) == ("weighted", 0.5, "none")
    # square-root sampling that still over-corrects: stop sampling
    gentle = keys(suggest(cfg.replace(sampler="weighted", sampler_power=0.5, class_weights="none", loss="ce"),
                          result, m))
    assert gentle.get("sampler") == "none"


def test_a_collapse_onto_the_majority_asks_for_balancing() -> None:
    m = from_cm(CONSTANT_C)
    result = detect_collapse(m)
    out = suggest(TrainConfig(freeze="head", sampler="none", lr=1e-3), result, m)
    assert out[0].key == "sampler" and out[0].value == "weighted"
    assert out[0].reason.startswith("the predictions pile onto C, the majority class")
    weak = suggest(TrainConfig(freeze="head", sampler="weighted", sampler_power=0.5, lr=1e-3), result, m)
    assert keys(weak)["sampler_power"] == 1.0


@pytest.mark.parametrize("freeze, lr", [("last_block", 0.5), ("none", 1e-3), ("head", 0.5), ("head", 4e-3)])
def test_a_suggested_lr_lands_below_the_limit_its_reason_quotes(freeze, lr) -> None:
    [s] = [s for s in suggest(TrainConfig(freeze=freeze, lr=lr, warmup_epochs=2), WARN, {}) if s.key == "lr"]
    limit = float(s.reason.split("(> ")[1].split(")")[0])
    assert s.value < limit < lr


def test_apply_suggestion_never_double_balances() -> None:
    cfg = TrainConfig(sampler="none", class_weights="balanced")
    new = apply_suggestion(cfg, Suggestion("sampler", "weighted", "r"))
    assert (new.sampler, new.class_weights) == ("weighted", "none")
    new = apply_suggestion(TrainConfig(), Suggestion("class_weights", "balanced", "r"))
    assert (new.sampler, new.class_weights) == ("none", "balanced")
    new = apply_suggestion(TrainConfig(sampler="weighted"), Suggestion("loss", "logit_adjusted", "r"))
    assert (new.loss, new.sampler, new.class_weights) == ("logit_adjusted", "none", "none")
    forced = TrainConfig(sampler="weighted", allow_double_balancing=True)
    assert apply_suggestion(forced, Suggestion("loss", "logit_adjusted", "r")).sampler == "weighted"
    with pytest.raises(ConfigError):
        apply_suggestion(TrainConfig(), Suggestion("lr", -1.0, "r"))


def test_apply_suggestion_takes_the_event_form() -> None:
    # The engine and the dashboard hold suggestions as dicts (CollapseStatus events, run log).
    s = Suggestion("freeze", "head", "r")
    assert apply_suggestion(TrainConfig(), s.to_dict()) == apply_suggestion(TrainConfig(), s)
    assert apply_suggestion(TrainConfig(), s.to_dict()).freeze == "head"


def test_a_one_class_validation_set_is_never_a_perfect_score_and_the_reason_says_why():
    """The model that predicts the set's one class everywhere used to score bal-acc-adj 1.0, the
    best a selection can see; it is chance (0.0) now, and the warning names the cause."""
    metrics = compute_metrics([1] * 6, [1] * 6)
    assert metrics["balanced_accuracy_adjusted"] == 0.0
    result = detect_collapse(metrics)
    assert any("holds one class" in reason for reason in result.reasons)
    assert not any("holds one class" in reason for reason in detect_collapse(
        compute_metrics([0, 1, 2, 3] * 3, [2] * 12)).reasons)
