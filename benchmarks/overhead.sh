#!/usr/bin/env bash
# IVRA latency overhead on a realistic shape (CLIP ViT-B/16 @ 224 px + 12-layer 1536-wide Llama, random weights),
# baseline vs IVRA in interleaved pairs (`ivra bench`).
#   bash benchmarks/overhead.sh [--record] [preset] [pairs]
# Writes runs/benchmarks/overhead_<preset>_<device>.json (untracked; $IVRA_BENCH_OUT_DIR to write elsewhere).
# --record (or IVRA_BENCH_RECORD=1) updates the recorded result, the tracked
# benchmarks/results/overhead_<preset>_<device>.json, instead: do that only for a run you mean to publish.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORD="${IVRA_BENCH_RECORD:-}"
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --record) RECORD=1 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "overhead.sh: error: unknown option $arg (expected --record, then [preset] [pairs])" >&2; exit 2 ;;
    *) ARGS+=("$arg") ;;
  esac
done
PRESET="${ARGS[0]:-realistic}"
PAIRS="${ARGS[1]:-20}"
if [[ -n "$RECORD" && "$RECORD" != 0 ]]; then
  OUT_DIR="benchmarks/results"
else
  OUT_DIR="${IVRA_BENCH_OUT_DIR:-runs/benchmarks}"
fi
DEVICE="$(.venv/bin/python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
.venv/bin/python -m ivra.cli bench --preset "$PRESET" --pairs "$PAIRS" --device "$DEVICE" \
  --record "$OUT_DIR/overhead_${PRESET}_${DEVICE}.json"
