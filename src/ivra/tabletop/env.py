"""``TabletopEnv``: the gymnasium environment (pick-and-place primitive actions on a rendered 2D tabletop)."""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .expert import expert_action
from .render import render_scene
from .scene import Container, Obj
from .tasks import Episode, check_task_split, make_episode

MAX_INSTRUCTION_CHARS = 160
CHARSET = string.ascii_lowercase + " "
_OPTION_KEYS = ("task", "split")


class TabletopEnv(gym.Env):
    """2D top-down VIMA-style tabletop.

    Observation ``{"image": HxWx3 uint8, "instruction": str}``; action ``[pick_x, pick_y, place_x, place_y]``
    in [0, 1] image coordinates (x right, y down). A pick grabs the topmost object whose footprint (disc of its
    radius) contains the pick point, and moves its centre to the place point; a pick on nothing does nothing.
    An episode terminates on success (every required object centred in the target container) or on an
    irrecoverable mistake (any other object centred in the target container), and is truncated after
    ``max_steps`` steps (default: required placements + 2).

    ``reset(seed=..., options={"task": name | None, "split": name})``; ``task``/``split`` given to the
    constructor are the defaults for options that are not given.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        resolution: int = 96,
        max_steps: int | None = None,
        task: str | None = None,
        split: str = "train",
        render_mode: str | None = None,
    ):
        check_task_split(task, split)
        if int(resolution) < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']}")
        self.resolution = int(resolution)
        self.max_steps_override = None if max_steps is None else int(max_steps)
        self.default_task = task
        self.default_split = split
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (self.resolution, self.resolution, 3), np.uint8),
                "instruction": spaces.Text(max_length=MAX_INSTRUCTION_CHARS, min_length=1, charset=CHARSET),
            }
        )
        self.action_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.episode: Episode | None = None
        self._image: np.ndarray | None = None
        self._steps = 0
        self._last: dict[str, Any] = {}

    # --- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        bad = sorted(set(options) - set(_OPTION_KEYS))
        if bad:
            raise ValueError(f"unknown reset option(s) {bad}; valid options: {list(_OPTION_KEYS)}")
        task = options.get("task", self.default_task)
        split = options.get("split", self.default_split)
        check_task_split(task, split)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        self.episode = make_episode(task, split, seed)
        self._steps = 0
        self._last = {"picked": None, "picked_required": False, "placed_in": None}
        self._render()
        return self._obs(), self._info(success=False, mistake=False)

    def step(self, action):
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,):
            raise ValueError(
                f"action must have 4 values [pick_x, pick_y, place_x, place_y], got shape {a.shape}"
            )
        px, py, qx, qy = np.clip(np.nan_to_num(a, nan=0.5), 0.0, 1.0)
        ep = self.episode
        self._steps += 1
        obj = self._pick(px, py)
        placed_in = None
        if obj is not None:
            obj.x, obj.y = float(qx), float(qy)
            ep.objects.remove(obj)
            ep.objects.append(obj)  # a moved object ends up on top
            c = self._container_at(obj.x, obj.y)
            placed_in = None if c is None else c.name
        self._last = {
            "picked": None if obj is None else obj.name,
            "picked_required": obj is not None and obj.uid in ep.required,
            "placed_in": placed_in,
        }
        success, mistake = self._status()
        terminated = success or mistake
        truncated = (not terminated) and self._steps >= self.max_steps
        self._render()
        return self._obs(), float(success), terminated, truncated, self._info(success, mistake)

    def render(self):
        return None if self._image is None else self._image.copy()

    # --- helpers ------------------------------------------------------------------------------------
    @property
    def max_steps(self) -> int:
        if self.max_steps_override is not None:
            return self.max_steps_override
        return self.episode.max_steps if self.episode is not None else 0

    def expert_action(self) -> np.ndarray:
        """The scripted expert's next action for the current state (float32[4])."""
        if self.episode is None:
            raise RuntimeError("call reset() before expert_action()")
        return expert_action(self.episode)

    def _pick(self, px: float, py: float) -> Obj | None:
        for o in reversed(self.episode.objects):  # topmost first
            if o.contains(px, py):
                return o
        return None

    def _container_at(self, x: float, y: float) -> Container | None:
        for c in self.episode.containers:
            if c.contains(x, y):
                return c
        return None

    def _status(self) -> tuple[bool, bool]:
        ep = self.episode
        target = ep.container(ep.target)
        inside = {o.uid for o in ep.objects if target.contains(o.x, o.y)}
        required = set(ep.required)
        mistake = bool(inside - required)
        return (not mistake) and required <= inside, mistake

    def _n_done(self) -> int:
        ep = self.episode
        target = ep.container(ep.target)
        return sum(target.contains(ep.obj(u).x, ep.obj(u).y) for u in ep.required)

    def _render(self) -> None:
        self._image = render_scene(self.episode.objects, self.episode.containers, self.resolution)

    def _obs(self) -> dict[str, Any]:
        return {"image": self._image.copy(), "instruction": self.episode.instruction}

    def _info(self, success: bool, mistake: bool) -> dict[str, Any]:
        ep = self.episode
        return {
            "success": bool(success),
            "mistake": bool(mistake),
            "task": ep.task,
            "split": ep.split,
            "seed": ep.seed,
            "instruction": ep.instruction,
            "picked": self._last["picked"],  # name of the object moved by the last step, or None
            "picked_required": self._last["picked_required"],  # it was one of the objects to put away
            "placed_in": self._last["placed_in"],
            "n_required": len(ep.required),
            "n_done": self._n_done(),
            "steps": self._steps,
            "max_steps": self.max_steps,
        }
