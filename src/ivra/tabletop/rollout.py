"""Batched closed-loop episodes on the tabletop for any :class:`ivra.policies.Policy`.

All episodes of a batch advance in lockstep (one batched ``act`` per step), and each episode is decided by its
``(split, seed)`` alone, so two arms given the same list see identical scenes. A malformed action (NaN row, e.g.
unparsable text) ends that episode as a failure, flagged ``malformed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ivra.tabletop.env import TabletopEnv


def rollout(
    policy, split: str, seeds: Sequence[int], resolution: int = 96, task: str | None = None
) -> list[dict]:
    envs = [TabletopEnv(resolution=resolution, split=split, task=task) for _ in seeds]
    obs, results = [], []
    for env, seed in zip(envs, seeds):
        o, info = env.reset(seed=int(seed))
        obs.append(o)
        results.append(
            {
                "split": split,
                "seed": int(seed),
                "task": info["task"],
                "success": False,
                "steps": 0,
                "malformed": False,
                "actions": [],
            }
        )
    policy.reset(seed=int(seeds[0]) if len(seeds) else None)
    active = list(range(len(envs)))
    while active:
        actions = np.asarray(policy.act([obs[i] for i in active], [obs[i]["instruction"] for i in active]))
        still = []
        for row, i in zip(actions, active):
            res = results[i]
            if not np.all(np.isfinite(row)):
                res["malformed"] = True
                continue
            res["actions"].append([round(float(v), 4) for v in row])
            obs[i], _, terminated, truncated, info = envs[i].step(row)
            res["steps"] += 1
            res["success"] = bool(info["success"])
            if not (terminated or truncated):
                still.append(i)
        active = still
    return results
