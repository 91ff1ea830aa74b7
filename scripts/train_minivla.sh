#!/usr/bin/env bash
# Reproduce the shipped tiny policy (see src/ivra/minivla/weights/MODEL_CARD.md for machine and wall time).
# Each stage checkpoints every 250 steps; running this script again after a stop resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
IVRA=.venv/bin/ivra
# 1. vision tower: per-patch object/container identity and absolute position, 5000 train episodes (~6.3k frames)
$IVRA train vision --objective dense --out runs/train/vision --pairs 5000 --steps 400 --batch 32 --lr 2e-3 --seed 0
# 2. low-data policy: 12 % of a 100k-episode train set (12k episodes), vision frozen
$IVRA train policy --vision runs/train/vision/vision.safetensors --out runs/train/policy-low \
    --episodes 100000 --fraction 0.12 --steps 1500 --batch 32 --lr 1e-3 --seed 0
.venv/bin/python -m ivra.minivla.ship runs/train
.venv/bin/python -m ivra.minivla.card --episodes 200
