"""Breast crop + canonical flip (crop_breast): how much of the network input is tissue, and the demo.

1. Tissue share of the input. Full-field-size synthetic mammograms (the demo generator's
   synth_mammogram at 3328x2560, left and right breasts, a bright marker blob in the background
   of every other one) go through resize_pad with and without crop_and_flip; the share of the
   img_size x img_size input above the source image's tissue threshold is compared (median over
   the images). Same img_size, so every extra tissue pixel is extra resolution on the breast.
2. The demo before/after: `mammo-tui train --no-ui --demo --seed S --set crop_breast=false|true`
   (the demo preset: resnet18 at 64 px, from scratch here) for a few seeds, and the best
   checkpoint's quadratic kappa and balanced-accuracy-adjusted of each, to show the crop does not
   cost accuracy.

    python benchmarks/bench_crop.py [--images 12] [--sizes 224 512] [--seeds 0 1] [--epochs 8] [--skip-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mammo_tui.data.breast import crop_and_flip, tissue_fraction
from mammo_tui.data.demo import synth_mammogram
from mammo_tui.data.dicom import tissue_threshold
from mammo_tui.data.images import resize_pad

FULL_FIELD = (3328, 2560)  # rows, columns of a common FFDM detector


def full_field_images(count: int, seed: int = 0):
    """(image, is_right) pairs: demo-style breasts at detector size, markers on every other one."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        right = bool(index % 2)
        image = synth_mammogram(rng, FULL_FIELD, float(rng.uniform(0.1, 0.8)), chest_wall_left=not right)
        if index % 4 < 2:  # a lead marker / label in the far background corner
            columns = slice(150, 350) if right else slice(FULL_FIELD[1] - 350, FULL_FIELD[1] - 150)
            image[150:350, columns] = 1.0
        yield image, right


def tissue_table(count: int, sizes: list[int]) -> None:
    rows = {size: ([], []) for size in sizes}
    crop_seconds = []
    for image, _ in full_field_images(count):
        threshold = tissue_threshold(image)  # the source's: both inputs judged alike
        started = time.perf_counter()
        cropped = crop_and_flip(image)
        crop_seconds.append(time.perf_counter() - started)
        for size in sizes:
            rows[size][0].append(tissue_fraction(resize_pad(image, size), threshold))
            rows[size][1].append(tissue_fraction(resize_pad(cropped, size), threshold))
    print(f"tissue share of the input, median over {count} synthetic {FULL_FIELD[0]}x{FULL_FIELD[1]} "
          f"mammograms (half right breasts, half with a background marker):")
    print(f"  {'img_size':>8}  {'no crop':>8}  {'crop':>8}  {'tissue px gained':>16}")
    for size, (plain, cropped) in rows.items():
        before, after = statistics.median(plain), statistics.median(cropped)
        print(f"  {size:>8}  {before:>8.1%}  {after:>8.1%}  {after / before:>15.2f}x")
    print(f"  crop_and_flip time per full-field image: median {statistics.median(crop_seconds) * 1000:.0f} ms")


def train_demo(seed: int, crop: bool, epochs: int, outdir: Path) -> dict:
    name = f"crop{int(crop)}-seed{seed}"
    command = [sys.executable, "-m", "mammo_tui", "train", "--no-ui", "--demo", "--seed", str(seed),
               "--epochs", str(epochs), "--set", f"crop_breast={str(crop).lower()}", "--outdir", str(outdir),
               "--run-name", name]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((outdir / name / "summary.json").read_text())
    return summary["best_metrics"]


def demo_table(seeds: list[int], epochs: int) -> None:
    print(f"\ndemo (mammo-tui train --no-ui --demo --epochs {epochs} --seed S --set crop_breast=...), "
          "best checkpoint:")
    print(f"  {'crop_breast':>11}  {'seed':>4}  {'kappa':>6}  {'bal-acc-adj':>11}")
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for crop in (False, True):
                m = train_demo(seed, crop, epochs, Path(tmp))
                pair = (m["kappa_quadratic"], m["balanced_accuracy_adjusted"])
                results[crop].append(pair)
                print(f"  {str(crop).lower():>11}  {seed:>4}  {pair[0]:>6.3f}  {pair[1]:>11.3f}", flush=True)
    for crop, pairs in results.items():
        kappas, adjs = zip(*pairs)
        print(f"  {str(crop).lower():>11}  mean  {statistics.mean(kappas):>6.3f}  {statistics.mean(adjs):>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    tissue_table(args.images, args.sizes)
    if not args.skip_demo:
        demo_table(args.seeds, args.epochs)


if __name__ == "__main__":
    main()
