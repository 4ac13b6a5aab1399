"""What the dashboard costs the training loop: images/s with the Textual app attached vs headless.

Both modes run the same engine, config and data; the engine writes events.jsonl in both (the log
writer is part of every run), so the difference is the dashboard alone: post_message per event,
state folding, and repaints on the UI thread competing with the training thread.

Throughput is the engine's own figure (EpochMetrics.images_per_s: training images / training time
per epoch, validation excluded). A warm-up run fills the preprocess cache and the allocator first;
then the modes alternate for --rounds rounds. On a shared machine wall-clock rates swing with the
neighbours' load, so the report gives the median and the best (least disturbed) round of each
mode, and the process CPU time per training image, which the neighbours barely move.

OpenMP: with the default (active, spinning) wait policy, a loaded machine makes train() in the
main thread up to 3x slower than the same train() in a worker thread (measured here: 15-20 vs
45-55 img/s at load 7 on 2 cores), which would credit the dashboard with a speed-up it does not
cause. Both modes therefore run with OMP_WAIT_POLICY=PASSIVE (set before torch loads; change with
--omp-wait-policy, "" = leave the environment alone).

    python benchmarks/bench_ui_overhead.py                 # CPU-sized defaults
    python benchmarks/bench_ui_overhead.py --img-size 128 --epochs 3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.97


def build_config(args):
    from mammo_tui.config import TrainConfig

    return TrainConfig(arch=args.arch, pretrained=False, freeze="none", warmup_epochs=0,
                       img_size=args.img_size, batch_size=args.batch_size, epochs=args.epochs,
                       max_batches_per_epoch=args.max_batches, num_workers=0, device=args.device,
                       augment=False, early_stop_patience=0, seed=0)


def throughput(epochs) -> float:
    """Median training images/s over the epochs (the first is skipped when there are more)."""
    rates = [e.images_per_s for e in epochs]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def timed(run):
    """(images/s, process CPU seconds, epochs) of one run; the CPU time covers every thread."""
    cpu0 = time.process_time()
    epochs = run()
    cpu = time.process_time() - cpu0
    steps = sum(1 for _ in epochs)
    return throughput(epochs), cpu, steps


def run_headless(config, spec, outdir: Path, name: str):
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.events import EpochMetrics

    epochs = []
    train(TrainRequest(config=config, dataset=spec, outdir=str(outdir), run_name=name),
          lambda e: epochs.append(e) if isinstance(e, EpochMetrics) else None)
    return epochs


def run_with_dashboard(config, spec, outdir: Path, name: str, size=(120, 40)):
    from mammo_tui.app import TrainRequest
    from mammo_tui.tui.app import MammoApp

    app = MammoApp(job=TrainRequest(config=config, dataset=spec, outdir=str(outdir), run_name=name))

    async def drive() -> float:
        async with app.run_test(size=size) as pilot:
            while not app.dashboards():
                await pilot.pause(0.05)
            dash = app.dashboards()[0]
            while not (dash.state.done and not dash.engine_running):
                await asyncio.sleep(0.05)
            return list(dash.state.epochs)

    return asyncio.run(drive())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-batches", type=int, default=8, help="per epoch; 0 = every batch")
    parser.add_argument("--demo-size", type=float, default=0.25, help="demo dataset scale")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--omp-wait-policy", default="PASSIVE")
    args = parser.parse_args(argv)
    if args.omp_wait_policy:
        if "torch" in sys.modules:
            raise SystemExit("OMP_WAIT_POLICY must be set before torch is imported")
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("MAMMO_TUI_CACHE", str(tmp / "cache"))
        from mammo_tui.prepare import ensure_demo_dataset

        spec = ensure_demo_dataset(args.demo_size)
        config = build_config(args)
        print(f"config: {args.arch} {args.img_size}px batch {args.batch_size}, {args.epochs} epochs, "
              f"demo size {args.demo_size}, device {args.device}, torch threads "
              f"{__import__('torch').get_num_threads()}, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)
        t0 = time.perf_counter()
        run_headless(config.replace(epochs=1), spec, tmp / "runs", "warmup")
        print(f"warm-up: {time.perf_counter() - t0:.1f} s", flush=True)
        results = {"headless": [], "dashboard": []}
        runners = {"headless": run_headless, "dashboard": run_with_dashboard}
        for round_ in range(args.rounds):
            # Alternate which mode goes first so a drifting background load hits both alike.
            order = ("headless", "dashboard") if round_ % 2 == 0 else ("dashboard", "headless")
            for mode in order:
                rate, cpu, _ = timed(lambda: runners[mode](config, spec, tmp / "runs", f"{mode}-{round_}"))
                results[mode].append((rate, cpu))
            print(f"round {round_ + 1}: headless {results['headless'][-1][0]:.1f} img/s "
                  f"({results['headless'][-1][1]:.1f} s CPU), dashboard "
                  f"{results['dashboard'][-1][0]:.1f} img/s ({results['dashboard'][-1][1]:.1f} s CPU)",
                  flush=True)
    summary = {}
    for mode, rows in results.items():
        rates = [r for r, _ in rows]
        cpus = [c for _, c in rows]
        summary[mode] = (statistics.median(rates), max(rates), statistics.median(cpus))
        print(f"{mode:<9} median {summary[mode][0]:7.1f} img/s  best {summary[mode][1]:7.1f} img/s  "
              f"CPU {summary[mode][2]:6.1f} s per run")
    median_ratio = summary["dashboard"][0] / summary["headless"][0]
    best_ratio = summary["dashboard"][1] / summary["headless"][1]
    cpu_ratio = summary["headless"][2] / summary["dashboard"][2]
    verdict = "ok" if best_ratio >= TARGET else "BELOW TARGET"
    print(f"ratio dashboard/headless: median {median_ratio:.3f}, best {best_ratio:.3f} "
          f"(target >= {TARGET}: {verdict}); CPU-time ratio headless/dashboard {cpu_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
