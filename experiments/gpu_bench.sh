#!/usr/bin/env bash
# The prepared GPU benchmark: our learner vs the plain loop vs Avalanche's Replay with reduced_resnet18
# at 32x32 (bf16 autocast, channels_last, stream and replay memory resident on the GPU; Avalanche
# loads its batches from host memory, as it always does). Sized to finish well within 3 minutes on
# one H100: about 30 s of timed training, plus start-up, Avalanche's import and the default experiment.
#
#   bash experiments/gpu_bench.sh                 # writes runs/bench/gpu.json and prints the table
#   bash experiments/gpu_bench.sh --rounds 3      # extra flags go to experiments/bench.py
#
# Larger batches than the CPU default (128 + 128 replay), so a step is not only kernel launches;
# the tiny (linear) model then shows the per-step overhead where the kernels are shortest.
# --threads 0: a lent machine is not shared, so torch may use every core (Avalanche's collation).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# A hard limit, so a hung run never eats a lent machine's time; bench.py itself takes ~1-2 minutes.
exec timeout 170 "$PYTHON" experiments/bench.py \
    --device cuda --backbone reduced_resnet18 --channels-last \
    --image-size 32 --batch-size 128 --replay-batch-size 128 --memory-size 2000 \
    --train-per-category 256 --epochs 2 --tiny-epochs 8 --rounds 5 --threads 0 \
    --out runs/bench/gpu.json "$@"
