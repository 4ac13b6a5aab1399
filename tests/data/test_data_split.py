"""Group splits: zero patient overlap, every class on both sides when possible, clear warnings."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_tui.data.records import ImageRecord
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.data.split import fold_plan, kfold_splits, read_splits_csv, train_val_split, write_splits_csv
from mammo_tui.errors import DatasetError


@pytest.fixture(scope="module")
def demo_report(demo_dataset):
    return scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))


def labels_groups(report):
    return np.array([r.label for r in report.records]), np.array([r.group for r in report.records])


def test_demo_split_has_no_patient_on_both_sides_and_all_classes(demo_report):
    labels, groups = labels_groups(demo_report)
    split = train_val_split(labels, groups, val_fraction=0.2, seed=0)
    assert set(groups[split.train]).isdisjoint(groups[split.val])
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(len(labels)))
    assert set(labels[split.val]) == set(labels[split.train]) == {0, 1, 2, 3}
    assert split.warnings == []
    assert 0.1 < len(split.val) / len(labels) < 0.3


def test_split_is_deterministic_per_seed(demo_report):
    labels, groups = labels_groups(demo_report)
    a, b = train_val_split(labels, groups, seed=3), train_val_split(labels, groups, seed=3)
    np.testing.assert_array_equal(a.val, b.val)
    others = [train_val_split(labels, groups, seed=s).val for s in (4, 5, 6)]
    assert any(not np.array_equal(a.val, other) for other in others)


def test_class_owned_by_one_patient_gives_a_warning_naming_it():
    # class A: 3 images, all from patient p0; B..D spread over many patients
    labels = [0, 0, 0] + [1, 2, 3] * 10
    groups = ["p0"] * 3 + [f"p{i}" for i in range(1, 31)]
    split = train_val_split(labels, groups, val_fraction=0.25, seed=0)
    groups_array, labels_array = np.array(groups), np.array(labels)
    assert set(groups_array[split.train]).isdisjoint(groups_array[split.val])
    assert len(split.warnings) == 1
    warning = split.warnings[0]
    assert "class A" in warning and "one patient" in warning
    assert {1, 2, 3} <= set(labels_array[split.val]) and {1, 2, 3} <= set(labels_array[split.train])


def test_too_few_groups_is_a_dataset_error():
    with pytest.raises(DatasetError, match="at least 2 patients"):
        train_val_split([0, 1, 2], ["same", "same", "same"])
    with pytest.raises(DatasetError, match="5-fold"):
        kfold_splits([0, 1, 2, 3], ["a", "b", "c", "d"], k=5)


def test_few_groups_reduce_the_number_of_folds():
    labels = [0, 1, 0, 1, 0, 1]
    groups = ["a", "a", "b", "b", "c", "c"]  # 3 groups, val_fraction 0.2 would want 5 folds
    split = train_val_split(labels, groups, val_fraction=0.2)
    assert len(split.val) == 2 and len(split.train) == 4


def test_kfold_val_sets_partition_the_data_without_leakage(demo_report):
    labels, groups = labels_groups(demo_report)
    folds = kfold_splits(labels, groups, k=3, seed=1)
    assert len(folds) == 3
    all_val = np.concatenate([f.val for f in folds])
    assert sorted(all_val.tolist()) == list(range(len(labels)))
    for fold in folds:
        assert set(groups[fold.train]).isdisjoint(groups[fold.val])
        assert len(fold.train) + len(fold.val) == len(labels)


def test_splits_csv_round_trip(tmp_path):
    records = [ImageRecord(f"/data/{i}.dcm", i % 4, f"g{i // 2}", i + 2) for i in range(8)]
    split = train_val_split([r.label for r in records], [r.group for r in records], val_fraction=0.5)
    target = tmp_path / "splits.csv"
    write_splits_csv(target, records, split)
    lines = target.read_text().splitlines()
    assert lines[0] == "path,label,group,split"
    assert lines[1].startswith("/data/0.dcm,A,g0,")
    side = read_splits_csv(target)
    assert {p for p, s in side.items() if s == "val"} == {records[i].path for i in split.val}
    assert len(side) == 8


def _patients(n_patients=120, seed=0):
    """A few hundred images: 1-5 images per patient, one density class per patient, imbalanced
    (A 6 %, B 30 %, C 44 %, D 20 % of patients)."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for patient in range(n_patients):
        label = int(rng.choice(4, p=[0.06, 0.30, 0.44, 0.20]))
        for _ in range(int(rng.integers(1, 6))):
            labels.append(label)
            groups.append(f"p{patient}")
    return np.array(labels), np.array(groups)


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.4, 0.5, 0.35, 0.6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_val_fraction_is_honoured(fraction, seed):
    labels, groups = _patients(seed=seed)
    assert 300 < len(labels) < 420
    split = train_val_split(labels, groups, val_fraction=fraction, seed=seed)
    share = len(split.val) / len(labels)
    assert abs(share - fraction) < 0.05, share  # round(1 / 0.4) = 2 folds gave 0.5 here
    assert set(groups[split.train]).isdisjoint(groups[split.val])
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(len(labels)))
    assert set(labels[split.val]) == set(labels[split.train]) == {0, 1, 2, 3} and split.warnings == []
    for c in range(4):  # stratified: each class near its overall share on the validation side
        assert abs(np.mean(labels[split.val] == c) - np.mean(labels == c)) < 0.06


@pytest.mark.parametrize("fraction, plan", [(0.2, (1, 5)), (0.25, (1, 4)), (0.1, (1, 10)), (0.5, (1, 2)),
                                            (0.3, (3, 10)), (0.4, (2, 5)), (0.8, (4, 5)), (0.35, (5, 14))])
def test_fold_plan(fraction, plan):
    m, n = fold_plan(fraction, 1000)
    assert (m, n) == plan and abs(m / n - fraction) <= 0.01
    assert fold_plan(fraction, 3)[1] <= 3  # never more folds than patients


def test_one_over_k_fractions_split_as_before():
    """0.2 is still the first fold of a shuffled 5-fold StratifiedGroupKFold with every class on
    both sides: existing runs' splits do not change."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = _patients(seed=4)
    for fraction, k in ((0.2, 5), (0.25, 4), (0.5, 2)):
        for seed in (0, 7):
            split = train_val_split(labels, groups, val_fraction=fraction, seed=seed)
            folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels, groups)
            expected = next(np.sort(val) for _, val in folds
                            if set(labels[val]) == set(labels[np.setdiff1d(np.arange(len(labels)), val)]) == {0, 1, 2, 3})
            np.testing.assert_array_equal(split.val, expected)
