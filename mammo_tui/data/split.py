"""Stratified group splits: no patient (group) on both sides, class proportions kept where possible.

Built on scikit-learn's StratifiedGroupKFold. A single train/val split is one fold of a
round(1 / val_fraction)-fold split: the first fold (over a few shuffle seeds) whose train and
val sets both contain every class; when none does, the fold covering the most classes, with a
warning that names each class that cannot be on both sides and why.
"""

from __future__ import annotations

import csv
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


@dataclass
class Split:
    train: np.ndarray  # indices into the records / labels
    val: np.ndarray
    warnings: list[str] = field(default_factory=list)


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


def train_val_split(labels: Sequence[int], groups: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> Split:
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (e.g. 0.2); got {val_fraction}.")
    labels_array, groups_array = _arrays(labels, groups)
    n_groups = _check_groups(groups_array, 2, "A train/validation split")
    n_splits = min(max(2, round(1.0 / val_fraction)), n_groups)
    n_classes = len(np.unique(labels_array))
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for attempt in range(SPLIT_ATTEMPTS):
        for train, val in _folds(labels_array, groups_array, n_splits, seed + attempt):
            covered = _classes_on_both_sides(labels_array, train, val)
            if covered == n_classes:
                return Split(train, val, [])
            if best is None or covered > best[0]:
                best = (covered, train, val)
    assert best is not None
    _, train, val = best
    return Split(train, val, _missing_class_warnings(labels_array, groups_array, train, val))


def kfold_splits(labels: Sequence[int], groups: Sequence[str], k: int = 5, seed: int = 0) -> list[Split]:
    if k < 2:
        raise ConfigError(f"Cross-validation needs k >= 2 folds; got {k}.")
    labels_array, groups_array = _arrays(labels, groups)
    _check_groups(groups_array, k, f"{k}-fold cross-validation")
    return [
        Split(train, val, [f"fold {number}: {message}" for message in
                           _missing_class_warnings(labels_array, groups_array, train, val)])
        for number, (train, val) in enumerate(_folds(labels_array, groups_array, k, seed), start=1)
    ]


def write_splits_csv(path: str | os.PathLike, records: Sequence[ImageRecord], split: Split) -> None:
    """One line per image: path,label (A-D),group,split (train | val); images in neither are left out."""
    side = {int(i): "train" for i in split.train} | {int(i): "val" for i in split.val}
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
