"""Stratified group splits: no patient (group) on both sides, class proportions kept where possible.

Built on scikit-learn's StratifiedGroupKFold. A single train/val split takes m of the n folds of
an n-fold split as validation, with m/n as close to val_fraction as the patients allow (0.2 -> 1 of
5, 0.3 -> 3 of 10, 0.4 -> 2 of 5, 0.5 -> 1 of 2; see fold_plan): the first choice (over the
folds, then a few shuffle seeds) whose train and val sets both contain every class; when none
does, the one covering the most classes, with a warning that names each class that cannot be on
both sides and why.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from mammo_tui.data.records import ImageRecord
from mammo_tui.errors import ConfigError, DatasetError
from mammo_tui.labels import CLASS_NAMES

SPLIT_ATTEMPTS = 10  # shuffle seeds tried before settling for a fold that misses a class
MAX_PLAN_FOLDS = 20  # fold counts tried for a val_fraction that is not 1/k (0.35 -> 7 of 20)
PLAN_TOLERANCE = 0.01  # the fewest folds whose m/n is this close to val_fraction; else the closest


@dataclass
class Split:
    train: np.ndarray  # indices into the records / labels
    val: np.ndarray
    warnings: list[str] = field(default_factory=list)
    test: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))  # the official test side


def _arrays(labels: Sequence[int], groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    labels_array = np.asarray(labels, dtype=int)
    groups_array = np.asarray([str(g) for g in groups])
    if len(labels_array) != len(groups_array):
        raise ValueError(f"{len(labels_array)} labels but {len(groups_array)} groups")
    return labels_array, groups_array


def _folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" - we warn in words instead
        return [(np.sort(train), np.sort(val)) for train, val in splitter.split(np.zeros(len(labels)), labels, groups)]


def _missing_class_warnings(labels: np.ndarray, groups: np.ndarray, train: np.ndarray, val: np.ndarray) -> list[str]:
    messages = []
    for label in np.unique(labels):
        name = CLASS_NAMES[label]
        in_train, in_val = bool(np.any(labels[train] == label)), bool(np.any(labels[val] == label))
        if in_train and in_val:
            continue
        side, other = ("train", "validation") if in_train else ("validation", "train")
        owners = np.unique(groups[labels == label])
        count = int(np.sum(labels == label))
        if len(owners) == 1:
            why = (f"all {count} images of class {name} belong to one patient/group, and a patient is never "
                   "split across train and validation")
        else:
            why = (f"class {name} has only {len(owners)} patients/groups ({count} images) and no split put "
                   "one on each side")
        messages.append(f"class {name} is only in the {side} set, not in {other}: {why}. "
                        f"Add images of class {name} from other patients for a {other} signal on it.")
    return messages


def _classes_on_both_sides(labels: np.ndarray, train: np.ndarray, val: np.ndarray) -> int:
    return len(set(labels[train].tolist()) & set(labels[val].tolist()))


def _check_groups(groups: np.ndarray, needed: int, what: str) -> int:
    n_groups = len(np.unique(groups))
    if n_groups < needed:
        raise DatasetError(f"{what} needs at least {needed} patients/groups, but all {len(groups)} images belong "
                           f"to {n_groups}. Use a dataset with more patients (or a patient_id per image).")
    return n_groups


def fold_plan(val_fraction: float, n_groups: int) -> tuple[int, int]:
    """(m, n): validation = m of the n folds of a stratified group n-fold split.

    A 1/k fraction gives (1, k), one fold as it always was (with fewer than k groups,
    (1, n_groups)). Any other fraction: the fewest folds n (2 <= n <= the number of groups) with
    m/n within PLAN_TOLERANCE (and 5 % of the fraction) of val_fraction, else the closest m/n.
    """
    inverse = 1.0 / val_fraction
    if abs(inverse - round(inverse)) < 1e-9:
        return 1, max(2, min(round(inverse), n_groups))
    tolerance = min(PLAN_TOLERANCE, 0.05 * min(val_fraction, 1.0 - val_fraction))
    limit = min(n_groups, max(MAX_PLAN_FOLDS, math.ceil(1.0 / min(val_fraction, 1.0 - val_fraction)) + 1))
    best: tuple[float, int, int] | None = None
    for n in range(2, max(2, limit) + 1):
        m = min(n - 1, max(1, round(val_fraction * n)))
        error = abs(m / n - val_fraction)
        if error <= tolerance + 1e-12:
            return m, n
        if best is None or error < best[0] - 1e-12:
            best = (error, m, n)
    assert best is not None
    return best[1], best[2]


def train_val_split(labels: Sequence[int], groups: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> Split:
    """About val_fraction of the images in validation, no patient on both sides, stratified.

    Validation is m consecutive folds (cyclically) of an n-fold StratifiedGroupKFold, (m, n) from
    fold_plan; each start fold and then each shuffle seed is tried until every class is on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (e.g. 0.2); got {val_fraction}.")
    labels_array, groups_array = _arrays(labels, groups)
    n_groups = _check_groups(groups_array, 2, "A train/validation split")
    m, n_splits = fold_plan(val_fraction, n_groups)
    notes = []
    largest = int(np.bincount(labels_array).max())
    if largest < n_splits:  # scikit-learn needs one class with at least n_splits images
        n_splits, m = max(2, largest), 1
        notes.append(f"a tiny dataset: no class has {n_splits + 1} or more images, so validation is 1 of {n_splits} "
                     f"folds (about {100 // n_splits} % of the images) instead of {val_fraction:.0%}")
    n_classes = len(np.unique(labels_array))
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for attempt in range(SPLIT_ATTEMPTS):
        folds = [val for _, val in _folds(labels_array, groups_array, n_splits, seed + attempt)]
        for start in range(n_splits):
            val = np.sort(np.concatenate([folds[(start + i) % n_splits] for i in range(m)]))
            train = np.setdiff1d(np.arange(len(labels_array)), val)
            covered = _classes_on_both_sides(labels_array, train, val)
            if covered == n_classes:
                return Split(train, val, notes)
            if best is None or covered > best[0]:
                best = (covered, train, val)
    assert best is not None
    _, train, val = best
    return Split(train, val, notes + _missing_class_warnings(labels_array, groups_array, train, val))


def kfold_splits(labels: Sequence[int], groups: Sequence[str], k: int = 5, seed: int = 0) -> list[Split]:
    if k < 2:
        raise ConfigError(f"Cross-validation needs k >= 2 folds; got {k}.")
    labels_array, groups_array = _arrays(labels, groups)
    _check_groups(groups_array, k, f"{k}-fold cross-validation")
    largest = int(np.bincount(labels_array).max()) if len(labels_array) else 0
    if largest < k:
        raise DatasetError(f"{k}-fold cross-validation needs a class with at least {k} images; the largest class has "
                           f"{largest}. Use --folds {max(2, largest)} or fewer, or more images.")
    return [
        Split(train, val, [f"fold {number}: {message}" for message in
                           _missing_class_warnings(labels_array, groups_array, train, val)])
        for number, (train, val) in enumerate(_folds(labels_array, groups_array, k, seed), start=1)
    ]


def held_out_split(records: Sequence[ImageRecord], val_fraction: float, seed: int, folds: int = 0,
                   fold: int = 0) -> Split:
    """Train / validation drawn from the records outside the dataset's official test side; the test
    side (records with split "test") is held out whole: training and selection never see it."""
    pool = np.array([i for i, r in enumerate(records) if r.split != "test"], dtype=int)
    test = np.array([i for i, r in enumerate(records) if r.split == "test"], dtype=int)
    if len(pool) == 0:
        raise DatasetError(f"all {len(records)} usable images are on the dataset's official test side; nothing is "
                           "left to train on. Check the split column / files of the description.")
    labels = [records[i].label for i in pool]
    groups = [records[i].group for i in pool]
    if folds:
        inner = kfold_splits(labels, groups, k=folds, seed=seed)[fold]
    else:
        inner = train_val_split(labels, groups, val_fraction=val_fraction, seed=seed)
    warnings = list(inner.warnings)
    shared = {records[i].group for i in pool} & {records[i].group for i in test}
    if shared:
        warnings.append(f"{len(shared)} patients (groups) have images on both sides of the dataset's official split "
                        "(training and test): the official test side is kept as published, so its figures are "
                        "optimistic for those patients")
    return Split(pool[inner.train], pool[inner.val], warnings, test)


def write_splits_csv(path: str | os.PathLike, records: Sequence[ImageRecord], split: Split) -> None:
    """One line per image: path,label (A-D),group,split (train | val | test); images in none are left out."""
    side = ({int(i): "train" for i in split.train} | {int(i): "val" for i in split.val}
            | {int(i): "test" for i in split.test})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        for index, record in enumerate(records):
            if index in side:
                writer.writerow([record.path, CLASS_NAMES[record.label], record.group, side[index]])


def read_splits_csv(path: str | os.PathLike) -> dict[str, str]:
    """path -> "train" | "val", as written by write_splits_csv (to resume a run on the same split)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row["split"] for row in csv.DictReader(handle)}
