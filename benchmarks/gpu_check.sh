#!/usr/bin/env bash
# GPU checks for a CUDA box (< 5 min on one modern GPU): AMP + channels_last training throughput
# at 224, 512 and 1024 px for resnet18/50; the engine's data pipeline (DataLoader + augmentation)
# feeding resnet50 at 512 / 1024 px vs the model-only step (target >= 0.9); a real engine run with
# and without the frozen-feature cache; the memory-mapped dataset under torchrun with 2 ranks
# (peak PSS vs 1 process). Runs unchanged anywhere: without CUDA it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"
