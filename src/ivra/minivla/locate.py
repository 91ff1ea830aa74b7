"""How well a trained model answers referring questions about held-out world scenes ("locate the pink heart").

    python -m ivra.minivla.locate RUN_DIR_OR_REGIME [--scenes 300]

An answer counts as correct when both of its bins are within 2 bins (4 % of the image side) of the referent's
centre. Questions are grouped by whether they name something the robot demonstrations never show (pink, heart).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ivra.minivla.model import prompt_batch
from ivra.minivla.tokenizer import BINS
from ivra.minivla.world import grounding_set
from ivra.tabletop.scene import NOVEL_COLOR, NOVEL_SHAPE

#: held-out world scenes for this measurement (training uses 20M.. for vision and 30M.. for grounding)
EVAL_SEED = 95_000_000


@torch.no_grad()
def locate_accuracy(model, tok, spec, n_scenes: int = 300, seed: int = EVAL_SEED, batch: int = 256) -> dict:
    images, questions = grounding_set(n_scenes, seed, spec.image_size)
    hits = {"all": [], "novel": [], "seen": []}
    for start in range(0, len(questions), batch):
        part = questions[start : start + batch]
        b = prompt_batch(tok, spec, images[[i for i, *_ in part]], [q for _, q, _ in part])
        out = model.generate(**b, max_new_tokens=3, do_sample=False)[:, b["input_ids"].shape[1] :]
        for (_, q, (x, y)), row in zip(part, out.tolist()):
            nums = [i - tok.number_ids[0] for i in row[:2] if i in tok.number_ids]
            ok = len(nums) == 2 and all(abs(n - int(v * BINS)) <= 2 for n, v in zip(nums, (x, y)))
            novel = NOVEL_COLOR in q.split() or NOVEL_SHAPE in q.split()
            hits["all"].append(ok)
            hits["novel" if novel else "seen"].append(ok)
    return {
        k: {"n": len(v), "within2": round(float(np.mean(v)), 3) if v else float("nan")}
        for k, v in hits.items()
    }


def main() -> None:
    from ivra.cliargs import positive_int
    from ivra.minivla.policy import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a training run directory or a shipped regime (low)")
    parser.add_argument("--scenes", type=positive_int, default=300)
    args = parser.parse_args()
    try:
        model, tok, spec = load_model(args.model)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"locate: {exc}") from None
    if "locate" not in tok.stoi:
        raise SystemExit(
            f"{args.model}: trained without referring questions (its vocabulary has no 'locate')"
        )
    print(json.dumps(locate_accuracy(model.eval(), tok, spec, args.scenes)))


if __name__ == "__main__":
    main()
