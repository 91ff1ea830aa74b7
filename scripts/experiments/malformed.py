"""How often the shipped tabletop policy's free greedy decoding is malformed, and on which inputs.

    .venv/bin/python scripts/experiments/malformed.py low 1000

Prints, for 48 synthetic images of each kind (all black, all white, uniform noise, Gaussian noise; one
instruction), the rows whose free decoding does not parse, per arm; then, for every tabletop split except train, the
episodes (seeds 0..N-1) that a malformed action ended, per arm, decoding freely as the model card was measured, and
what decoding under the action grammar gives for those episodes. Results: docs/results.md.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from ivra.minivla.policy import MiniVLAPolicy
from ivra.tabletop.rollout import rollout

SETTING = {"layer": 0, "lam": 0.1}  # the shipped IVRA setting (src/ivra/minivla/weights/ivra_setting.json)


def synthetic(pol: MiniVLAPolicy, n: int = 48) -> dict:
    rng, out = np.random.default_rng(0), {}
    makers = {
        "black": lambda: np.zeros((96, 96, 3), np.uint8),
        "white": lambda: np.full((96, 96, 3), 255, np.uint8),
        "uniform": lambda: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
        "gauss": lambda: np.clip(rng.normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8),
    }
    for kind, make in makers.items():
        obs = [{"image": make()} for _ in range(n)]
        for arm in (None, SETTING):
            a = pol.act(obs, ["put the red block in the green bowl"] * n, ivra=[arm] * n)
            out[f"{kind}/{'ivra' if arm else 'baseline'}"] = f"{int((~np.isfinite(a).all(1)).sum())} of {n}"
    return out


def main(which: str, n: int) -> None:
    torch.set_num_threads(1)
    free, grammar = MiniVLAPolicy(which, decode="free"), MiniVLAPolicy(which)
    print(json.dumps(synthetic(free)), flush=True)
    for split in ["val", "placement", "combination", "novel_object", "novel_task"]:
        for arm in (None, SETTING):
            t, res = time.time(), []
            for s0 in range(0, n, 100):
                res += rollout(free, split, list(range(s0, min(n, s0 + 100))), ivra=arm)
            bad = [r["seed"] for r in res if r["malformed"]]
            fixed = rollout(grammar, split, bad, ivra=arm) if bad else []
            print(
                f"{split} {'ivra' if arm else 'baseline'}: {len(bad)} of {n} episodes malformed (seeds {bad[:20]}); "
                f"success {sum(r['success'] for r in res)}; under the grammar those episodes succeed: "
                f"{[r['success'] for r in fixed]} ({time.time() - t:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "low", int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
