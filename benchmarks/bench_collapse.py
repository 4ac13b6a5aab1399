"""Prove it: naive training collapses on a hard, imbalanced task; the defenses and the plan do not.

The reference: full fine-tuning without balancing on ~1.3k mammograms (A 40 : B 363 : C 849 : D 335)
predicted one class (accuracy 1.6 %, kappa 0.00); frozen + last block + weighted sampler reached
kappa 0.57. This benchmark rebuilds that situation on synthetic data and measures every defense:

  dataset   the demo generator at `--difficulty` (default 1: class means closer together, more
            patient jitter, readers disagreeing at the boundaries, B/C most; see
            mammo_tui/data/demo.py), reference proportions scaled by `--size`, DICOM read through
            the real data path; the seed changes the patient-grouped split and the initialisation
  weights   a STAND-IN for ImageNet weights, which cannot be downloaded here: a resnet18
            pretrained on a separate, balanced synthetic source task (8 tissue-fraction bins drawn
            from their own random stream; see benchmarks/pretrain_standin.py), passed with
            `--weights` like a user's local weights file; a linear probe checks that its features
            beat a random backbone on the target task
  arms      naive = full fine-tuning (freeze none), no sampler, no class weights, plain CE, lr 1e-3,
            no warmup; each defense alone on top of it; the plan's choice (`mammo-tui train` without
            `--preset`), with and without `--on-collapse recover`; naive with recover
Every arm: resnet18, the same image size, epochs, batch size, validation share and stand-in weights,
all epochs run (early stopping off), on the CPU. Reported per arm, mean +- std over seeds: share
of runs that end collapsed (the best checkpoint's epoch, and the last epoch), share with any
collapsed epoch, final and best quadratic kappa, balanced-accuracy-adjusted, recall of A.

    python benchmarks/bench_collapse.py [--seeds 5] [--epochs 8] [--threads 1] [--quick] [--arms naive,plan]
    python benchmarks/bench_collapse.py --report ~/.cache/mammo-tui/bench-collapse/runs/STAMP   # re-print

Defaults (size 0.5, difficulty 1, 32 px, 8 epochs, batch 16, 5 seeds, 1 thread): about 40 min on
one shared CPU core, plus ~4 min once to pretrain the stand-in.

Datasets, stand-in weights and the preprocessed images are cached under --cache (default
~/.cache/mammo-tui/bench-collapse); run directories stay there without their checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pretrain_standin, when run as a script

USEFUL_GAIN = 0.1  # bal-acc-adj a recovery must add to count as useful, not just under the threshold
_SIGNALS = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mammo-tui" / "bench-collapse"

# The naive arm: what collapsed in the reference. Every other config arm changes one thing.
NAIVE: dict[str, Any] = {
    "arch": "resnet18", "pretrained": True,  # `weights` (the stand-in) is added at run time
    "freeze": "none", "warmup_epochs": 0,
    "sampler": "none", "class_weights": "none", "loss": "ce",
    "lr": 1e-3, "on_collapse": "warn",
}
# What every arm shares (the CLI arms get it as flags / --set): same size, epochs, batches, split.
COMMON: dict[str, Any] = {"early_stop_patience": 0, "device": "cpu", "num_workers": 0}

# arm -> how it runs. "config": NAIVE + changes, through the engine (TrainRequest). "cli":
# `mammo-tui train --no-ui` WITHOUT --preset (the decision flow's preset), plus these flags.
ARMS: dict[str, dict[str, Any]] = {
    "naive": {"config": {}, "what": "full fine-tuning, no balancing, lr 1e-3, no warmup"},
    "sampler": {"config": {"sampler": "weighted"}, "what": "naive + weighted sampler"},
    "class_weights": {"config": {"class_weights": "balanced"}, "what": "naive + balanced class weights"},
    "focal": {"config": {"loss": "focal", "focal_gamma": 2.0}, "what": "naive + focal loss (gamma 2)"},
    "logit_adjusted": {"config": {"loss": "logit_adjusted", "la_tau": 1.0},
                       "what": "naive + logit-adjusted loss (tau 1)"},
    "freeze_warmup": {"config": {"freeze": "last_block", "warmup_epochs": 2, "lr": 1e-4},
                      "what": "naive + frozen but last block, 2 warmup epochs, lr 1e-4 (last_block preset's)"},
    "naive_recover": {"config": {"on_collapse": "recover"}, "what": "naive + --on-collapse recover"},
    "plan": {"cli": [], "what": "the plan's choice: train without --preset"},
    "plan_recover": {"cli": ["--on-collapse", "recover"], "what": "the plan's choice + --on-collapse recover"},
}


def build_dataset(cache: Path, size: float, difficulty: float):
    import hashlib

    from mammo_tui.data import demo
    from mammo_tui.prepare import ensure_demo_dataset

    # the generator's knobs are part of the cache key: a retuned difficulty is a new dataset
    knobs = (demo.FIBROGLANDULAR_FRACTION, demo.PATIENT_JITTER, demo.IMAGE_JITTER, demo.MEAN_SHRINK,
             demo.JITTER_GROWTH, demo.READER_DISAGREEMENT)
    tag = hashlib.sha1(repr(knobs).encode()).hexdigest()[:8]
    return ensure_demo_dataset(size, seed=0, root=cache / f"demo-size{size:g}-difficulty{difficulty:g}-seed0-{tag}",
                               difficulty=difficulty)


# ---------------------------------------------------------------------------------------------
# the stand-in's check: a linear probe on the target task


def linear_probe(spec, weights: Path, img_size: int, folds: int = 5) -> dict[str, float]:
    """Balanced-accuracy-adjusted and quadratic kappa of a class-balanced logistic regression on
    frozen pooled features (patient-grouped K-fold), stand-in vs a random resnet18."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mammo_tui.data.cache import PreprocessCache, load_images
    from mammo_tui.data.dataset import normalise
    from mammo_tui.data.sources import scan_dataset
    from mammo_tui.engine.models import build_model
    from mammo_tui.metrics import compute_metrics

    report = scan_dataset(spec)
    records = report.records
    images = np.asarray(load_images(records, PreprocessCache(img_size)), dtype=np.float32)
    labels = np.array([r.label for r in records])
    groups = [r.group for r in records]
    x = torch.from_numpy(normalise(images)).unsqueeze(1)
    out = {}
    torch.manual_seed(0)
    for name, model in (("standin", build_model("resnet18", 4, pretrained=False, weights_file=str(weights))),
                        ("random", build_model("resnet18", 4, pretrained=False))):
        model.eval()
        with torch.no_grad():
            feats = torch.cat([model.backbone(x[i:i + 128]) for i in range(0, len(x), 128)]).numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced"))
        pred = cross_val_predict(clf, feats, labels, groups=groups,
                                 cv=StratifiedGroupKFold(folds, shuffle=True, random_state=0))
        m = compute_metrics(labels, pred, None, 4)
        out[f"{name}_bal_acc_adj"] = float(m["balanced_accuracy_adjusted"])
        out[f"{name}_kappa_quadratic"] = float(m["kappa_quadratic"])
    return out


# ---------------------------------------------------------------------------------------------
# one run


def cli_argv(arm: dict[str, Any], spec, weights: Path, args, seed: int, outdir: Path, name: str) -> list[str]:
    argv = ["train", "--no-ui", "--csv", spec.csv, "--dicom-root", spec.dicom_root, "--weights", str(weights),
            "--arch", "resnet18", "--img-size", str(args.img_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--seed", str(seed), "--outdir", str(outdir), "--run-name", name]
    for key, value in {**COMMON, "val_fraction": args.val_fraction}.items():
        argv += ["--set", f"{key}={value}"]
    return argv + list(arm["cli"])


def arm_config(arm: dict[str, Any], weights: Path, args, seed: int) -> dict[str, Any]:
    return {**NAIVE, **COMMON, "weights": str(weights), "img_size": args.img_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "val_fraction": args.val_fraction, "seed": seed, **arm["config"]}


def run_one(name: str, spec, weights: Path, args, seed: int, outdir: Path) -> dict[str, Any]:
    from mammo_tui import config
    from mammo_tui.errors import MammoError

    arm = ARMS[name]
    run_name = f"{name}-s{seed}"
    run_dir = outdir / run_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    outdir.mkdir(parents=True, exist_ok=True)
    log = outdir / f"{run_name}.log"
    t0 = time.perf_counter()
    error = ""
    with open(log, "w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), \
            contextlib.redirect_stderr(handle):
        try:
            if "cli" in arm:
                from mammo_tui.cli import main as cli_main

                argv = cli_argv(arm, spec, weights, args, seed, outdir, run_name)
                print("mammo-tui " + shlex.join(argv), flush=True)
                handlers = {s: signal.getsignal(s) for s in _SIGNALS}
                try:
                    code = cli_main(argv)
                finally:  # `train` installs its own Ctrl-C handlers; the benchmark's come back
                    for number, handler in handlers.items():
                        signal.signal(number, handler)
            else:
                from mammo_tui.console import ConsolePrinter
                from mammo_tui.app import TrainRequest, train

                cfg = config.from_mapping(arm_config(arm, weights, args, seed), source=f"bench {name}")
                result = train(TrainRequest(config=cfg, dataset=spec, outdir=str(outdir), run_name=run_name),
                               ConsolePrinter(handle, tty=False))
                code = result.exit_code
        except MammoError as exc:  # a config the engine refuses: reported, not fatal
            error, code = str(exc), exc.exit_code
    seconds = time.perf_counter() - t0
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return {"arm": name, "seed": seed, "error": error or " / ".join(tail) or f"exit {code}", "seconds": seconds}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if not args.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # ~90 MB per run
    return read_summary(name, seed, summary, code, seconds)


def read_summary(name: str, seed: int, summary: dict[str, Any], code: int, seconds: float) -> dict[str, Any]:
    last, best = summary.get("last_metrics") or {}, summary.get("best_metrics") or {}
    statuses = [h.get("status") for h in summary.get("history") or []]
    statuses += [e.get("status") for e in summary.get("collapse_events") or []]

    def pick(metrics: dict[str, Any], key: str) -> float:
        value = metrics.get(key)
        return float("nan") if value is None else float(value)

    def recall_a(metrics: dict[str, Any]) -> float:
        recalls = metrics.get("recall_per_class") or []
        return float(recalls[0]) if recalls else float("nan")

    history = summary.get("history") or []
    first_collapse = next((h["epoch"] for h in history if h.get("status") == "collapsed"), None)
    segments = summary.get("config_history") or []
    restarts = [c["epochs"][0] for c in segments[1:] if c.get("restart")]
    after = restarts[-1] if restarts else 1  # epochs since the last restart (a recovery)
    collapsed_after_restart = any(h.get("status") == "collapsed" for h in history if h["epoch"] >= after)
    return {
        "arm": name, "seed": seed, "exit_code": code, "seconds": seconds, "error": summary.get("error") or "",
        "status": summary.get("status"), "best_status": summary.get("best_status"),
        "last_status": summary.get("last_status"),
        "end_collapsed_best": summary.get("status") == "collapsed",
        "end_collapsed_last": summary.get("last_status") == "collapsed",
        "any_collapsed": "collapsed" in statuses, "first_collapse": first_collapse,
        "restarts": len(restarts), "collapsed_after_restart": bool(restarts) and collapsed_after_restart,
        "recoveries": [c.get("changes") for c in segments[1:] if c.get("restart")],
        "kappa_last": pick(last, "kappa_quadratic"), "kappa_best": pick(best, "kappa_quadratic"),
        "bal_last": pick(last, "balanced_accuracy_adjusted"), "bal_best": pick(best, "balanced_accuracy_adjusted"),
        "recall_a_last": recall_a(last), "recall_a_best": recall_a(best),
        "pred_last": last.get("prediction_distribution"),
        "config": {k: (summary.get("config") or {}).get(k) for k in
                   ("freeze", "warmup_epochs", "sampler", "class_weights", "loss", "lr", "on_collapse")},
        "origin": summary.get("origin", ""),
    }


# ---------------------------------------------------------------------------------------------
# reporting


def _ms(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def _dist(fractions) -> str:
    return "/".join(f"{100 * f:.0f}" for f in fractions) if fractions else "n/a"


def _changes(changes: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in (changes or {}).items()) or "no config change"


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}"


def markdown_table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = ["| arm | ends collapsed: best ckpt / last epoch | any collapsed epoch | recall A = 0 at end "
            "| κq last | κq best | bal-acc-adj last | bal-acc-adj best | recall A last | recall A best | restarted "
            "| s/run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        ok = [r for r in runs if "status" in r]
        failed = len(runs) - len(ok)
        if not ok:
            rows.append(f"| {name} | refused / failed in {failed} run(s): {runs[0]['error'][:80]} |"
                        + " |" * 11)
            continue
        rows.append(
            f"| {name} | {_share([r['end_collapsed_best'] for r in ok])} / "
            f"{_share([r['end_collapsed_last'] for r in ok])} "
            f"| {_share([r['any_collapsed'] for r in ok])} | {_share([r['recall_a_last'] == 0 for r in ok])} "
            f"| {_ms([r['kappa_last'] for r in ok])} | {_ms([r['kappa_best'] for r in ok])} "
            f"| {_ms([r['bal_last'] for r in ok])} | {_ms([r['bal_best'] for r in ok])} "
            f"| {_ms([r['recall_a_last'] for r in ok])} | {_ms([r['recall_a_best'] for r in ok])} "
            f"| {_share([r['restarts'] > 0 for r in ok])} | {statistics.fmean(r['seconds'] for r in ok):.0f} |"
            + (f" ({failed} failed)" if failed else ""))
    return "\n".join(rows)


def check_targets(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The claims this benchmark exists to make, each with its verdict from this run."""
    lines = []
    naive, plan = results.get("naive"), results.get("plan")

    def ok(runs):
        return [r for r in runs if "status" in r]

    if naive:
        bad = [r["end_collapsed_best"] or r["end_collapsed_last"] or r["any_collapsed"] or r["recall_a_last"] == 0
               for r in ok(naive)]
        held = sum(bad) > len(bad) / 2
        lines.append(f"- naive collapses (an epoch collapsed) or ends with recall 0 for A in most seeds: "
                     f"{sum(bad)}/{len(bad)} -> {'HELD' if held else 'NOT HELD'}")
    if plan:
        runs = ok(plan)
        collapsed = sum(r["end_collapsed_best"] or r["end_collapsed_last"] for r in runs)
        lines.append(f"- the plan's choice ends collapsed in 0 seeds: {collapsed}/{len(runs)} -> "
                     f"{'HELD' if collapsed == 0 and runs else 'NOT HELD'}")
        if naive:
            for when in ("last", "best"):
                p = statistics.fmean(r[f"bal_{when}"] for r in runs)
                n = statistics.fmean(r[f"bal_{when}"] for r in ok(naive))
                lines.append(f"- the plan beats naive on bal-acc-adj ({when}): {p:.3f} vs {n:.3f} -> "
                             f"{'HELD' if p > n else 'NOT HELD'}")
    for base, rec in (("naive", "naive_recover"), ("plan", "plan_recover")):
        if base in results and rec in results:
            by_seed = {r["seed"]: r for r in ok(results[base])}
            pairs = [(by_seed[r["seed"]], r) for r in ok(results[rec]) if r["seed"] in by_seed]
            # the seeds where the base arm collapsed at some epoch: what recover should turn around
            hit = [(b, r) for b, r in pairs if b["any_collapsed"]]
            saved = [r for _, r in hit if r["restarts"] and not r["collapsed_after_restart"]
                     and not (r["end_collapsed_best"] or r["end_collapsed_last"])]
            if not hit:
                lines.append(f"- recover on {base}: n/a, no {base} run collapsed ({len(pairs)} seeds)")
                continue
            verdict = "HELD" if len(saved) == len(hit) else "PARTLY" if saved else "NOT HELD"
            bal_base = statistics.fmean(b["bal_last"] for b, _ in hit)
            bal_rec = statistics.fmean(r["bal_last"] for _, r in hit)
            # non-collapsed is the letter of the claim; a useful recovery also predicts the other classes
            better = sum(r["bal_last"] >= b["bal_last"] + USEFUL_GAIN and r["recall_a_last"] > 0 for b, r in hit)
            lines.append(f"- recover turns collapsed {base} runs into non-collapsed ones: in {len(saved)} of the "
                         f"{len(hit)} seeds where {base} collapsed, the recover run restarted, never collapsed "
                         f"after its last restart and ends non-collapsed -> {verdict}; it is also useful (last-epoch "
                         f"bal-acc-adj >= {base}'s + {USEFUL_GAIN:g} and recall A > 0) in {better} of {len(hit)} "
                         f"(mean last-epoch bal-acc-adj {bal_rec:.3f} vs {base} {bal_base:.3f})")
    return lines


# ---------------------------------------------------------------------------------------------


def results_from_dir(outdir: Path) -> dict[str, list[dict[str, Any]]]:
    """The results of an earlier run, rebuilt from its run directories' summary.json files."""
    results: dict[str, list[dict[str, Any]]] = {}
    for summary_path in sorted(outdir.glob("*/summary.json")):
        arm, _, seed = summary_path.parent.name.rpartition("-s")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        seconds = (summary.get("finished") or 0) - (summary.get("started") or 0)
        code = 3 if summary.get("status") == "collapsed" else 0
        results.setdefault(arm, []).append(read_summary(arm, int(seed), summary, code, seconds))
    order = list(ARMS)
    return {arm: sorted(runs, key=lambda r: r["seed"])
            for arm, runs in sorted(results.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=float, default=0.5, help="demo dataset size (1.0 = 1587 images)")
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--img-size", type=int, default=32,
                        help="32 px keeps the full benchmark (45 runs) near 40 min on 1 thread")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="16: the engine's default and the head_only preset's (32: ~15 %% faster, fewer collapses)")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = polite on a shared box)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from: {', '.join(ARMS)}")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 epochs: a smoke check, not evidence")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--report", type=Path, metavar="RUNS_DIR",
                        help="print the table and targets of an earlier run from its run directories; train nothing")
    args = parser.parse_args()
    if args.report:
        results = results_from_dir(args.report)
        if not results:
            parser.error(f"--report {args.report}: no run directories with a summary.json there")
        print(markdown_table(results))
        print("\nTargets:")
        for line in check_targets(results):
            print(line)
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if args.quick:
        args.seeds, args.epochs = 1, min(args.epochs, 4)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("MAMMO_TUI_OFFLINE", "1")  # the weights are a local file: no network probe
    args.cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAMMO_TUI_CACHE", str(args.cache / "preprocess"))
    import torch

    torch.set_num_threads(args.threads)
    from pretrain_standin import ensure_standin

    started = time.perf_counter()
    command = shlex.join([sys.executable, *sys.argv])
    spec = build_dataset(args.cache, args.size, args.difficulty)
    from mammo_tui.data.demo import demo_class_counts

    counts = demo_class_counts(args.size)
    print(f"dataset: demo generator, size {args.size:g} ({sum(counts)} images, A/B/C/D {counts}), "
          f"difficulty {args.difficulty:g}: {spec.csv}", flush=True)
    weights, info = ensure_standin(args.cache, args.img_size, args.threads)
    print(f"weights: {weights} ({info['source_task']}; source held-out accuracy "
          f"{info['source_holdout_accuracy']:.3f})", flush=True)
    t0 = time.perf_counter()
    probe = linear_probe(spec, weights, args.img_size)
    print(f"linear probe on the target (class-balanced logistic regression on frozen features, 5 grouped "
          f"folds): stand-in bal-acc-adj {probe['standin_bal_acc_adj']:.3f} kappa_q "
          f"{probe['standin_kappa_quadratic']:.3f}; random resnet18 bal-acc-adj "
          f"{probe['random_bal_acc_adj']:.3f} kappa_q {probe['random_kappa_quadratic']:.3f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    outdir = args.cache / "runs" / time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for seed in range(args.seeds):
        for name in arms:
            r = run_one(name, spec, weights, args, seed, outdir)
            results[name].append(r)
            if "status" in r:
                print(f"seed {seed} {name:<15} best {r['best_status']:<9} last {r['last_status']:<9} "
                      f"any-collapsed {'yes' if r['any_collapsed'] else 'no ':<3} "
                      f"kq last {r['kappa_last']:.3f} best {r['kappa_best']:.3f}  bal last {r['bal_last']:.3f} "
                      f"best {r['bal_best']:.3f}  recall A last {r['recall_a_last']:.2f}  "
                      f"pred {_dist(r['pred_last'])}  {r['seconds']:.0f} s"
                      + "".join(f"\n    restarted: {_changes(c)}" for c in r["recoveries"]), flush=True)
            else:
                print(f"seed {seed} {name:<15} ERROR {r['error'][:200]}  {r['seconds']:.0f} s", flush=True)

    wall = time.perf_counter() - started
    print("\n## bench_collapse\n")
    print(f"Command: `{command}`\n")
    print("Weights: a STAND-IN for ImageNet weights (they cannot be downloaded here): resnet18 pretrained on "
          f"a separate synthetic source task, {info['source_task']}. It is closer to the target than ImageNet "
          "is to real mammograms; the benchmark shows what freezing preserves, not how good ImageNet features are.\n")
    print(f"Dataset: demo generator, size {args.size:g} = {sum(counts)} images (A/B/C/D {counts}), difficulty "
          f"{args.difficulty:g}, validation share {args.val_fraction:g} (patient-grouped). resnet18, "
          f"{args.img_size} px, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.seeds} seed(s), {args.threads} thread(s), CPU.\n")
    print(f"Linear probe (stand-in vs random backbone): bal-acc-adj {probe['standin_bal_acc_adj']:.3f} vs "
          f"{probe['random_bal_acc_adj']:.3f}, kappa_q {probe['standin_kappa_quadratic']:.3f} vs "
          f"{probe['random_kappa_quadratic']:.3f}.\n")
    print("Arms:")
    for name in arms:
        arm = ARMS[name]
        how = ("`mammo-tui " + shlex.join(cli_argv(arm, spec, Path("STANDIN.pth"), args, 0, Path("RUNS"), f"{name}-s0"))
               + "`" if "cli" in arm else f"NAIVE + {arm['config'] or '{}'}")
        got = {json.dumps(r["config"], sort_keys=True) for r in results[name] if "config" in r}
        origins = {r["origin"] for r in results[name] if r.get("origin")}
        print(f"- {name}: {arm['what']}; {how}" + (f"; trained with {' / '.join(sorted(got))}" if "cli" in arm else "")
              + (f"; origin: {' / '.join(sorted(origins))}" if "cli" in arm and origins else ""))
    print(f"- NAIVE = {NAIVE}; every arm also {COMMON}\n")
    print(markdown_table(results))
    print("\nTargets:")
    for line in check_targets(results):
        print(line)
    print(f"\nWall time {wall:.0f} s ({wall / 60:.1f} min); runs (without checkpoints) in {outdir}")


if __name__ == "__main__":
    main()
