"""``ivra.tabletop``: a built-in 2D top-down VIMA-style tabletop benchmark with a gymnasium API.

Importing this package registers the environment id ``ivra/Tabletop-v0``::

    import gymnasium as gym
    import ivra.tabletop

    env = gym.make("ivra/Tabletop-v0", resolution=96)
    obs, info = env.reset(seed=0, options={"task": "pick_place", "split": "train"})
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())

See :mod:`ivra.tabletop.tasks` for the task families and how each split differs.
"""

from __future__ import annotations

import gymnasium

from .dataset import expert_demos
from .env import TabletopEnv
from .expert import expert_action
from .render import draw_action, render_scene
from .scene import COLORS, NOVEL_COLOR, NOVEL_SHAPE, SHAPES, SIZES, Container, Obj
from .tasks import HELD_OUT_COMBOS, SPLITS, TASKS, Episode, make_episode, vocabulary

ENV_ID = "ivra/Tabletop-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="ivra.tabletop.env:TabletopEnv")

__all__ = [
    "COLORS",
    "ENV_ID",
    "HELD_OUT_COMBOS",
    "NOVEL_COLOR",
    "NOVEL_SHAPE",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TASKS",
    "Container",
    "Episode",
    "Obj",
    "TabletopEnv",
    "draw_action",
    "expert_action",
    "expert_demos",
    "make_episode",
    "render_scene",
    "vocabulary",
]
