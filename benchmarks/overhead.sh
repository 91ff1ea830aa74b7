#!/usr/bin/env bash
# IVRA latency overhead on a realistic shape (CLIP ViT-B/16 @ 224 px + 12-layer 1536-wide Llama, random weights),
# baseline vs IVRA in interleaved pairs. Writes benchmarks/results/overhead_<preset>_<device>.json.
#   bash benchmarks/overhead.sh [preset] [pairs]
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET="${1:-realistic}"
PAIRS="${2:-20}"
DEVICE="$(.venv/bin/python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
.venv/bin/ivra bench --preset "$PRESET" --pairs "$PAIRS" --device "$DEVICE" \
  --record "benchmarks/results/overhead_${PRESET}_${DEVICE}.json"
