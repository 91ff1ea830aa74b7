"""A vla-eval benchmark that needs no simulator: a point on a line, for trying ``vla-eval run`` against
``ivra serve`` in seconds (docs/harnesses.md). It is a stand-in, not a task: success is a fixed function of the
actions the server answers.

The point starts at 0 and each action moves it by ``gain * action[0]``; the episode succeeds when it reaches the
goal within the step limit. The observation is a grey image (``images.agentview``, 32x32) whose level encodes the
remaining distance plus the scene's "lighting" offset, so a policy that reads the image mean (ivra's ``sim``) steers
towards the goal but, for a negative offset, stops short of it. Each scene (goal, offset) is drawn from
``(seed, task_id, episode_idx)``, so two runs with the same config see the same scenes whatever their work order.

Written against vla-eval 0.8.0's ``vla_eval.benchmarks.base.StepBenchmark`` (reset/step/make_obs/
get_step_result, bridged to the async ``Benchmark`` its runners call). A config names it
``benchmark: "vlaeval_line:LineReach"`` with ``examples/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from vla_eval.benchmarks.base import StepBenchmark, StepResult


class LineReach(StepBenchmark):
    render_backends: ClassVar[frozenset[str]] = frozenset({"cpu", "gpu"})  # nothing is rendered

    @classmethod
    def configure_render(cls, mode: str) -> dict[str, str]:
        return {}

    def __init__(
        self, tasks: int = 2, seed: int = 0, gain: float = 0.5, max_offset: float = 0.3, size: int = 32
    ):
        super().__init__()
        if int(tasks) < 1 or not 0 < float(gain) <= 1 or float(max_offset) < 0 or int(size) < 1:
            raise ValueError(
                f"LineReach needs tasks >= 1, 0 < gain <= 1, max_offset >= 0, size >= 1; got tasks={tasks} "
                f"gain={gain} max_offset={max_offset} size={size}"
            )
        self.n_tasks, self.seed, self.gain = int(tasks), int(seed), float(gain)
        self.max_offset, self.size = float(max_offset), int(size)

    def get_tasks(self) -> list[dict[str, Any]]:
        return [
            {"name": f"reach the goal on line {i}", "suite": "line", "task_id": i}
            for i in range(self.n_tasks)
        ]

    def get_metadata(self) -> dict[str, Any]:
        return {"max_steps": 8}

    def reset(self, task: dict[str, Any]) -> float:
        rng = np.random.default_rng([self.seed, int(task["task_id"]), int(task.get("episode_idx", 0))])
        self.goal = float(rng.uniform(0.2, 0.8))
        self.offset = float(rng.uniform(-self.max_offset, self.max_offset))
        self.x = 0.0
        return self.x

    def step(self, action: dict[str, Any]) -> StepResult:
        a = np.asarray(action["actions"], dtype=np.float64).reshape(-1)
        if a.size == 0 or not np.isfinite(a[0]):
            raise ValueError(f"LineReach needs a finite action with at least one component, got {a!r}")
        self.x += self.gain * float(np.clip(a[0], -1.0, 1.0))
        done = self.x >= self.goal
        return StepResult(obs=self.x, reward=float(done), done=done, info={"success": done})

    def make_obs(self, raw_obs: float, task: dict[str, Any]) -> dict[str, Any]:
        signal = float(
            np.clip(self.goal - raw_obs + self.offset, -1.0, 1.0)
        )  # what sim reads: 2 mean/255 - 1
        level = np.uint8(round((signal + 1) / 2 * 255))
        image = np.full((self.size, self.size, 3), level, dtype=np.uint8)
        return {"images": {"agentview": image}, "task_description": task["name"]}

    def get_step_result(self, step_result: StepResult) -> dict[str, Any]:
        return {"success": bool(step_result.info.get("success", False))}
