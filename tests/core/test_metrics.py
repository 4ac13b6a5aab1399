"""metrics.compute_metrics against scikit-learn and against a small independent reference."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mammo_tui.metrics import balanced_accuracy_adjusted, better_score, compute_metrics, selection_score

K = 4


def _nan_to_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _reference_kappa(cm: np.ndarray, weights: str | None) -> float:
    # Cohen's kappa straight from the confusion matrix, independent of sklearn.
    k = cm.shape[0]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = ((i - j) ** 2 if weights == "quadratic" else (i != j)).astype(float)
    observed = cm / cm.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    denom = (w * expected).sum()
    return 0.0 if denom == 0 else 1 - (w * observed).sum() / denom


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(rng.integers(1, 80))
    present = rng.choice(K, size=int(rng.integers(1, K + 1)), replace=False)  # absent classes
    y_true = rng.choice(present, size=n)
    mode = rng.integers(3)
    if mode == 0:  # constant predictor
        y_pred = np.full(n, rng.integers(K))
    elif mode == 1:  # noisy copy
        y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, K, n))
    else:
        y_pred = rng.integers(0, K, n)
    probs = rng.dirichlet(np.ones(K), size=n)
    return y_true, y_pred, probs


CASES = [_random_case(np.random.default_rng(seed)) for seed in range(300)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_sklearn_and_reference(case: int) -> None:
    y_true, y_pred, probs = CASES[case]
    m = compute_metrics(y_true, y_pred, probs)
    labels = list(range(K))
    cm = confusion_matrix(y_true, y_pred, labels=labels)

    assert m["n"] == len(y_true)
    assert m["confusion_matrix"] == cm.tolist()
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(y_true, y_pred)
        sk_adj = balanced_accuracy_score(y_true, y_pred, adjusted=True)
        kappa = _nan_to_zero(cohen_kappa_score(y_true, y_pred, labels=labels))
        kappa_q = _nan_to_zero(cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert m["balanced_accuracy"] == pytest.approx(bal)
    # adjusted for chance 1/K with K = 4 classes, whatever y_true holds; sklearn's adjusted=True
    # agrees when all four classes are present (it uses the classes present)
    if len(np.unique(y_true)) >= 2:
        assert m["balanced_accuracy_adjusted"] == pytest.approx((bal - 1 / K) / (1 - 1 / K))
    else:  # one class: nothing to tell apart, chance level
        assert m["balanced_accuracy_adjusted"] == 0.0
    if len(np.unique(y_true)) == K:
        assert m["balanced_accuracy_adjusted"] == pytest.approx(sk_adj)
    assert m["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert m["kappa_quadratic"] == pytest.approx(kappa_q, abs=1e-12)
    assert m["kappa"] == pytest.approx(_reference_kappa(cm, None), abs=1e-9)
    assert m["kappa_quadratic"] == pytest.approx(_reference_kappa(cm, "quadratic"), abs=1e-9)
    assert m["precision_per_class"] == pytest.approx(list(p))
    assert m["recall_per_class"] == pytest.approx(list(r))
    assert m["f1_per_class"] == pytest.approx(list(f))
    # balanced accuracy = mean recall over the classes present in y_true
    present = np.unique(y_true)
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m["recall_per_class"][c] for c in present]))

    assert m["prediction_counts"] == np.bincount(y_pred, minlength=K).tolist()
    assert m["true_counts"] == np.bincount(y_true, minlength=K).tolist()
    assert sum(m["prediction_distribution"]) == pytest.approx(1.0)
    assert m["true_distribution"] == pytest.approx(list(np.bincount(y_true, minlength=K) / len(y_true)))
    for key in ("precision_per_class", "recall_per_class", "f1_per_class",
                "prediction_distribution", "true_distribution", "prediction_counts", "true_counts"):
        assert len(m[key]) == K, key

    if len(present) < 2:
        assert m["auc_macro"] is None and m["auc_per_class"] == [None] * K
    else:
        expected = np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in present])
        assert m["auc_macro"] == pytest.approx(expected)
        for c in range(K):  # one-vs-rest per class; None where the class has no images
            if c in present:
                assert m["auc_per_class"][c] == pytest.approx(roc_auc_score(y_true == c, probs[:, c]))
            else:
                assert m["auc_per_class"][c] is None
        if len(present) == K:
            sk = roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
            assert m["auc_macro"] == pytest.approx(sk)

    json.dumps(m, allow_nan=False)  # plain, finite values only


def test_random_cases_cover_the_degenerate_ones() -> None:
    # Guard against the generator drifting into only easy cases.
    constant = sum(len(set(p.tolist())) == 1 for _, p, _ in CASES)
    one_class = sum(len(set(t.tolist())) == 1 for t, _, _ in CASES)
    absent = sum(len(set(t.tolist())) < K for t, _, _ in CASES)
    assert constant > 50 and one_class > 30 and absent > 100


def test_constant_predictor_scores_zero_not_nan() -> None:
    y_true = [0] * 4 + [1] * 36 + [2] * 85 + [3] * 33
    m = compute_metrics(y_true, [2] * len(y_true))
    assert m["kappa"] == 0.0 and m["kappa_quadratic"] == 0.0
    assert m["balanced_accuracy_adjusted"] == 0.0
    assert m["accuracy"] == pytest.approx(85 / 158)
    assert m["recall_per_class"] == [0.0, 0.0, 1.0, 0.0]
    assert m["prediction_distribution"] == [0.0, 0.0, 1.0, 0.0]


def test_one_class_set_is_defined() -> None:
    # sklearn gives NaN kappa and -inf / NaN adjusted balanced accuracy here. A set of one class
    # cannot measure telling classes apart: the adjusted form is chance (0.0), as the kappas are;
    # it used to be 1.0 for the collapsed model that predicts that class everywhere, the best
    # possible score for selection.
    for y_pred, recall in (([1, 1, 1], 1.0), ([1, 1, 2], 2 / 3)):
        m = compute_metrics([1, 1, 1], y_pred, probs=np.full((3, 4), 0.25))
        assert m["kappa"] == 0.0 and m["kappa_quadratic"] == 0.0
        assert m["balanced_accuracy"] == pytest.approx(recall)
        assert m["balanced_accuracy_adjusted"] == 0.0
        assert m["auc_macro"] is None
        json.dumps(m, allow_nan=False)


def test_adjusted_balanced_accuracy_uses_four_classes_when_one_is_absent() -> None:
    # A fold without class A images: recalls B 2/4, C 3/4, D 1/4 -> balanced accuracy 0.5
    y_true = [1] * 4 + [2] * 4 + [3] * 4
    y_pred = [1, 1, 2, 0] + [2, 2, 2, 3] + [3, 2, 2, 1]
    m = compute_metrics(y_true, y_pred)
    assert m["balanced_accuracy"] == pytest.approx(0.5) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy_adjusted"] == pytest.approx((0.5 - 1 / 4) / (3 / 4))  # 1/3: above 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        three_class = balanced_accuracy_score(y_true, y_pred, adjusted=True)  # chance 1/3: 0.25
    assert three_class == pytest.approx(0.25)
    assert m["balanced_accuracy_adjusted"] > 0.3 > three_class
    assert balanced_accuracy_adjusted(0.5, 4) == pytest.approx(m["balanced_accuracy_adjusted"])
    assert balanced_accuracy_adjusted(0.25, 4) == 0.0 and balanced_accuracy_adjusted(1.0, 4) == 1.0


def test_hand_computed_example() -> None:
    # rows = true: A [2,1,0,0]; B [0,3,1,0]; C [0,0,4,0]; D [0,0,1,1]
    y_true = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
    m = compute_metrics(y_true, y_pred)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 3, 1, 0], [0, 0, 4, 0], [0, 0, 1, 1]]
    assert m["accuracy"] == pytest.approx(10 / 13)
    assert m["recall_per_class"] == pytest.approx([2 / 3, 3 / 4, 1.0, 1 / 2])
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 1 + 1 / 2) / 4)
    assert m["balanced_accuracy_adjusted"] == pytest.approx(((2 / 3 + 3 / 4 + 1 + 1 / 2) / 4 - 0.25) / 0.75)
    assert m["precision_per_class"] == pytest.approx([1.0, 3 / 4, 4 / 6, 1.0])
    assert m["prediction_counts"] == [2, 4, 6, 1]
    assert m["kappa_quadratic"] > m["kappa"] > 0.6  # only adjacent-class mistakes


def test_perfect_predictor() -> None:
    y = [0, 1, 2, 3] * 5
    probs = np.eye(4)[y]
    m = compute_metrics(y, y, probs)
    assert m["kappa"] == m["kappa_quadratic"] == m["balanced_accuracy_adjusted"] == pytest.approx(1.0)
    assert m["auc_macro"] == pytest.approx(1.0)


def test_values_are_plain_python() -> None:
    m = compute_metrics(np.array([0, 1, 2, 3, 2]), np.array([0, 1, 2, 2, 2]), np.full((5, 4), 0.25))
    scalars = [v for v in m.values() if not isinstance(v, list)]
    assert all(v is None or type(v) in (int, float) for v in scalars)
    lists = [v for k, v in m.items() if isinstance(v, list) and k != "confusion_matrix"]
    assert all(type(x) in (int, float) for v in lists for x in v)
    assert all(type(x) is int for row in m["confusion_matrix"] for x in row)


def test_float_labels_are_accepted() -> None:
    m = compute_metrics(np.array([0.0, 1.0, 2.0]), [0, 1, 1])
    assert m["true_counts"] == [1, 1, 1, 0]


@pytest.mark.parametrize(
    "probs",
    [None, np.full((3, 3), 1 / 3), np.full((2, 4), 0.25), np.array([[np.nan, 0, 0, 1]] * 3), "junk"],
)
def test_auc_is_none_when_it_cannot_be_computed(probs: object) -> None:
    assert compute_metrics([0, 1, 2], [0, 1, 1], probs)["auc_macro"] is None


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([0, 1], [0]), ([0, 4], [0, 1]), ([-1, 0], [0, 0]), ([], []), ([0.5, 1], [0, 1])],
)
def test_bad_input_raises_value_error(y_true: list, y_pred: list) -> None:
    with pytest.raises(ValueError):
        compute_metrics(y_true, y_pred)


def test_other_class_counts() -> None:
    m = compute_metrics([0, 1, 2, 5], [0, 1, 2, 5], num_classes=6)
    assert len(m["recall_per_class"]) == 6 and len(m["confusion_matrix"]) == 6


def test_selection_score_prefers_balance_over_accuracy() -> None:
    y_true = [0] * 4 + [1] * 36 + [2] * 85 + [3] * 33
    collapsed = compute_metrics(y_true, [2] * len(y_true))
    balanced_pred = [0] * 4 + [1] * 30 + [2] * 6 + [1] * 35 + [2] * 25 + [3] * 25 + [3] * 23 + [2] * 10
    balanced = compute_metrics(y_true, balanced_pred)
    assert collapsed["accuracy"] > balanced["accuracy"]
    assert selection_score(balanced) > selection_score(collapsed)


def test_selection_score_tie_breaks() -> None:
    base = {"balanced_accuracy_adjusted": 0.5, "kappa_quadratic": 0.6, "auc_macro": None}
    assert selection_score(base) == (0.5, 0.6, -1.0)
    assert selection_score({**base, "auc_macro": 0.7}) > selection_score(base)
    assert selection_score({**base, "kappa_quadratic": 0.61}) > selection_score({**base, "auc_macro": 0.99})
    better_balance = {**base, "balanced_accuracy_adjusted": 0.51, "kappa_quadratic": 0.0}
    assert selection_score(better_balance) > selection_score(base)


def test_better_score_breaks_float_noise_ties_on_kappa() -> None:
    # 0.7 - 0.4 and 0.3 are the same balanced accuracy up to rounding: kappa decides
    noisy = 0.7 - 0.4
    assert noisy < 0.3
    earlier = (0.3, 0.40, 0.70)
    later = (noisy, 0.55, 0.60)  # better kappa, balanced accuracy 6e-17 lower
    assert not later > earlier  # plain tuple comparison keeps the worse-kappa checkpoint
    assert better_score(later, earlier)
    assert not better_score(earlier, later)
    # and the other way round: a rounding-noise gain does not beat a better kappa
    assert better_score((0.3, 0.55, 0.6), (noisy, 0.40, 0.7))
    assert not better_score((0.3 + 1e-12, 0.40, 0.7), (0.3, 0.55, 0.6))


def test_better_score_is_lexicographic_beyond_the_tolerance() -> None:
    assert better_score((0.5, 0.0, -1.0), None)
    assert better_score((0.51, 0.0, -1.0), (0.5, 0.9, 0.9))
    assert not better_score((0.5, 0.6, 0.7), (0.5, 0.6, 0.7))  # a full tie keeps the earlier one
    assert better_score((0.5, 0.6, 0.7 + 1e-6), (0.5, 0.6, 0.7))
    assert not better_score((0.5, 0.6 - 1e-6, 0.99), (0.5, 0.6, 0.7))
    assert better_score((0.5, 0.6, 0.7), (0.5 - 1e-8, 0.6, 0.7))  # 1e-8 is beyond the 1e-9 noise
    assert better_score((0.5, 0.6, 0.7), (0.5 - 1e-8, 0.6, 0.7), tol=1e-7) is False
    a = compute_metrics([0, 1, 2, 3] * 3, [0, 1, 2, 3] * 2 + [1, 1, 2, 2])
    b = compute_metrics([0, 1, 2, 3] * 3, [0, 1, 2, 3] * 2 + [0, 2, 2, 2])
    assert better_score(selection_score(a), selection_score(b)) == (selection_score(a) > selection_score(b))


def test_import_does_not_pull_torch_textual_or_sklearn() -> None:
    code = ("import sys, mammo_tui.metrics; "
            "print(sorted(m for m in ('torch', 'textual', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
