"""See gpu_check.sh. Prints one line per measurement; exits 0 and says why when there is no GPU."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def train_throughput(arch: str, size: int, batch: int, steps: int = 20) -> float:
    """Images/s of full training steps (forward, backward, AdamW) with bf16/fp16 autocast."""
    from mammo_tui.engine.models import build_model

    model = build_model(arch, 4, pretrained=False).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(batch, 1, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,), device="cuda")
    times = []
    for step in range(steps + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if step >= 5:  # warm-up steps (cudnn autotune, allocator) excluded
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise SystemExit(f"non-finite loss in the AMP step for {arch} at {size} px")
    return batch / statistics.median(times)


def engine_run(cached: bool, tmp: Path, spec) -> float:
    from mammo_tui import config
    from mammo_tui.engine.trainer import TrainRequest, train

    cfg = config.resolve("head_only", {"arch": "resnet50", "pretrained": False, "img_size": 224, "epochs": 3,
                                       "augment": False, "frozen_feature_cache": cached, "device": "cuda",
                                       "early_stop_patience": 0})
    epochs = []
    result = train(TrainRequest(config=cfg, dataset=spec, outdir=str(tmp / "runs"), run_name=f"gpu-{cached}"),
                   lambda e: epochs.append(e.epoch_time_s) if e.type == "epoch" else None)
    assert result.exit_code in (0, 3), result
    return statistics.median(epochs)


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; skipping (nothing failed).")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for arch, size, batch in (("resnet18", 224, 128), ("resnet50", 224, 64), ("resnet18", 512, 32),
                              ("resnet50", 512, 16)):
        print(f"  train step {arch:9} {size:3d} px batch {batch:3d}: {train_throughput(arch, size, batch):8.0f} img/s")
    from mammo_tui.prepare import ensure_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        spec = ensure_demo_dataset(0.5, root=Path(tmp) / "demo")
        engine_run(True, Path(tmp) / "warm", spec)  # fills the preprocessed-image cache
        with_cache, without = engine_run(True, Path(tmp), spec), engine_run(False, Path(tmp), spec)
    print(f"  engine resnet50 224 px head-only epoch: {with_cache * 1000:.0f} ms with the frozen-feature cache, "
          f"{without * 1000:.0f} ms recomputing ({without / with_cache:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
