"""The synthetic demo dataset: deterministic, reference proportions, real decoding paths, learnable."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_tui.data.cache import PreprocessCache, load_images
from mammo_tui.data.demo import REFERENCE_CLASS_COUNTS, demo_class_counts, demo_paths, make_demo_dataset
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.errors import DatasetError


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_class_counts_follow_the_reference():
    assert demo_class_counts(1.0) == list(REFERENCE_CLASS_COUNTS) == [40, 363, 849, 335]
    assert sum(demo_class_counts(1.0)) == 1587
    assert demo_class_counts(0.5) == [20, 182, 424, 168]
    assert demo_class_counts(0.01) == [4, 4, 8, 3 + 1]  # at least 4 images (2 patients) per class


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = make_demo_dataset(tmp_path / "one", size=0.02, seed=7)
    second = make_demo_dataset(tmp_path / "two", size=0.02, seed=7)
    other = make_demo_dataset(tmp_path / "three", size=0.02, seed=8)
    assert tree_digest(first.parent) == tree_digest(second.parent)
    assert tree_digest(first.parent) != tree_digest(other.parent)


def test_regenerating_into_the_same_folder_leaves_no_stale_files(tmp_path):
    csv = make_demo_dataset(tmp_path, size=0.05, seed=0)
    make_demo_dataset(tmp_path, size=0.02, seed=1)
    _, root = demo_paths(csv)
    listed = {line.split(",")[0] for line in csv.read_text().splitlines()[1:]}
    assert {p.name for p in root.iterdir()} == listed


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "dicom").mkdir()
    with pytest.raises(DatasetError, match="not written by the demo generator"):
        make_demo_dataset(tmp_path, size=0.02)


def test_demo_dataset_structure(demo_dataset, demo_dataset_size):
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))
    assert report.class_counts() == demo_class_counts(demo_dataset_size)
    images_per_exam = Counter(r.row for r in report.records)
    assert set(images_per_exam.values()) <= {2, 3, 4}
    for label in range(4):
        assert len({r.group for r in report.records if r.label == label}) >= 2
    infos = list(report.image_infos.values())
    assert {i.bits_stored for i in infos} == {12}
    assert any(i.photometric == "MONOCHROME1" for i in infos)
    assert any(i.transfer_syntax.startswith("JPEG 2000") for i in infos)
    windows = [pydicom.dcmread(r.path, stop_before_pixels=True).get("WindowCenter") for r in report.records]
    assert 0 < sum(w is not None for w in windows) < len(windows)


def test_density_class_is_visible_after_decoding(demo_dataset, tmp_path):
    """The class signal survives every decoding path (MONOCHROME1, JPEG 2000, stored window):
    the bright fraction of the breast at 64 px orders the classes."""
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))
    images = np.asarray(load_images(report.records, PreprocessCache(64, tmp_path)), dtype=np.float32)
    labels = np.array([r.label for r in report.records])
    breast = images > 0.02
    bright_fraction = ((images > 0.6) & breast).sum(axis=(1, 2)) / breast.sum(axis=(1, 2))
    means = [bright_fraction[labels == c].mean() for c in range(4)]
    assert means == sorted(means) and means[3] - means[0] > 0.4
    # separable but not trivially: a threshold halfway between class means gets most, not all
    thresholds = [(a + b) / 2 for a, b in zip(means, means[1:])]
    predicted = np.searchsorted(thresholds, bright_fraction)
    assert float((predicted == labels).mean()) > 0.75
    # ... on every decoding path alike (an inversion bug would only hurt MONOCHROME1 files)
    mono1 = np.array([report.image_infos[r.path].photometric == "MONOCHROME1" for r in report.records])
    assert mono1.sum() >= 5
    assert float((predicted[mono1] == labels[mono1]).mean()) > 0.75


def _bright_fraction(csv: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    csv, root = demo_paths(csv)
    report = scan_dataset(DatasetSpec(csv=str(csv), dicom_root=str(root)))
    images = np.asarray(load_images(report.records, PreprocessCache(64, cache)), dtype=np.float32)
    breast = images > 0.02
    bright = ((images > 0.6) & breast).sum(axis=(1, 2)) / breast.sum(axis=(1, 2))
    return bright, np.array([r.label for r in report.records])


def test_difficulty_is_deterministic_and_changes_only_the_densities(tmp_path):
    easy = make_demo_dataset(tmp_path / "easy", size=0.02, seed=7)
    default = make_demo_dataset(tmp_path / "default", size=0.02, seed=7, difficulty=0.0)
    hard = make_demo_dataset(tmp_path / "hard", size=0.02, seed=7, difficulty=1.0)
    again = make_demo_dataset(tmp_path / "again", size=0.02, seed=7, difficulty=1.0)
    other = make_demo_dataset(tmp_path / "other", size=0.02, seed=7, difficulty=0.5)
    assert tree_digest(easy.parent) == tree_digest(default.parent)
    assert tree_digest(hard.parent) == tree_digest(again.parent)
    assert tree_digest(hard.parent) != tree_digest(other.parent) != tree_digest(easy.parent)
    # the same exams, labels (class counts) and views: only what the tissue looks like differs
    assert hard.read_text() == easy.read_text()
    assert tree_digest(hard.parent).keys() == tree_digest(easy.parent).keys()


def test_difficulty_is_validated(tmp_path):
    for bad in (-0.1, float("nan")):
        with pytest.raises(DatasetError, match="difficulty"):
            make_demo_dataset(tmp_path / "bad", size=0.02, difficulty=bad)


def test_class_means_move_together_with_difficulty():
    from mammo_tui.data.demo import FIBROGLANDULAR_FRACTION, class_means

    assert class_means(0.0) == list(FIBROGLANDULAR_FRACTION)
    gaps = [np.diff(class_means(d)) for d in (0.0, 0.5, 1.0)]
    assert all((g > 0).all() for g in gaps)  # still ordered A < B < C < D
    assert (gaps[0] > gaps[1]).all() and (gaps[1] > gaps[2]).all()


@pytest.mark.slow
def test_higher_difficulty_overlaps_the_classes(tmp_path):
    """At difficulty 1 the brightness of neighbouring classes overlaps: class means closer, spread
    within a class larger, a threshold between class means gets far fewer labels right."""
    scores = {}
    for difficulty in (0.0, 1.0):
        csv = make_demo_dataset(tmp_path / f"d{difficulty}", size=0.1, seed=0, difficulty=difficulty)
        bright, labels = _bright_fraction(csv, tmp_path / "cache")
        means = np.array([bright[labels == c].mean() for c in range(4)])
        spread = np.mean([bright[labels == c].std() for c in range(4)])
        thresholds = (means[1:] + means[:-1]) / 2
        accuracy = float((np.searchsorted(thresholds, bright) == labels).mean())
        scores[difficulty] = (means, spread, accuracy)
    (easy_means, easy_spread, easy_acc), (hard_means, hard_spread, hard_acc) = scores[0.0], scores[1.0]
    assert hard_means[3] - hard_means[0] < 0.75 * (easy_means[3] - easy_means[0])
    assert hard_spread > 1.5 * easy_spread
    assert easy_acc > 0.85 and hard_acc < easy_acc - 0.25


def test_ensure_demo_dataset_caches_each_difficulty_apart(tmp_path, monkeypatch):
    from mammo_tui.prepare import ensure_demo_dataset

    monkeypatch.setenv("MAMMO_TUI_CACHE", str(tmp_path))
    easy = ensure_demo_dataset(0.02, seed=1)
    hard = ensure_demo_dataset(0.02, seed=1, difficulty=1.0)
    assert Path(easy.csv).parent.name == "demo-size0.02-seed1"  # the name it always had
    assert Path(hard.csv).parent.name == "demo-size0.02-difficulty1-seed1"
    assert tree_digest(Path(easy.csv).parent) != tree_digest(Path(hard.csv).parent)
