"""Frozen-feature cache: epoch time when the backbone is frozen and augmentation is off.

A: backbone features computed once, epochs train the linear head on them (frozen_feature_cache).
B: the same run recomputing the frozen backbone for every batch of every epoch.
Same data, seed and config otherwise; prints median epoch times, the ratio B/A from this one run
(target >= 10x, resnet18 at 128 px on CPU), and the largest metric difference (should be ~0).

    python benchmarks/bench_frozen.py [--size 0.25] [--img-size 128] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mammo_tui import config
from mammo_tui.app import TrainRequest, train
from mammo_tui.events import EpochMetrics
from mammo_tui.prepare import ensure_demo_dataset


def run(spec, outdir: Path, cached: bool, args) -> tuple[list[float], list[dict], float]:
    cfg = config.resolve("head_only", {
        "arch": "resnet18", "pretrained": False, "img_size": args.img_size, "epochs": args.epochs,
        "augment": False, "batch_size": 32, "num_workers": 0, "early_stop_patience": 0,
        "frozen_feature_cache": cached, "lr": 1e-3})
    epochs: list = []
    t0 = time.perf_counter()
    train(TrainRequest(config=cfg, dataset=spec, outdir=str(outdir), run_name=f"cached-{cached}"),
          lambda e: epochs.append(e) if isinstance(e, EpochMetrics) else None)
    total = time.perf_counter() - t0
    return [e.epoch_time_s for e in epochs], [e.metrics for e in epochs], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=0.25)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = ensure_demo_dataset(args.size, root=Path(tmp) / "demo")
        # warm the preprocessed-image cache so neither side pays for DICOM decoding
        run(spec, Path(tmp) / "warm", True, argparse.Namespace(**{**vars(args), "epochs": 1}))
        a_times, a_metrics, a_total = run(spec, Path(tmp) / "runs", True, args)
        b_times, b_metrics, b_total = run(spec, Path(tmp) / "runs", False, args)
    a, b = statistics.median(a_times), statistics.median(b_times)
    diff = max(abs(x[k] - y[k]) for x, y in zip(a_metrics, b_metrics)
               for k in ("kappa_quadratic", "balanced_accuracy_adjusted", "accuracy"))
    print(f"resnet18 head-only, {args.img_size} px, {args.epochs} epochs, demo size {args.size}")
    print(f"  feature cache     : median epoch {a * 1000:8.1f} ms   (whole run incl. features {a_total:.1f} s)")
    print(f"  recompute backbone: median epoch {b * 1000:8.1f} ms   (whole run {b_total:.1f} s)")
    print(f"  epoch speed-up    : {b / a:.1f}x   whole-run speed-up: {b_total / a_total:.1f}x")
    print(f"  max metric difference between the two: {diff:.2e}")


if __name__ == "__main__":
    main()
