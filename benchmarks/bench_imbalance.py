"""Imbalance methods compared: sampler, class weights, focal, logit-adjusted, cRT, and none.

Two small, ~21:1 imbalanced 4-class datasets, each read through the real data path:
  demo    the built-in synthetic DICOM dataset (reference proportions A 40 : B 363 : C 849 : D 335)
  digits  scikit-learn's real 8x8 digits, four digits mapped to A-D in the same proportions
          (A 8 / B 72 / C 170 / D 67), written as 8-bit PNGs into A/ B/ C/ D/ class folders
Every method trains resnet18 from scratch (no weights here), whole network, same lr/epochs/size;
only the imbalance defense differs. Each seed changes the split, the init and the digits subset.
Prints mean +- std over seeds of the best checkpoint's balanced-accuracy-adjusted and quadratic
kappa, how many seeds collapsed, and the winner per dataset.

    python benchmarks/bench_imbalance.py [--seeds 5] [--epochs 6] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# method -> config changes; everything else is COMMON. focal runs WITHOUT class weights so that
# each row tests one mechanism (focal + balanced weights would be alpha-balanced focal).
METHODS: dict[str, dict] = {
    "none": {"sampler": "none", "class_weights": "none", "loss": "ce"},
    "sampler": {"sampler": "weighted", "class_weights": "none", "loss": "ce"},
    "class_weights": {"sampler": "none", "class_weights": "balanced", "loss": "ce"},
    "focal": {"sampler": "none", "class_weights": "none", "loss": "focal", "focal_gamma": 2.0},
    "logit_adjusted": {"sampler": "none", "class_weights": "none", "loss": "logit_adjusted", "la_tau": 1.0},
    "crt": {"sampler": "none", "class_weights": "none", "loss": "ce"},  # + crt_epochs = epochs // 3
}
COMMON = {
    "arch": "resnet18", "pretrained": False, "freeze": "none", "warmup_epochs": 0, "img_size": 32,
    "augment": False,  # flips/rotations change what a digit is; off for both datasets alike
    "lr": 1e-3, "batch_size": 32, "num_workers": 0, "early_stop_patience": 0, "on_collapse": "warn",
    "device": "cpu",
}
DIGITS = (1, 3, 8, 9)  # mapped to A, B, C, D
DIGIT_COUNTS = (8, 72, 170, 67)  # reference 40 : 363 : 849 : 335 scaled to ~180 per digit (21:1)


def build_demo(root: Path, size: float):
    from mammo_tui.prepare import ensure_demo_dataset

    return ensure_demo_dataset(size, seed=0, root=root / "demo")


def build_digits(root: Path, seed: int):
    from PIL import Image
    from sklearn.datasets import load_digits

    from mammo_tui.data.sources import DatasetSpec

    digits = load_digits()
    rng = np.random.default_rng(seed)
    folder = root / f"digits-seed{seed}"
    for cls, digit, count in zip("ABCD", DIGITS, DIGIT_COUNTS):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        picked = rng.choice(np.flatnonzero(digits.target == digit), size=count, replace=False)
        for i in picked:
            pixels = np.round(digits.images[i] * (255 / 16)).astype(np.uint8)
            # the data path rejects images under 16 px a side: each pixel becomes a 2x2 block
            image = Image.fromarray(pixels, mode="L").resize((16, 16), Image.NEAREST)
            image.save(folder / cls / f"digit{digit}_{i:04d}.png")
    return DatasetSpec(images=str(folder))


def run_one(spec, method: str, seed: int, epochs: int, outdir: Path) -> dict:
    from mammo_tui import config
    from mammo_tui.app import TrainRequest, train

    changes = {**COMMON, **METHODS[method], "epochs": epochs, "seed": seed}
    if method == "crt":
        changes["crt_epochs"] = max(1, round(epochs / 3))
    cfg = config.from_mapping(changes, source=f"bench {method}")
    result = train(TrainRequest(config=cfg, dataset=spec, outdir=str(outdir), run_name=f"{method}-s{seed}"))
    shutil.rmtree(result.run_dir)  # two resnet18 checkpoints (~90 MB) per run: keep the temp dir small
    best = result.summary.get("best_metrics") or {}
    return {"bal": float(best.get("balanced_accuracy_adjusted", float("nan"))),
            "kappa": float(best.get("kappa_quadratic", float("nan"))),
            "collapsed_best": result.summary.get("best_status") == "collapsed",
            "collapsed_last": result.summary.get("last_status") == "collapsed",
            "best_in_crt": (cfg.crt_epochs > 0 and (result.summary.get("best_epoch") or 0) > epochs - cfg.crt_epochs),
            "status": result.status}


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):6.3f} ± {std:5.3f}"


def print_table(results: dict[tuple[str, str], list[dict]], n_seeds: int) -> None:
    print(f"\n{'method':<15} {'dataset':<7} {'bal_acc_adj':>15} {'kappa_quadratic':>15}  collapsed best/last")
    means: dict[str, dict[str, tuple[float, float]]] = {}
    for (dataset, method), runs in results.items():
        bal, kappa = [r["bal"] for r in runs], [r["kappa"] for r in runs]
        best_c, last_c = sum(r["collapsed_best"] for r in runs), sum(r["collapsed_last"] for r in runs)
        print(f"{method:<15} {dataset:<7} {_mean_std(bal):>15} {_mean_std(kappa):>15}  "
              f"{best_c}/{n_seeds} , {last_c}/{n_seeds}")
        means.setdefault(dataset, {})[method] = (statistics.fmean(bal), statistics.fmean(kappa))
    for dataset in means:
        crt = results.get((dataset, "crt"), [])
        if crt:
            print(f"crt on {dataset}: best checkpoint from the cRT phase in {sum(r['best_in_crt'] for r in crt)}"
                  f"/{len(crt)} seeds (otherwise from the plain-CE epochs before it)")
    for dataset, by_method in means.items():
        top = max(by_method.values())
        names = " = ".join(m for m, key in by_method.items() if key == top)  # exact ties listed together
        print(f"winner on {dataset}: {names} (mean bal_acc_adj {top[0]:.3f}, kappa {top[1]:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--demo-size", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = polite on a shared box)")
    parser.add_argument("--quick", action="store_true", help="1 seed: a smoke check, not evidence")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    n_seeds = 1 if args.quick else args.seeds
    started = time.perf_counter()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-imbalance-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("MAMMO_TUI_CACHE", str(root / "cache"))
        demo = build_demo(root, args.demo_size)
        for seed in range(n_seeds):
            datasets = {"demo": demo, "digits": build_digits(root, seed)}
            for dataset, spec in datasets.items():
                for method in METHODS:
                    t0 = time.perf_counter()
                    r = run_one(spec, method, seed, args.epochs, root / "runs" / dataset)
                    results.setdefault((dataset, method), []).append(r)
                    print(f"seed {seed} {dataset:<6} {method:<15} bal_acc_adj {r['bal']:6.3f} "
                          f"kappa {r['kappa']:6.3f} {r['status']:<9} {time.perf_counter() - t0:5.1f} s",
                          flush=True)
    order = list(METHODS)
    results = dict(sorted(results.items(), key=lambda item: (item[0][0], order.index(item[0][1]))))
    print(f"\nresnet18 from scratch, {COMMON['img_size']} px, {args.epochs} epochs, lr {COMMON['lr']:g}, "
          f"{n_seeds} seed(s); demo size {args.demo_size:g}; digits {DIGITS} as A-D, counts {DIGIT_COUNTS}")
    print_table(results, n_seeds)
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
