#!/usr/bin/env bash
# GPU checks for a CUDA box (< 5 min on one modern GPU): AMP + channels_last training throughput
# at 224 and 512 px for resnet18/50, and a real engine run with and without the frozen-feature
# cache. Runs unchanged anywhere: without CUDA it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"
