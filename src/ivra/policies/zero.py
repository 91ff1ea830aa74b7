"""The zero-action policy: no motion, gripper open. The floor of any benchmark and a harness check."""

from __future__ import annotations

from typing import Any

import numpy as np

from ivra.policies.base import SingleStep


class ZeroPolicy(SingleStep):
    """Always returns ``[0, ..., 0, gripper]`` (LIBERO/robosuite: gripper -1 = open, +1 = closed)."""

    name = "zero"

    def __init__(self, action_dim: int = 7, gripper: float = -1.0):
        self.action_dim = int(action_dim)
        self.gripper = float(gripper)
        self.ivra_config: dict | None = None

    def set_ivra(self, cfg: dict | None) -> None:
        """Accepted and ignored (there is no model): a zero-policy A/B has identical arms by construction."""
        self.ivra_config = dict(cfg) if cfg else None

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        out = np.zeros((len(observations), self.action_dim), dtype=np.float64)
        out[:, -1] = self.gripper
        return out
