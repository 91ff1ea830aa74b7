#!/usr/bin/env bash
# Reproduce the shipped tiny policies (see src/ivra/minivla/weights/MODEL_CARD.md). ~1 h on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
IVRA=.venv/bin/ivra
$IVRA train vision --out runs/train/vision --steps 800 --seed 0
$IVRA train policy --vision runs/train/vision/vision.safetensors --out runs/train/policy-low --fraction 0.12 --steps 2000 --seed 0
$IVRA train policy --vision runs/train/vision/vision.safetensors --out runs/train/policy-full --fraction 1.0 --steps 2500 --seed 0
.venv/bin/python -m ivra.minivla.ship runs/train
.venv/bin/python -m ivra.minivla.card --episodes 200
