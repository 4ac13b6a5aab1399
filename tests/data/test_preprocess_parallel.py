"""Parallel preprocessing, progress, and the shared memory-mapped dataset file (tiny images)."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from mammo_tui.console import ConsolePrinter
from mammo_tui.data.cache import (MEMORY_BUDGET_ENV, MappedImages, PreprocessCache, StreamedImages,
                                  load_images)
from mammo_tui.data.dataset import ImageDataset, Rows
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.preprocessing import Preprocessing
from mammo_tui.events import ProgressMeter


@pytest.fixture(scope="module")
def records(demo_dataset):
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)),
                          workers=1)
    return report.records[:8]


def test_worker_processes_give_the_serial_pixels(records, tmp_path):
    serial = load_images(records, PreprocessCache(32, tmp_path / "serial"), workers=1)
    parallel_cache = PreprocessCache(32, tmp_path / "parallel")
    parallel = load_images(records, parallel_cache, workers=2)  # two spawned processes decode
    assert parallel_cache.decodes == len(records)
    np.testing.assert_array_equal(np.asarray(serial), np.asarray(parallel))
    assert np.asarray(parallel).dtype == np.float16 and np.asarray(parallel).std() > 0


def test_scan_with_the_size_known_decodes_each_image_once(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_TUI_CACHE", str(tmp_path))
    spec = DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))
    report = scan_dataset(spec, workers=2, preprocessing=Preprocessing(40, crop_breast=False))
    cache = PreprocessCache(40, tmp_path)
    images = load_images(report.records[:6], cache, workers=1)
    assert cache.decodes == 0 and cache.hits == 6  # the scan's decode stored the entries
    expected = load_images(report.records[:6], PreprocessCache(40, tmp_path / "fresh"), workers=1)
    np.testing.assert_array_equal(np.asarray(images), np.asarray(expected))


def test_progress_counts_every_image_and_the_console_prints_count_rate_and_eta(records, tmp_path):
    events = []
    load_images(records, PreprocessCache(24, tmp_path), ProgressMeter("preprocessing images", events.append))
    assert (events[0].done, events[-1].done) == (0, len(records))
    assert all(e.total == len(records) for e in events)
    plain = io.StringIO()
    for event in events:
        ConsolePrinter(plain, tty=False)(event)
    lines = plain.getvalue().splitlines()
    assert lines[0] == f"preprocessing images 0/{len(records)} (0%)"
    assert lines[-1].startswith(f"preprocessing images {len(records)}/{len(records)} (100%)")
    assert "img/s ETA" in lines[-1] and "\r" not in plain.getvalue()
    terminal = io.StringIO()
    printer = ConsolePrinter(terminal, tty=True)
    for event in events:
        printer(event)
    assert terminal.getvalue().count("\r\x1b[2K") >= 2  # one line redrawn in place


def test_the_mapped_file_is_reused_and_shared_and_a_new_size_builds_another(records, tmp_path):
    first = load_images(records, PreprocessCache(32, tmp_path))
    assert isinstance(first, MappedImages)
    built = os.stat(first.path)
    again_cache = PreprocessCache(32, tmp_path)
    again = load_images(records, again_cache)
    after = os.stat(again.path)
    assert again.path == first.path and (after.st_ino, after.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    assert again_cache.decodes == 0
    # a worker or another rank receives the path, not the pixels, and maps the same file
    clone = pickle.loads(pickle.dumps(again))
    assert len(pickle.dumps(again)) < 1000 and isinstance(clone.array, np.memmap)
    np.testing.assert_array_equal(clone[3], first[3])
    other = load_images(records, PreprocessCache(40, tmp_path))
    assert other.path != first.path and other.shape == (len(records), 40, 40)
    subset = Rows(first, [5, 1])
    np.testing.assert_array_equal(subset[0], first[5])


@pytest.mark.slow
def test_over_the_memory_budget_images_stream_from_the_cache_and_train(tiny_demo, tmp_path, monkeypatch):
    from test_engine import run

    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1K")
    cache = PreprocessCache(32, tmp_path / "cache")
    records = scan_dataset(tiny_demo, workers=1).records[:6]
    streamed = load_images(records, cache, workers=1)
    assert isinstance(streamed, StreamedImages) and "streamed" in cache.warnings[0]
    assert not (tmp_path / "cache" / "datasets").exists()
    np.testing.assert_array_equal(np.asarray(streamed),
                                  np.asarray(load_images(records, PreprocessCache(32, tmp_path / "b"), budget=1 << 40)))
    x, _ = ImageDataset(Rows(streamed, [2]), [0], augment=False)[0]
    assert x.shape == (1, 32, 32)
    result, events = run(tiny_demo, tmp_path, epochs=1, max_batches_per_epoch=2)
    assert result.exit_code in (0, 3)  # it trained to the end (one tiny epoch may end collapsed)
    assert any(e.type == "log" and "streamed from the on-disk cache" in e.message for e in events)


@pytest.mark.parametrize("value", ["abc", "0x10", "nan", "-5", "0", "inf", "12Q"])
def test_a_memory_budget_that_is_not_a_size_is_refused_by_name(monkeypatch, value):
    """It used to fall back to half the RAM without a word ("-5" became "-0.0 MB")."""
    from mammo_tui.data.cache import memory_budget
    from mammo_tui.errors import ConfigError

    monkeypatch.setenv(MEMORY_BUDGET_ENV, value)
    with pytest.raises(ConfigError, match=MEMORY_BUDGET_ENV):
        memory_budget()
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1.5G")
    assert memory_budget() == int(1.5 * (1 << 30))
