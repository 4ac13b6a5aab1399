"""PreprocessCache: reuse without decoding, invalidation, atomic entries; load_images."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mammo_tui.data.cache import PreprocessCache, default_cache_root, load_images
from mammo_tui.data.images import read_image, resize_pad
from mammo_tui.data.records import ImageRecord
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.errors import DatasetError


@pytest.fixture(scope="module")
def demo_records(demo_dataset):
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))
    return report.records[:12]


def test_second_load_performs_no_decode(tmp_path, demo_records):
    cold = PreprocessCache(32, tmp_path)
    first = load_images(demo_records, cold)
    assert (cold.decodes, cold.hits) == (len(demo_records), 0)
    warm = PreprocessCache(32, tmp_path)  # a new run sharing the cache
    second = load_images(demo_records, warm)
    assert (warm.decodes, warm.hits) == (0, len(demo_records))
    assert first.dtype == np.float16 and first.shape == (len(demo_records), 32, 32)
    np.testing.assert_array_equal(first, second)


def test_cached_image_matches_a_fresh_decode(tmp_path, demo_records):
    cache = PreprocessCache(48, tmp_path)
    path = demo_records[0].path
    expected = resize_pad(read_image(path), 48)
    cold, warm = cache.load(path), cache.load(path)
    assert cold.dtype == np.float32 and cold.shape == (48, 48)
    np.testing.assert_allclose(cold, expected, atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(cold, warm)
    assert (cache.decodes, cache.hits) == (1, 1)


def test_changing_img_size_invalidates(tmp_path, demo_records):
    load_images(demo_records[:3], PreprocessCache(32, tmp_path))
    other_size = PreprocessCache(40, tmp_path)
    images = load_images(demo_records[:3], other_size)
    assert other_size.decodes == 3 and other_size.hits == 0
    assert images.shape == (3, 40, 40)


def test_changed_file_content_is_decoded_again(tmp_path, make_dicom):
    picture = np.full((32, 32), 100, dtype=np.uint16)
    picture[8:24, 8:24] = 3000
    path = make_dicom(tmp_path / "img" / "a.dcm", picture)
    cache = PreprocessCache(16, tmp_path / "cache")
    before = cache.load(path)
    picture[8:24, 8:16] = 100
    make_dicom(path, picture)
    os.utime(path, ns=(1, 1))  # even with an odd mtime, size+mtime changed -> rehash
    after = cache.load(path)
    assert cache.decodes == 2
    assert not np.array_equal(before, after)


def test_entries_are_float16_npy_without_leftover_temporaries(tmp_path, demo_records):
    cache = PreprocessCache(24, tmp_path)
    load_images(demo_records[:4], cache, workers=1)
    entries = sorted((tmp_path / "images").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert len(files) == 4 and all(p.suffix == ".npy" for p in files)
    assert np.load(files[0]).dtype == np.float16
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_concurrent_writers_of_the_same_entries_agree(tmp_path, demo_records):
    # the same files many times over, loaded by several threads at once: racing atomic writes
    records = list(demo_records[:3]) * 8
    cache = PreprocessCache(32, tmp_path)
    images = load_images(records, cache, workers=4)
    for index in range(3):
        for repeat in range(1, 8):
            np.testing.assert_array_equal(images[index], images[index + 3 * repeat])
    assert cache.decodes + cache.hits == len(records)
    assert PreprocessCache(32, tmp_path).load(records[0].path).shape == (32, 32)


def test_progress_and_order(tmp_path, demo_records):
    calls = []
    cache = PreprocessCache(16, tmp_path)
    images = load_images(demo_records[:5], cache, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5) and len(calls) == 6
    for index in range(5):
        np.testing.assert_array_equal(images[index], cache.load(demo_records[index].path).astype(np.float16))


def test_undecodable_file_raises_dataset_error_naming_it(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM but not really" * 20)
    with pytest.raises(DatasetError) as caught:
        load_images([ImageRecord(str(bad), 0, "g", 2)], PreprocessCache(16, tmp_path / "cache"))
    assert str(bad) in str(caught.value)


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMMO_TUI_CACHE", str(tmp_path / "here"))
    assert default_cache_root() == tmp_path / "here"
    assert PreprocessCache(16).root == tmp_path / "here"
    monkeypatch.delenv("MAMMO_TUI_CACHE")
    assert default_cache_root() == default_cache_root().home() / ".cache" / "mammo-tui"


def test_unwritable_cache_still_loads_and_warns(tmp_path, demo_records):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    cache = PreprocessCache(16, blocker)
    images = load_images(demo_records[:2], cache, workers=1)
    assert images.shape == (2, 16, 16)
    assert cache.decodes == 2 and cache.warnings and "MAMMO_TUI_CACHE" in cache.warnings[0]


# -- the content-hash memo and the decode check --------------------------------------------------


def replace_keeping_size_and_mtime(path, data: bytes) -> None:
    """Overwrite a file in place with other bytes of the same size, then restore its mtime."""
    import time

    before = os.stat(path)
    assert len(data) == before.st_size
    time.sleep(0.05)  # past the file system's timestamp granularity: the write gets a new ctime
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_same_size_replacement_with_restored_mtime_is_hashed_again(tmp_path, make_dicom):
    from mammo_tui.data import cache as cache_module

    picture = np.full((32, 32), 100, dtype=np.uint16)
    picture[8:24, 8:24] = 3000
    path = make_dicom(tmp_path / "img" / "a.dcm", picture)
    # the same header (generate_uid's UIDs vary in length, so two make_dicom files could differ in
    # size by a few bytes: the test then failed now and then), other pixels
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelData = (4000 - picture).astype(np.uint16).tobytes()
    other = tmp_path / "img" / "b.dcm"
    ds.save_as(other)
    cache = PreprocessCache(16, tmp_path / "cache")
    first_hash, before = cache.content_hash(str(path)), cache.load(path)
    replace_keeping_size_and_mtime(path, other.read_bytes())
    assert cache.content_hash(str(path)) != first_hash
    assert not np.array_equal(cache.load(path), before), "the old cache entry was served"
    cache_module._hash_memo.clear()  # a new process: only the on-disk index is left
    assert cache.content_hash(str(path)) == cache_module.content_hash(other, tmp_path / "cache")


def test_decode_check_decodes_once_per_content_and_decoder_version(tmp_path, make_dicom, monkeypatch):
    from mammo_tui.data import cache as cache_module

    path = str(make_dicom(tmp_path / "a.dcm", np.full((32, 32), 900, dtype=np.uint16)))
    decoded = []
    real = cache_module.read_image
    monkeypatch.setattr(cache_module, "read_image", lambda p: decoded.append(p) or real(p))
    digest = cache_module.content_hash(path, tmp_path / "cache")
    for _ in range(2):
        cache_module.check_decodes(path, digest, tmp_path / "cache")
    assert decoded == [path]  # the second check (another process too: it is on disk) decodes nothing
    monkeypatch.setattr(cache_module, "DECODER_VERSION", cache_module.DECODER_VERSION + "|newer")
    cache_module.check_decodes(path, digest, tmp_path / "cache")
    assert decoded == [path, path]


def test_decode_check_raises_and_remembers_nothing_for_a_bad_image(tmp_path, make_dicom):
    from mammo_tui.data.cache import check_decodes, content_hash
    from mammo_tui.data.records import ImageReadError

    path = str(make_dicom(tmp_path / "nan.dcm", np.full((32, 32), 900, dtype=np.uint16), RescaleSlope="nan"))
    for _ in range(2):
        with pytest.raises(ImageReadError) as caught:
            check_decodes(path, content_hash(path, tmp_path / "cache"), tmp_path / "cache")
        assert caught.value.kind == "not_finite" and path in caught.value.message


def test_file_that_turned_bad_after_the_scan_stops_training_naming_it(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "nan.dcm", np.full((32, 32), 900, dtype=np.uint16), RescaleIntercept="inf")
    with pytest.raises(DatasetError) as caught:
        load_images([ImageRecord(str(path), 0, "g", 2)], PreprocessCache(16, tmp_path / "cache"))
    assert str(path) in str(caught.value) and "not_finite" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_cache_entry_with_nan_is_rebuilt(tmp_path, demo_records):
    cache = PreprocessCache(16, tmp_path)
    good = cache.load(demo_records[0].path)
    entry = cache.entry_path(demo_records[0].path)
    broken = good.astype(np.float16)
    broken[0, 0] = np.nan
    np.save(entry, broken)
    np.testing.assert_array_equal(cache.load(demo_records[0].path), good)
    assert cache.decodes == 2
