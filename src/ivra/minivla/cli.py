"""``ivra train``: reproduce the shipped tiny policy (vision pre-training, then policy training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ivra.cliargs import UsageError, fraction, nonneg_int, out_dir, positive_float, positive_int
from ivra.minivla.dense import HEADS
from ivra.minivla.model import PROMPTS
from ivra.minivla.train import VISION_SCENES

STOP_HELP = "end after this many steps of the --steps schedule (reproduces a run stopped early; default: the whole schedule)"


def _schedule(p: argparse.ArgumentParser, steps: int, lr: float) -> None:
    """The options of a training schedule, shared by the LM stages."""
    p.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch", type=positive_int, default=32, help="batch size (default %(default)s)")
    p.add_argument(
        "--lr",
        type=positive_float,
        default=lr,
        help="peak learning rate of the cosine schedule (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=0,
        help="seed of the data order and initial weights (default %(default)s)",
    )
    p.add_argument("--stop", type=positive_int, default=None, help=STOP_HELP)


def _inputs(p: argparse.ArgumentParser, out: str) -> None:
    """The vision tower an LM stage starts from, and its run directory."""
    p.add_argument(
        "--vision",
        default="runs/train/vision/vision.safetensors",
        help="the pre-trained vision tower (vision.safetensors of `ivra train vision`; default %(default)s)",
    )
    p.add_argument(
        "--out",
        default=out,
        type=out_dir,
        help="run directory: checkpoints, log, run.json; rerun to resume (default %(default)s)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the tiny LLaRA-style policy (vision, grounding, policy stages)")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)

    v = stages.add_parser("vision", help="stage 1: pre-training of the vision tower")
    v.add_argument(
        "--out",
        default="runs/train/vision",
        type=out_dir,
        help="run directory: checkpoints, log, run.json; rerun to resume (default %(default)s)",
    )
    v.add_argument(
        "--objective",
        default="dense",
        choices=("dense", "clip"),
        help="dense: per-patch object/container identity and absolute position (shipped); clip: contrastive",
    )
    v.add_argument("--steps", type=positive_int, default=400, help="optimiser steps (default %(default)s)")
    v.add_argument("--batch", type=positive_int, default=32, help="batch size (default %(default)s)")
    v.add_argument(
        "--pairs", type=positive_int, default=5000, help="episodes (dense) or image-caption pairs (clip)"
    )
    v.add_argument(
        "--lr",
        type=positive_float,
        default=2e-3,
        help="peak learning rate of the cosine schedule (default %(default)s)",
    )
    v.add_argument(
        "--seed",
        type=nonneg_int,
        default=0,
        help="seed of the data order and initial weights (default %(default)s)",
    )
    v.add_argument("--stop", type=positive_int, default=None, help=STOP_HELP)
    v.add_argument("--init", default=None, help="dense: a vision.safetensors to continue from (new schedule)")
    v.add_argument(
        "--head-weight",
        action="append",
        default=[],
        type=head_weight,
        metavar="HEAD=W",
        help="dense: loss weight of one head (repeatable), e.g. obj_shape=3; heads: " + ", ".join(HEADS),
    )
    v.add_argument(
        "--scenes",
        default="train",
        choices=VISION_SCENES,
        help="dense: train-split episodes (every expert step), or world scenes of every colour and shape",
    )
    v.set_defaults(func=_vision)

    g = stages.add_parser(
        "ground",
        help="stage 2: vision-language pre-training (projector + LM answer referring questions about world scenes)",
    )
    _inputs(g, out="runs/train/ground")
    g.add_argument(
        "--scenes", type=positive_int, default=40000, help="world scenes (about 14 questions each)"
    )
    _schedule(g, steps=3000, lr=1e-3)
    g.add_argument(
        "--prompt",
        default=None,
        choices=PROMPTS,
        help="prompt token order (default: instruction_first, or the --init run's)",
    )
    g.add_argument(
        "--init", default=None, help="a finished grounding run to continue from (a new schedule cycle)"
    )
    g.set_defaults(func=_ground)

    q = stages.add_parser("policy", help="stage 3: projector + LM from expert demonstrations, vision frozen")
    _inputs(q, out="runs/train/policy-low")
    q.add_argument("--episodes", type=positive_int, default=300000, help="episodes of the full data set")
    q.add_argument("--fraction", type=fraction, default=0.12, help="fraction of them used (1.0 = full data)")
    _schedule(q, steps=4000, lr=1e-3)
    q.add_argument(
        "--init",
        default=None,
        help="a finished grounding or policy run directory to continue from (a new schedule cycle)",
    )
    q.add_argument(
        "--ground-scenes",
        type=nonneg_int,
        default=0,
        help="world scenes whose referring questions are mixed into the demonstrations (co-training; 0: none)",
    )
    q.add_argument(
        "--prompt",
        default=None,
        choices=PROMPTS,
        help="prompt token order (default: instruction_first as shipped, or the --init run's)",
    )
    q.add_argument(
        "--stream",
        action="store_true",
        help="render each batch's episodes on demand instead of holding the set in memory (the full 300k set "
        "needs about 20 GB otherwise); --batch then counts episodes",
    )
    q.set_defaults(func=_policy)


def head_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in HEADS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEAD=W with HEAD one of {', '.join(HEADS)}")
    return name, positive_float(value)


def _vision(args) -> int:
    from ivra.minivla.train import pretrain_vision

    if args.init is not None and not Path(args.init).is_file():
        raise UsageError(f"--init {args.init}: no such file (expected a vision.safetensors)")
    if args.objective != "dense" and (args.init or args.head_weight or args.scenes != "train"):
        raise UsageError(
            f"--init / --head-weight / --scenes apply to --objective dense, not {args.objective}"
        )
    if args.init is not None:
        from ivra.minivla.model import MiniVLASpec
        from ivra.minivla.train import vision_state

        try:
            vision_state(args.init, MiniVLASpec())
        except ValueError as exc:  # not safetensors at all, or another model's weights
            raise UsageError(f"--init {exc}") from None

    pretrain_vision(
        args.out,
        steps=args.steps,
        batch=args.batch,
        n_pairs=args.pairs,
        lr=args.lr,
        seed=args.seed,
        objective=args.objective,
        stop=args.stop,
        init=args.init,
        head_weights=dict(args.head_weight) or None,
        scenes=args.scenes,
    )
    return 0


def _check_lm_inputs(args, init_expected: str) -> None:
    """The LM stages' --vision file and --init run directory exist (before any data is generated)."""
    if not Path(args.vision).is_file():
        raise UsageError(f"--vision {args.vision}: no such file (train it first: ivra train vision)")
    if args.init is not None and not (Path(args.init) / "model.safetensors").is_file():
        raise UsageError(f"--init {args.init}: no model.safetensors there (expected {init_expected})")


def _ground(args) -> int:
    from ivra.minivla.train import train_grounding

    _check_lm_inputs(args, "a finished grounding run")
    train_grounding(
        args.out,
        args.vision,
        scenes=args.scenes,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        stop=args.stop,
        prompt=args.prompt,
        init=args.init,
    )
    return 0


def _policy(args) -> int:
    from ivra.minivla.train import train_policy

    _check_lm_inputs(args, "a finished training run")
    if args.stream and args.ground_scenes:
        raise UsageError(
            f"--stream with --ground-scenes {args.ground_scenes}: co-training questions need the in-memory set "
            "(drop one of them)"
        )
    if args.init is not None and args.ground_scenes:
        from ivra.minivla.tokenizer import WordTokenizer

        if "locate" not in WordTokenizer.load(Path(args.init) / "tokenizer.json").stoi:
            raise UsageError(
                f"--ground-scenes with --init {args.init}: that run never read referring questions "
                "(continue from an `ivra train ground` run, or train from scratch)"
            )
    train_policy(
        args.out,
        args.vision,
        episodes=args.episodes,
        fraction=args.fraction,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        stop=args.stop,
        init=args.init,
        prompt=args.prompt or (None if args.init else "instruction_first"),
        ground_scenes=args.ground_scenes,
        stream=args.stream,
    )
    return 0
