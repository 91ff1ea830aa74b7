"""Expert demonstrations: roll the scripted expert through episodes and record every step."""

from __future__ import annotations

from typing import Any

from .env import TabletopEnv


def expert_demos(
    n_episodes: int,
    split: str = "train",
    seed: int = 0,
    resolution: int = 96,
    task: str | None = None,
) -> list[dict[str, Any]]:
    """Roll the expert through ``n_episodes`` episodes (seeds ``seed .. seed + n_episodes - 1``).

    Returns one dict per step: ``{"image": HxWx3 uint8 (observation before the action), "instruction": str,
    "action": np.float32[4], "task": str, "episode": int (seed of the episode), "step": int}``.
    Training data should only ever come from ``split="train"`` (the default).
    """
    env = TabletopEnv(resolution=resolution, split=split, task=task)
    out: list[dict[str, Any]] = []
    for ep_seed in range(int(seed), int(seed) + int(n_episodes)):
        out.extend(expert_episode(env, ep_seed))
    return out


def expert_episode(env: TabletopEnv, ep_seed: int) -> list[dict[str, Any]]:
    """Every step of the expert on ``env``'s episode ``ep_seed``, as :func:`expert_demos` records them (a
    caller can reuse one env for many episodes, in any order: an episode depends only on its seed)."""
    out: list[dict[str, Any]] = []
    obs, info = env.reset(seed=int(ep_seed))
    for step in range(env.max_steps):
        action = env.expert_action()
        out.append(
            {
                "image": obs["image"],
                "instruction": obs["instruction"],
                "action": action,
                "task": info["task"],
                "episode": int(ep_seed),
                "step": step,
            }
        )
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return out
