"""Per-epoch validation metrics, computed with scikit-learn and returned as plain JSON values.

The headline metric is the quadratic-weighted kappa: BI-RADS density is ordinal (A < B < C < D),
so calling a C a D is a smaller mistake than calling an A a D, and the quadratic weights say so.
Collapse shows up in balanced accuracy, per-class recall and the prediction distribution long
before it shows up in accuracy, so all of them are reported every epoch.

scikit-learn is imported inside the functions: it costs about a second at import time and the
wizard (which imports the planner, not this module) must start fast.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np


def _finite(value: float, default: float = 0.0) -> float:
    # sklearn returns NaN when a score is undefined, e.g. kappa of a constant predictor on a
    # one-class set; NaN would poison comparisons and JSON.
    value = float(value)
    return value if math.isfinite(value) else default


def _as_labels(values: Any, name: str, num_classes: int) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
        array = array.astype(np.int64)
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}")
    return array


def auc_per_class(y_true: np.ndarray, probs: Any, num_classes: int) -> list[float | None]:
    """One-vs-rest ROC AUC of each class; None for a class absent from y_true (no positives: its
    AUC does not exist), and for every class when fewer than two are present or the scores are
    missing or not finite. Never raises."""
    none: list[float | None] = [None] * num_classes
    if probs is None:
        return none
    try:
        from sklearn.metrics import roc_auc_score

        scores = np.asarray(probs, dtype=np.float64)
        if scores.shape != (len(y_true), num_classes) or not np.all(np.isfinite(scores)):
            return none
        present = np.unique(y_true)
        if len(present) < 2:
            return none
        out = list(none)
        for c in present:
            value = float(roc_auc_score(y_true == c, scores[:, c]))
            out[int(c)] = value if math.isfinite(value) else None
        return out
    except (ValueError, TypeError, IndexError):
        return none


def auc_macro(y_true: np.ndarray, probs: Any, num_classes: int) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes present in y_true; None when undefined.

    Averaging over the present classes keeps the metric usable on small validation sets; over
    folds that hold different classes, stats.aggregate averages the classes every fold holds.
    """
    values = [v for v in auc_per_class(y_true, probs, num_classes) if v is not None]
    return float(np.mean(values)) if values else None


def balanced_accuracy_adjusted(balanced: float, num_classes: int = 4) -> float:
    """(balanced - 1/K) / (1 - 1/K) with K = num_classes: 0 at chance, 1 for a perfect model.

    K is the number of classes the model predicts, not the number present in one validation
    set, so the value means the same on every fold (and the collapse threshold with it).
    """
    if num_classes < 2:
        return 0.0
    chance = 1.0 / num_classes
    return _finite((float(balanced) - chance) / (1.0 - chance))


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray | None = None,
    num_classes: int = 4,
) -> dict[str, Any]:
    """All validation metrics for one epoch, as plain Python values (JSON-serialisable).

    `kappa_quadratic` (quadratic-weighted Cohen's kappa) is the headline number because density
    is ordinal; `kappa` is the unweighted Cohen's kappa that the collapse rules use. Per-class
    lists always have `num_classes` slots (0 for classes absent from both arrays); the confusion
    matrix has rows = true class, columns = predicted class. `balanced_accuracy` is the mean
    recall over the classes present in y_true (the standard definition); its adjusted form uses
    chance = 1/num_classes, whatever classes the set holds (see balanced_accuracy_adjusted), and it
    is 0.0 on a set holding one class only (no discrimination to measure). Undefined kappas are 0.0
    (chance level), never NaN; `auc_macro` is None when it cannot be
    computed (no probabilities, fewer than two classes present).
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    yt = _as_labels(y_true, "y_true", num_classes)
    yp = _as_labels(y_pred, "y_pred", num_classes)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} labels but y_pred has {yp.size}")
    n = int(yt.size)
    if n == 0:
        raise ValueError("cannot compute metrics on an empty validation set")
    labels = list(range(num_classes))

    with warnings.catch_warnings():
        # Degenerate epochs (constant predictor, one-class set) are expected here, not noise.
        warnings.simplefilter("ignore")
        with np.errstate(divide="ignore", invalid="ignore"):
            balanced = _finite(balanced_accuracy_score(yt, yp))
            kappa = _finite(cohen_kappa_score(yt, yp, labels=labels))
            kappa_q = _finite(cohen_kappa_score(yt, yp, labels=labels, weights="quadratic"))
        precision, recall, f1, _ = precision_recall_fscore_support(
            yt, yp, labels=labels, average=None, zero_division=0
        )

    # Chance level is 1/K for the K classes the model chooses among, whatever this set holds.
    # sklearn's adjusted=True uses the classes present in y_true instead, so the same recalls
    # would score differently on a fold without A images and the 0.3 threshold would shift.
    # With one class in the set there is nothing to tell apart: a model that predicts that class
    # everywhere would score a perfect 1.0 (and be selected as the best epoch). Undefined, like
    # the kappas there: chance level, 0.0.
    present = len(np.unique(yt))
    balanced_adj = balanced_accuracy_adjusted(balanced, num_classes) if present >= 2 else 0.0
    pred_counts = np.bincount(yp, minlength=num_classes)
    true_counts = np.bincount(yt, minlength=num_classes)
    return {
        "n": n,
        "accuracy": float(accuracy_score(yt, yp)),
        "balanced_accuracy": balanced,
        "balanced_accuracy_adjusted": balanced_adj,
        "kappa": kappa,
        "kappa_quadratic": kappa_q,
        "auc_macro": auc_macro(yt, probs, num_classes),
        "auc_per_class": auc_per_class(yt, probs, num_classes),
        "precision_per_class": [float(v) for v in precision],
        "recall_per_class": [float(v) for v in recall],
        "f1_per_class": [float(v) for v in f1],
        "prediction_counts": [int(v) for v in pred_counts],
        "true_counts": [int(v) for v in true_counts],
        "prediction_distribution": [float(v) / n for v in pred_counts],
        "true_distribution": [float(v) / n for v in true_counts],
        "confusion_matrix": confusion_matrix(yt, yp, labels=labels).astype(int).tolist(),
    }


def selection_score(metrics: dict[str, Any]) -> tuple[float, float, float]:
    """Key for choosing the best checkpoint, compared lexicographically (higher is better).

    Balanced-accuracy-adjusted first, then quadratic kappa, then macro AUC (-1.0 when missing).
    Never raw accuracy: a collapsed model that predicts the majority class scores high on it.
    """
    auc = metrics.get("auc_macro")
    return (
        _finite(metrics.get("balanced_accuracy_adjusted", 0.0)),
        _finite(metrics.get("kappa_quadratic", 0.0)),
        -1.0 if auc is None else _finite(auc, -1.0),
    )


SCORE_TOLERANCE = 1e-9


def better_score(candidate: Sequence[float], best: Sequence[float] | None, tol: float = SCORE_TOLERANCE) -> bool:
    """Whether selection score `candidate` beats `best` (None: nothing yet, so it does).

    Lexicographic like tuple comparison, except that components within `tol` of each other count
    as equal and the next component decides: the same balanced accuracy computed along two paths
    (0.30000000000000004 vs 0.29999999999999993) is a tie to be broken by kappa, not by rounding.
    A full tie is not better (the earlier checkpoint stays).
    """
    if best is None:
        return True
    for new, old in zip(candidate, best):
        new, old = float(new), float(old)
        if abs(new - old) <= tol:
            continue
        return new > old
    return False
