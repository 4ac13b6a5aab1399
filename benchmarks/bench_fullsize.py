"""Full-field-size DICOMs: cold preprocessing throughput of the engine vs a bare parallel decode,
warm load time, peak RSS, and the memory two processes mapping the dataset file take.

    python benchmarks/bench_fullsize.py [--n 120] [--workers N] [--size 512] [--data DIR]

The DICOM set (3328x2560 and 2294x1914, 12 bits stored; a third each JPEG 2000 lossless, RLE
lossless and uncompressed; every fourth MONOCHROME1) is written once into --data and reused.
Both sides use the same number of spawned worker processes and decode each file once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = ((3328, 2560), (2294, 1914))


def _syntaxes():
    from pydicom.pixels import get_encoder
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    usable = [uid for uid in (JPEG2000Lossless, RLELossless) if get_encoder(uid).is_available]
    return [*usable, ExplicitVRLittleEndian]


def _phantom(shape, seed: int) -> np.ndarray:
    """A breast-like 12-bit image: a half-ellipse of tissue with texture on a dark background."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - h / 2) / (h * 0.45)) ** 2 + (xx / (w * 0.7)) ** 2 < 1
    tissue = 1500 + 1500 * np.sin(xx / 37 + seed) * np.cos(yy / 53) + rng.normal(0, 200, shape)
    return np.where(inside, np.clip(tissue, 0, 4095), 40).astype(np.uint16)


def _write_one(args) -> str:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    index, path, syntax = args
    if Path(path).is_file():
        return path
    pixels = _phantom(SHAPES[index % 2], index)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.ImageLaterality = f"P{index // 4}", "MG", "LR"[index % 2]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    monochrome1 = index % 4 == 3
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.PixelData = (4095 - pixels if monochrome1 else pixels).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    tmp = f"{path}.tmp"
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path


def write_dataset(folder: Path, n: int, workers: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    syntaxes = _syntaxes()
    jobs = [(i, str(folder / f"img{i:05d}-{syntaxes[i % len(syntaxes)].keyword}.dcm"),
             syntaxes[i % len(syntaxes)]) for i in range(n)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_write_one, jobs))


def _bare_one(path: str, size: int) -> np.ndarray:
    """What a hand-written loop does: decode, resize the longer side to size (no windowing)."""
    import cv2
    import pydicom

    pixels = pydicom.dcmread(path).pixel_array
    scale = size / max(pixels.shape)
    return cv2.resize(pixels.astype(np.float32), (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


def bare(paths: list[str], size: int, workers: int) -> float:
    from functools import partial

    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(partial(_bare_one, size=size), paths):
            pass
    return time.perf_counter() - start


def _pss_kb() -> dict[str, int]:
    fields = {}
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                fields[parts[0][:-1]] = int(parts[1])
    return fields


def _map_and_touch(path: str, barrier, results) -> None:
    """One 'rank': map the dataset file and read every image (as an epoch does), then measure once
    every rank has read it all, so each sees the pages it shares with the others."""
    from mammo_tui.data.cache import MappedImages

    before = _pss_kb()
    images = MappedImages(path)
    total = sum(float(images[i].sum()) for i in range(len(images)))
    barrier.wait()
    after = _pss_kb()
    barrier.wait()  # nobody unmaps before the last one has measured
    results.put({k: after[k] - before[k] for k in after} | {"checksum": int(total)})


def shared_footprint(path: str, processes: int) -> dict[str, int]:
    """Pss and Rss growth (kB) summed over `processes` processes mapping the same file at once."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    ranks = [ctx.Process(target=_map_and_touch, args=(path, barrier, results)) for _ in range(processes)]
    for rank in ranks:
        rank.start()
    measured = [results.get(timeout=600) for _ in ranks]
    for rank in ranks:
        rank.join()
    return {k: sum(r[k] for r in measured) for k in ("Rss", "Pss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120, help="images (default 120)")
    parser.add_argument("--workers", type=int, default=-1, help="processes (default: all cores but one, >= 2)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "mammo-bench-fullsize"))
    args = parser.parse_args()

    from mammo_tui.data.cache import PreprocessCache, load_images, resolve_workers
    from mammo_tui.data.records import ImageRecord

    workers = args.workers if args.workers > 0 else max(2, resolve_workers(-1))
    t0 = time.perf_counter()
    paths = write_dataset(Path(args.data), args.n, workers)
    kinds = sorted({Path(p).stem.split("-", 1)[1] for p in paths})
    print(f"{len(paths)} DICOMs {' / '.join(f'{h}x{w}' for h, w in SHAPES)}, 12 bits, {', '.join(kinds)}, "
          f"every 4th MONOCHROME1 in {args.data} ({time.perf_counter() - t0:.1f} s to write or find)")
    records = [ImageRecord(p, i % 4, f"g{i}", i + 1) for i, p in enumerate(paths)]

    with tempfile.TemporaryDirectory() as root:
        bare(paths[: workers * 2], args.size, workers)  # page cache warm for both sides alike
        bare_s = bare(paths, args.size, workers)
        cache = PreprocessCache(args.size, root, crop_breast=False)
        start = time.perf_counter()
        images = load_images(records, cache, workers=workers)
        engine_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = load_images(records, PreprocessCache(args.size, root, crop_breast=False), workers=workers)
        warm_s = time.perf_counter() - start
        assert np.array_equal(np.asarray(images), np.asarray(warm))
        mapped, n_images = images.path, len(warm)
        del images, warm  # only the measured processes map the file, or Pss would be split with us
        one = shared_footprint(mapped, 1)
        two = shared_footprint(mapped, 2)
        dataset_kb = os.path.getsize(mapped) // 1024

    n = len(paths)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"workers: {workers} processes, img_size {args.size}")
    print(f"cold  bare pydicom+cv2.resize : {n / bare_s:6.2f} img/s ({bare_s:.1f} s)")
    print(f"cold  engine (load_images)    : {n / engine_s:6.2f} img/s ({engine_s:.1f} s)  "
          f"ratio {bare_s / engine_s:.2f} of bare (target >= 0.8)")
    print(f"warm  engine (mapped file)    : {warm_s:.2f} s for {n} images")
    print(f"peak RSS: main process {self_mb:.0f} MB, largest child process {child_mb:.0f} MB (any: writer, bare or engine) "
          f"(one {SHAPES[0][0]}x{SHAPES[0][1]} uint16 image = {SHAPES[0][0] * SHAPES[0][1] * 2 / 2**20:.0f} MB)")
    print(f"dataset file {dataset_kb / 1024:.1f} MB; mapped and read by 1 process: Pss {one['Pss'] / 1024:.1f} MB; "
          f"by 2 processes at once: Pss sum {two['Pss'] / 1024:.1f} MB ({two['Pss'] / max(one['Pss'], 1):.2f}x; "
          f"Rss sum {two['Rss'] / 1024:.1f} MB)")


if __name__ == "__main__":
    main()
