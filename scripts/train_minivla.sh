#!/usr/bin/env bash
# Reproduce the shipped tiny policy (src/ivra/minivla/weights/MODEL_CARD.md records machine and wall time:
# about 115 min of training plus a few minutes of data generation on 2 CPU cores). Each stage checkpoints every
# 250 steps; running this script again after a stop resumes where it stopped (a finished stage is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
IVRA=.venv/bin/ivra
R=runs/train
# 1. vision tower, dense objective (per-patch object/container identity and absolute centre bin), three cycles,
#    each continuing the last on fresh train-split episodes; cycles 2-3 weight the shape head x3 (it lagged)
[ -f $R/vision/vision.safetensors ] ||
    $IVRA train vision --objective dense --out $R/vision --pairs 5000 --steps 400 --batch 32 --lr 2e-3 --seed 0
[ -f $R/vision-2/vision.safetensors ] ||
    $IVRA train vision --init $R/vision/vision.safetensors --head-weight obj_shape=3 --out $R/vision-2 \
        --pairs 10000 --steps 600 --batch 32 --lr 1e-3 --seed 1
[ -f $R/vision-3/vision.safetensors ] ||
    $IVRA train vision --init $R/vision-2/vision.safetensors --head-weight obj_shape=3 --out $R/vision-3 \
        --pairs 15000 --steps 1500 --batch 32 --lr 1e-3 --seed 2
#    cycle 4: world scenes of every colour and shape (pink and hearts too, which the robot demonstrations never
#    show), the analogue of a VLA's web-scale vision pre-training (src/ivra/minivla/world.py)
[ -f $R/vision-4/vision.safetensors ] ||
    $IVRA train vision --init $R/vision-3/vision.safetensors --scenes world --head-weight obj_shape=3 \
        --out $R/vision-4 --pairs 15000 --steps 1000 --batch 32 --lr 1e-3 --seed 3
# 2. low-data policy: 12 % of a 300k-episode train set (36k episodes, ~45k frames), vision frozen, the instruction
#    before the visual tokens (so the visual tokens can attend to it); two cosine cycles on the same episodes, the
#    second a warm restart at half the learning rate
[ -f $R/policy-low-1/model.safetensors ] ||
    $IVRA train policy --vision $R/vision-4/vision.safetensors --out $R/policy-low-1 --prompt instruction_first \
        --episodes 300000 --fraction 0.12 --steps 4000 --batch 32 --lr 1e-3 --seed 0
[ -f $R/policy-low/model.safetensors ] ||
    $IVRA train policy --vision $R/vision-4/vision.safetensors --init $R/policy-low-1 --out $R/policy-low \
        --episodes 300000 --fraction 0.12 --steps 4000 --batch 32 --lr 5e-4 --seed 1
# 3. full-data policy: the whole 300k-episode set, continued from the low-data policy, each batch's 32 episodes
#    rendered on demand (--stream: the set as frames + features would need about 20 GB of RAM); 0.53 passes
[ -f $R/policy-full/model.safetensors ] ||
    $IVRA train policy --vision $R/vision-4/vision.safetensors --init $R/policy-low --out $R/policy-full \
        --episodes 300000 --fraction 1.0 --stream --steps 5000 --batch 32 --lr 5e-4 --seed 2
.venv/bin/python -m ivra.minivla.ship $R
.venv/bin/python -m ivra.minivla.card --episodes 1000
