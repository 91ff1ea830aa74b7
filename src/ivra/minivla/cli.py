"""``ivra train``: reproduce the shipped tiny policy (vision pre-training, then policy training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ivra.cliargs import UsageError, fraction, nonneg_int, out_dir, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the tiny LLaRA-style policy (two stages)")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)

    v = stages.add_parser("vision", help="stage 1: contrastive pre-training of the vision tower")
    v.add_argument("--out", default="runs/train/vision", type=out_dir)
    v.add_argument("--steps", type=positive_int, default=800)
    v.add_argument("--batch", type=positive_int, default=64)
    v.add_argument("--pairs", type=positive_int, default=20000)
    v.add_argument("--lr", type=positive_float, default=5e-4)
    v.add_argument("--seed", type=nonneg_int, default=0)
    v.set_defaults(func=_vision)

    q = stages.add_parser("policy", help="stage 2: projector + LM from expert demonstrations, vision frozen")
    q.add_argument("--vision", default="runs/train/vision/vision.safetensors")
    q.add_argument("--out", default="runs/train/policy-low", type=out_dir)
    q.add_argument("--episodes", type=positive_int, default=40000, help="episodes of the full data set")
    q.add_argument("--fraction", type=fraction, default=0.12, help="fraction of them used (1.0 = full data)")
    q.add_argument("--steps", type=positive_int, default=2000)
    q.add_argument("--batch", type=positive_int, default=32)
    q.add_argument("--lr", type=positive_float, default=3e-4)
    q.add_argument("--seed", type=nonneg_int, default=0)
    q.set_defaults(func=_policy)


def _vision(args) -> int:
    from ivra.minivla.train import pretrain_vision

    pretrain_vision(
        args.out, steps=args.steps, batch=args.batch, n_pairs=args.pairs, lr=args.lr, seed=args.seed
    )
    return 0


def _policy(args) -> int:
    from ivra.minivla.train import train_policy

    if not Path(args.vision).is_file():
        raise UsageError(f"--vision {args.vision}: no such file (train it first: ivra train vision)")
    train_policy(
        args.out,
        args.vision,
        episodes=args.episodes,
        fraction=args.fraction,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
    )
    return 0
