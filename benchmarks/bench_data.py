"""Images/s: decoding every time (read_image + resize_pad) vs loading from a warm PreprocessCache.

    python benchmarks/bench_data.py [--size 0.5] [--img-size 224] [--repeats 5]

Generates the demo dataset (default size) in a temporary folder, warms a cache there, then times
each path over the same files `--repeats` times and prints the medians and their ratio. The cached
path is `load_images` (what the engine calls) with a fresh PreprocessCache on the warm folder, as a
second run would see it. Both paths run single-threaded, so the ratio compares work, not parallelism.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mammo_tui.data.cache import PreprocessCache, load_images
from mammo_tui.data.demo import demo_paths, make_demo_dataset
from mammo_tui.data.images import read_image, resize_pad
from mammo_tui.data.sources import DatasetSpec, scan_dataset


def images_per_second(paths: list[str], load) -> float:
    start = time.perf_counter()
    for path in paths:
        load(path)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=0.5, help="demo dataset size (1.0 = 1587 images)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mammo-bench-") as tmp:
        start = time.perf_counter()
        csv_path, dicom_root = demo_paths(make_demo_dataset(Path(tmp) / "demo", size=args.size))
        print(f"demo dataset: {time.perf_counter() - start:.1f} s to generate")
        start = time.perf_counter()
        report = scan_dataset(DatasetSpec(csv=str(csv_path), dicom_root=str(dicom_root)))
        paths = [record.path for record in report.records]
        print(f"scan (header check): {len(paths) / (time.perf_counter() - start):.0f} images/s, {len(paths)} images")

        cache = PreprocessCache(args.img_size, Path(tmp) / "cache")
        start = time.perf_counter()
        for path in paths:
            cache.load(path)
        print(f"cold cache fill: {len(paths) / (time.perf_counter() - start):.0f} images/s "
              f"(decodes={cache.decodes})")

        decode = [images_per_second(paths, lambda p: resize_pad(read_image(p), args.img_size))
                  for _ in range(args.repeats)]
        # the engine's path: load_images over a cache that an earlier run filled
        warm_cache = PreprocessCache(args.img_size, Path(tmp) / "cache")
        cached = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_images(report.records, warm_cache)
            cached.append(len(paths) / (time.perf_counter() - start))
        assert warm_cache.decodes == 0, "the warm cache decoded images"

    decode_median, cached_median = statistics.median(decode), statistics.median(cached)
    print(f"decode every time: median {decode_median:.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in decode)})")
    print(f"warm cache:        median {cached_median:.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in cached)})")
    print(f"cached/decode = {cached_median / decode_median:.1f}x  ({len(paths)} images at {args.img_size} px, "
          f"{args.repeats} runs each; hits={warm_cache.hits})")


if __name__ == "__main__":
    main()
