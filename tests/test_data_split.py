"""Group splits: zero patient overlap, every class on both sides when possible, clear warnings."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_tui.data.records import ImageRecord
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.data.split import kfold_splits, read_splits_csv, train_val_split, write_splits_csv
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
