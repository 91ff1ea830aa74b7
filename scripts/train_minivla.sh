#!/usr/bin/env bash
# Reproduce the shipped tiny policy (src/ivra/minivla/weights/MODEL_CARD.md records machine and wall time:
# about 65 min of training plus a few minutes of data generation on 2 shared CPU cores). Each stage checkpoints
# every 250 steps; running this script again after a stop resumes where it stopped (a finished stage is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
IVRA=.venv/bin/ivra
R=runs/train
# 1. vision tower: per-patch object/container identity and absolute centre bin, 5000 train episodes (6277 frames)
[ -f $R/vision/vision.safetensors ] ||
    $IVRA train vision --objective dense --out $R/vision --pairs 5000 --steps 400 --batch 32 --lr 2e-3 --seed 0
# 2. low-data policy: 12 % of a 100k-episode train set (12k episodes, ~15k frames), vision frozen;
#    two cosine cycles (the second a warm restart from the first, on the same data)
[ -f $R/policy-low-1/model.safetensors ] ||
    $IVRA train policy --vision $R/vision/vision.safetensors --out $R/policy-low-1 \
        --episodes 100000 --fraction 0.12 --steps 2000 --batch 32 --lr 1e-3 --seed 0
[ -f $R/policy-low/model.safetensors ] ||
    $IVRA train policy --vision $R/vision/vision.safetensors --out $R/policy-low --init $R/policy-low-1 \
        --episodes 100000 --fraction 0.12 --steps 1200 --batch 32 --lr 5e-4 --seed 1
.venv/bin/python -m ivra.minivla.ship $R
.venv/bin/python -m ivra.minivla.card --episodes 200
