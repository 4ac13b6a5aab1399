"""See gpu_check.sh. Prints one line per measurement; exits 0 and says why when there is no GPU."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

PIPELINE_TARGET = 0.9  # data pipeline + step must reach this share of the model-only step rate


def _step_fn(arch: str):
    """One AMP + channels_last training step (forward, backward, AdamW) of a fresh model."""
    from mammo_tui.engine.models import build_model

    model = build_model(arch, 4, pretrained=False).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y.cuda(non_blocking=True))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step


def train_throughput(arch: str, size: int, batch: int, steps: int = 20) -> float:
    """Images/s of full training steps on a batch already on the GPU (the model alone)."""
    step = _step_fn(arch)
    x = torch.randn(batch, 1, size, size, device="cuda")
    y = torch.randint(0, 4, (batch,), device="cuda")
    times = []
    for index in range(steps + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(x, y)
        torch.cuda.synchronize()
        if index >= 5:  # warm-up steps (cudnn autotune, allocator) excluded
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise SystemExit(f"non-finite loss in the AMP step for {arch} at {size} px")
    return batch / statistics.median(times)


def pipeline_throughput(arch: str, size: int, batch: int, steps: int = 30) -> tuple[float, float]:
    """(images/s of the engine's input pipeline feeding the step, images/s of the step alone).

    The pipeline is what the trainer builds: ImageDataset (augmentation on) over preloaded float16
    images in a DataLoader with the engine's worker count and pinned memory.
    """
    from torch.utils.data import DataLoader

    from mammo_tui.data.dataset import ImageDataset
    from mammo_tui.engine.models import default_num_workers

    n = batch * (steps + 5)
    rng = np.random.default_rng(0)
    images = rng.random((min(n, 512), size, size), dtype=np.float32).astype(np.float16)
    images = np.resize(images, (n, size, size)) if n > len(images) else images
    dataset = ImageDataset(images, rng.integers(0, 4, n), augment=True, seed=0)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=default_num_workers("cuda"),
                        pin_memory=True, drop_last=True, persistent_workers=False)
    step = _step_fn(arch)
    seen, t0 = 0, 0.0
    for index, (x, y) in enumerate(loader):
        if index == 5:  # after worker start-up and cudnn warm-up
            torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        step(x, y)
        seen += len(x)
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0), train_throughput(arch, size, batch, steps)


def _pss_mb(pid: int) -> float:
    """Proportional set size (shared pages split between their users), in MB; 0 when gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            children = []
        found += children
        frontier += children
    return found


def run_with_peak_pss(command: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """(exit code, peak PSS summed over the process tree in MB, seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0.0], threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(_pss_mb(p) for p in [proc.pid, *_descendants(proc.pid)]))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, stderr = proc.communicate(timeout=240)
    done.set()
    watcher.join()
    if proc.returncode not in (0, 3):
        print(stderr[-2000:], file=sys.stderr)
    return proc.returncode, peak[0], time.perf_counter() - started


def torchrun_shared_dataset(outdir: Path) -> None:
    """The memory-mapped dataset under torchrun, 2 ranks vs 1 process: peak PSS of the whole tree.

    Ranks run on gloo with the GPU hidden: two ranks on one GPU is not a supported NCCL setup,
    and the point is the dataset's memory (one page-cache copy shared by the ranks), not speed.
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    train = ["-m", "mammo_tui", "train", "--no-ui", "--demo", "--epochs", "1", "--img-size", "256",
             "--no-pretrained", "--set", "max_batches_per_epoch=4", "--set", "num_workers=0", "--outdir", str(outdir)]
    single = run_with_peak_pss([sys.executable, *train, "--run-name", "one"], env)
    pair = run_with_peak_pss([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              *train, "--run-name", "two"], env)
    for name, (code, pss, seconds) in (("1 process", single), ("torchrun 2 ranks", pair)):
        print(f"  shared dataset, demo at 256 px, {name:16}: exit {code}, peak PSS {pss:7.0f} MB, {seconds:5.1f} s")
    if single[1]:
        print(f"  2 ranks / 1 process PSS: {pair[1] / single[1]:.2f}x (the dataset is shared when well under 2x)")


def engine_run(cached: bool, tmp: Path, spec) -> float:
    from mammo_tui import config
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.events import EpochMetrics

    cfg = config.resolve("head_only", {"arch": "resnet50", "pretrained": False, "img_size": 224, "epochs": 3,
                                       "augment": False, "frozen_feature_cache": cached, "device": "cuda",
                                       "early_stop_patience": 0})
    epochs = []
    result = train(TrainRequest(config=cfg, dataset=spec, outdir=str(tmp / "runs"), run_name=f"gpu-{cached}"),
                   lambda e: epochs.append(e.epoch_time_s) if isinstance(e, EpochMetrics) else None)
    assert result.exit_code in (0, 3), result
    return statistics.median(epochs)


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; skipping (nothing failed).")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    torch.backends.cudnn.benchmark = True
    for arch, size, batch in (("resnet18", 224, 128), ("resnet50", 224, 64), ("resnet18", 512, 32),
                              ("resnet50", 512, 32), ("resnet50", 1024, 8)):
        print(f"  train step {arch:9} {size:4d} px batch {batch:3d} (AMP, channels_last): "
              f"{train_throughput(arch, size, batch):8.0f} img/s", flush=True)
    for arch, size, batch in (("resnet50", 512, 32), ("resnet50", 1024, 8)):
        fed, alone = pipeline_throughput(arch, size, batch)
        verdict = "ok" if fed >= PIPELINE_TARGET * alone else f"BELOW the {PIPELINE_TARGET:.1f} target"
        print(f"  data pipeline {arch} {size} px: {fed:7.0f} img/s fed by the DataLoader vs {alone:7.0f} img/s "
              f"model only = {fed / alone:.2f} ({verdict})", flush=True)
    from mammo_tui.prepare import ensure_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        spec = ensure_demo_dataset(0.5, root=Path(tmp) / "demo")
        engine_run(True, Path(tmp) / "warm", spec)  # fills the preprocessed-image cache
        with_cache, without = engine_run(True, Path(tmp), spec), engine_run(False, Path(tmp), spec)
    print(f"  engine resnet50 224 px head-only epoch: {with_cache * 1000:.0f} ms with the frozen-feature cache, "
          f"{without * 1000:.0f} ms recomputing ({without / with_cache:.1f}x)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        torchrun_shared_dataset(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
