"""Success of a trained run (or a shipped regime) on val, on its own training episodes and on unseen train seeds.

    PYTHONPATH=src python scripts/experiments/eval_policy.py RUN_OR_REGIME [N] [split ...]

train-seen: train-split seeds 0..N-1 (every run trains on the first episodes, seeds 0..); train-unseen: train
seeds starting at 1_000_000 (beyond any data set used here). Seeds of every other split: 0..N-1.
"""

import json
import sys
import time

import numpy as np
import torch

from ivra.minivla.policy import MiniVLAPolicy
from ivra.tabletop.rollout import rollout

torch.set_num_threads(2)
which = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
splits = sys.argv[3:] or ["val", "train-seen", "train-unseen"]
if which.endswith("ckpt.pt"):  # a checkpoint of a run in progress: its folder has spec.json only at the end,
    # so the shipped recipe's spec (prompt order) and tokenizer are used
    from ivra.minivla.model import MiniVLASpec, build_policy
    from ivra.minivla.policy import WEIGHTS
    from ivra.minivla.tokenizer import WordTokenizer

    policy = MiniVLAPolicy.__new__(MiniVLAPolicy)
    policy.spec = MiniVLASpec(**json.loads((WEIGHTS / "spec.json").read_text()))
    policy.tokenizer = WordTokenizer.load(WEIGHTS / "tokenizer.json")
    policy.model = build_policy(policy.spec, policy.tokenizer)
    policy.model.load_state_dict(torch.load(which, weights_only=True)["module"])
    policy.model.eval()
    policy.malformed, policy.ivra_handle, policy.name = 0, None, "ckpt"
else:
    policy = MiniVLAPolicy(which)
res = {}
for split in splits:
    t0 = time.time()
    real, start = {"train-seen": ("train", 0), "train-unseen": ("train", 1_000_000)}.get(split, (split, 0))
    eps = []
    for a in range(start, start + n, 100):
        eps += rollout(policy, real, list(range(a, min(start + n, a + 100))), policy.spec.image_size)
    fams = {}
    for e in eps:
        fams.setdefault(e["task"], []).append(e["success"])
    res[split] = {
        "success": round(float(np.mean([e["success"] for e in eps])), 3),
        "n": len(eps),
        "families": {k: round(float(np.mean(v)), 2) for k, v in sorted(fams.items())},
    }
    print(split, json.dumps(res[split]), f"({time.time() - t0:.0f}s)", flush=True)
