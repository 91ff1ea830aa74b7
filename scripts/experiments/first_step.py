"""What goes wrong at the first step of each episode: a pick on a wrong object, a pick on nothing, the right
object placed outside the target container, or ok; with the median error (in bins) of each action number.

    PYTHONPATH=src python scripts/experiments/first_step.py SPLIT N [RUN_OR_REGIME]
"""

import collections
import sys

import numpy as np
import torch

from ivra.minivla.policy import MiniVLAPolicy
from ivra.minivla.tokenizer import BINS
from ivra.tabletop.env import TabletopEnv

torch.set_num_threads(2)
split, n = sys.argv[1], int(sys.argv[2])
policy = MiniVLAPolicy(sys.argv[3] if len(sys.argv) > 3 else "low")
envs = [TabletopEnv(resolution=policy.spec.image_size, split=split) for _ in range(n)]
obs = [env.reset(seed=seed)[0] for seed, env in enumerate(envs)]
actions = np.asarray(policy.act(obs, [o["instruction"] for o in obs]))
counts, families, errors = collections.Counter(), {}, collections.defaultdict(list)
for env, action in zip(envs, actions):
    expert, task = env.expert_action(), env.episode.task
    if not np.all(np.isfinite(action)):
        kind = "malformed"
    else:
        env.step(action)
        last, target = env._last, env.episode.container(env.episode.target)
        if last["picked"] is None:
            kind = "pick_nothing"
        elif not last["picked_required"]:
            kind = "pick_wrong"
        elif last["placed_in"] != target.name:
            kind = "place_wrong"
        else:
            kind = "ok"
        errors[kind].append(np.abs(action - expert) * BINS)
    counts[kind] += 1
    families.setdefault(task, collections.Counter())[kind] += 1
print(split, dict(counts))
for kind, errs in errors.items():
    print(f"{kind}: median error in bins (pick_x pick_y place_x place_y)", np.median(errs, 0).round(1))
for task, c in sorted(families.items()):
    print(" ", task, dict(c))
