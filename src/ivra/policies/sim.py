"""A stand-in for a GPU policy with a documented latency model (throughput benchmarks, server tests)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class SimLatencyPolicy:
    """Simulates a GPU policy's latency: one call on a batch of B costs ``fixed_ms + per_sample_ms * B``
    milliseconds of wall time (a sleep: no CPU is used, as on a GPU), then returns a deterministic action per
    observation (a function of the image's mean and the instruction's length, so answers can be checked).

    The defaults (fixed 40 ms, 2 ms per sample) are of the order of a 7B VLA's single-step decode on one GPU
    (launch and weight-streaming costs dominate at small batch); they are parameters, not measurements.
    """

    name = "sim"
    per_sample_ivra = True
    #: not a policy (:func:`ivra.policies.base.policy_notes`)
    stand_in = (
        "sim: a latency model standing in for a GPU policy; its actions are a fixed function of the image mean and "
        "the instruction length, not a policy's"
    )

    def __init__(
        self,
        fixed_ms: float = 40.0,
        per_sample_ms: float = 2.0,
        action_dim: int = 7,
        chunk: int = 1,
        execute: int | None = None,
    ):
        if int(chunk) < 1 or not 1 <= int(execute or chunk) <= int(chunk):
            raise ValueError(f"need chunk >= 1 and execute in 1..chunk, got chunk={chunk} execute={execute}")
        #: a chunk policy (chunk > 1) answers ``chunk`` actions per call, each a function of the call's seed too
        self.chunk_length, self.execute_steps = int(chunk), int(execute or chunk)
        if fixed_ms < 0 or per_sample_ms < 0:
            raise ValueError(f"latencies must be >= 0, got fixed_ms={fixed_ms} per_sample_ms={per_sample_ms}")
        self.fixed_ms, self.per_sample_ms, self.action_dim = (
            float(fixed_ms),
            float(per_sample_ms),
            int(action_dim),
        )
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.ivra_config: dict | None = None

    def set_ivra(self, cfg: dict | None) -> None:
        self.ivra_config = dict(cfg) if cfg else None

    @staticmethod
    def expected(
        observation: dict, instruction: str, action_dim: int = 7, ivra: dict | None = None
    ) -> np.ndarray:
        img = np.asarray(observation["image"], dtype=np.float64)
        base = (img.mean() / 255.0) * 2 - 1
        a = np.full(action_dim, base) + 0.001 * len(instruction) * np.arange(action_dim)
        if ivra:  # a visible, deterministic difference between arms
            a = a + float(ivra.get("lam", 0.0))
        return a

    @classmethod
    def expected_chunk(
        cls,
        observation: dict,
        instruction: str,
        action_dim: int = 7,
        ivra: dict | None = None,
        seed: int = 0,
        chunk: int = 1,
    ) -> np.ndarray:
        """The (chunk, action_dim) answer: step t of the chunk is ``expected + 0.01 t + (seed mod 1000) 1e-4``
        (a chunk of 1 does not depend on the seed)."""
        a = cls.expected(observation, instruction, action_dim, ivra)
        if chunk == 1:
            return a[None]
        return a[None] + 0.01 * np.arange(chunk)[:, None] + (int(seed) % 1000) * 1e-4

    def predict(self, observations: list[dict[str, Any]], instructions: list[str], seeds=None, ivra=None):
        from ivra.policies.base import row_seeds

        n = len(observations)
        seeds = row_seeds(seeds, n)
        time.sleep((self.fixed_ms + self.per_sample_ms * n) / 1000.0)
        self.calls += 1
        self.batch_sizes.append(n)
        arms = ivra if ivra is not None else [self.ivra_config] * n
        return np.stack(
            [
                self.expected_chunk(o, s, self.action_dim, c, seed, self.chunk_length)
                for o, s, c, seed in zip(observations, instructions, arms, seeds)
            ]
        )

    def act(self, observations: list[dict[str, Any]], instructions: list[str], ivra=None) -> np.ndarray:
        """One action per row (the first of each chunk, seed 0)."""
        return self.predict(observations, instructions, None, ivra)[:, 0]
