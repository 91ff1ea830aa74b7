"""The one interface every policy implements, whatever the benchmark.

A policy maps a batch of observations (each a dict of numpy arrays, e.g. ``{"image": HxWx3 uint8}``, plus
``{"wrist_image": ...}`` where the benchmark has one) and their instructions to a batch of actions.
Single-episode callers pass lists of length one. ``reset()`` is called at the start of every episode
(with the episode's seed, so stochastic policies draw identical noise in both arms of an A/B).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    name: str

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; ``seed`` fixes any sampling noise for the episode."""

    def act(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        """Return a float array of shape (batch, action_dim)."""

    def set_ivra(self, cfg: dict | None) -> None:
        """Attach IVRA with ``cfg`` (fields of :class:`ivra.IVRAConfig`) to the policy's model, or detach it
        (``None``), so that one loaded model serves both arms of an A/B."""
