"""Statistics over runs: mean ± std over folds or seeds, per-class recalls, the worst status
(pure: numpy and the standard library only).

A cross-validation's summary, a sweep's leaderboard, the reports, the dashboard and `evaluate`
on a CV ensemble all compute and print these the same way, so each number reads the same wherever
it is shown.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mammo_tui.labels import CLASS_NAMES

FINISHED = ("healthy", "warning", "collapsed")  # a run that ended with a result
SCALARS = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy")
SEVERITY = {"healthy": 0, "warning": 1, "collapsed": 2}


def mean_std(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": float(np.mean(present)), "std": std, "n": len(present)}


def class_present(metrics: dict[str, Any], index: int) -> bool:
    """Whether class `index` had validation images in these metrics (true_counts). A recall of 0 for
    a class with no images is not a miss but no measurement; older metrics without true_counts
    count every class as present."""
    counts = metrics.get("true_counts")
    return not counts or index >= len(counts) or counts[index] > 0


def fold_recalls(metrics: dict[str, Any]) -> list[float | None]:
    """recall_per_class with None for the classes absent from that validation set."""
    return [r if class_present(metrics, i) else None for i, r in enumerate(metrics.get("recall_per_class") or [])]


def aggregate(fold_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """mean ± std over folds of each SCALARS metric and of each class's recall.

    A class's recall is averaged over the folds whose validation set holds that class (its
    recall elsewhere is 0 by convention, not a miss); each recall entry also says out of how many
    folds (`folds`), so `n` of `folds` tells where the class was present.
    """
    best = [s.get("best_metrics") or {} for s in fold_summaries]
    out: dict[str, Any] = {k: mean_std([b.get(k) for b in best]) for k in SCALARS}
    comparable = _auc_over_common_classes(best)
    if comparable is not None:
        out["auc_macro"] = comparable
    with_recall = [fold_recalls(b) for b in best if b.get("recall_per_class")]
    out["recall_per_class"] = {
        name: {**mean_std([r[i] if i < len(r) else None for r in with_recall]), "folds": len(with_recall)}
        for i, name in enumerate(CLASS_NAMES)
    }
    return out


def _auc_over_common_classes(best: list[dict[str, Any]]) -> dict[str, Any] | None:
    """mean ± std over folds of the macro AUC over the classes every fold holds (`classes` names
    them): a fold without class A averages three AUCs, the others four, and a mean of the two mixes
    averages of different things. A fold with no AUC at all (one class) is left out, as mean_std
    leaves out a missing value. None when a fold lacks per-class AUCs (metrics from before)."""
    per_class = [b.get("auc_per_class") for b in best]
    if not per_class or any(not isinstance(aucs, list) for aucs in per_class):
        return None
    per_class = [aucs for aucs in per_class if any(v is not None for v in aucs)]
    common = [c for c in range(len(CLASS_NAMES)) if all(c < len(a) and a[c] is not None for a in per_class)]
    if not common:
        return {**mean_std([]), "classes": []}
    folds = [float(np.mean([aucs[c] for c in common])) for aucs in per_class]
    return {**mean_std(folds), "classes": [CLASS_NAMES[c] for c in common]}


def format_mean_std(stat: dict[str, Any] | None, missing: str = "n/a") -> str:
    """A mean_std entry as `0.812 ± 0.034`."""
    if not stat or stat.get("mean") is None:
        return missing
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def format_recall_stat(stat: dict[str, Any] | None, digits: int = 3, missing: str = "n/a") -> str:
    """A class's recall over folds: `0.412 ± 0.100`, and `(3 of 5 folds)` when it was absent from some."""
    if not stat or stat.get("mean") is None:
        folds = (stat or {}).get("folds")
        return f"{missing} (in no fold)" if folds else missing
    text = f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    folds = stat.get("folds")
    if folds is not None and stat.get("n", folds) < folds:
        text += f" ({stat['n']} of {folds} folds)"
    return text


def worst_status(statuses: list[str]) -> str:
    """A CV is as healthy as its worst fold: one collapsed fold makes the method unreliable."""
    return max(statuses, key=lambda s: SEVERITY.get(s, -1), default="unknown")
