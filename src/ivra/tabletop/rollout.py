"""Batched closed-loop episodes on the tabletop for any :class:`ivra.policies.Policy`.

All episodes of a batch advance in lockstep through one :class:`ivra.episodes.EpisodeRunner` (one batched
``predict`` per step for the episodes whose action queue is empty), and each episode is decided by its
``(split, seed)`` alone -- its scene and its policy noise -- so two arms given the same list see identical scenes
and an episode gives the same result in any batch. A non-finite action (a NaN row, e.g. unparsable text) is never
sent to the environment: it ends that episode as a failure, flagged ``malformed``, with an ``error`` naming the step
and what the policy's NaN means (its ``nonfinite_means``); the A/B tables count such episodes per arm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ivra.episodes import EpisodeRunner
from ivra.tabletop.env import TabletopEnv


def rollout(
    policy,
    split: str,
    seeds: Sequence[int],
    resolution: int = 96,
    task: str | None = None,
    ivra: dict | None = None,
    execute: int | None = None,
) -> list[dict]:
    """Run one episode per seed in lockstep; ``ivra``: the arm of every episode (None: the policy's current
    setting, as ``set_ivra`` left it); ``execute``: actions executed per chunk (default: the policy's)."""
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
    runner = EpisodeRunner(policy, execute=execute, arms=ivra is not None)
    episodes = [runner.start(int(seed), ivra) for seed in seeds]
    active = list(range(len(envs)))
    while active:
        actions = runner.step(
            [episodes[i] for i in active], [obs[i] for i in active], [obs[i]["instruction"] for i in active]
        )
        still = []
        for row, i in zip(actions, active):
            res = results[i]
            if not np.all(np.isfinite(row)):
                res["malformed"] = True
                res["error"] = (
                    f"non-finite action at step {res['steps']}: "
                    f"{getattr(policy, 'nonfinite_means', None) or 'the policy answered NaN or inf'}"
                )
                continue
            res["actions"].append([round(float(v), 4) for v in row])
            obs[i], _, terminated, truncated, info = envs[i].step(row)
            res["steps"] += 1
            res["success"] = bool(info["success"])
            if not (terminated or truncated):
                still.append(i)
        active = still
    return results
