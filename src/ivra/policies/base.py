"""The one interface every policy implements, whatever the benchmark.

A policy maps a batch of observations (each a dict of numpy arrays, e.g. ``{"image": HxWx3 uint8}``, plus
``{"wrist_image": ...}`` where the benchmark has one) and their instructions to a batch of actions.
Single-episode callers pass lists of length one. ``reset()`` is called at the start of every episode
(with the episode's seed, so stochastic policies draw identical noise in both arms of an A/B).

Per-sample arms: ``act(observations, instructions, ivra=[cfg_or_None, ...])`` gives each row its own IVRA
setting (a dict of :class:`ivra.IVRAConfig` fields, or None for the baseline) inside one batch; ``ivra=None``
(the default) keeps today's behaviour (the setting of the last ``set_ivra``). :func:`act_with_arms` calls any
policy that way: natively when the policy declares ``per_sample_ivra = True``, otherwise by running one
sub-batch per distinct setting through ``set_ivra`` (correct, but not one batch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def ivra_key(cfg: dict | None) -> str | None:
    """A canonical, hashable name of one IVRA setting (None for the baseline)."""
    return None if not cfg else json.dumps(cfg, sort_keys=True)


def group_rows(ivra: Sequence[dict | None]) -> dict[str | None, list[int]]:
    """Rows of a batch grouped by IVRA setting, in first-seen order."""
    groups: dict[str | None, list[int]] = {}
    for i, cfg in enumerate(ivra):
        groups.setdefault(ivra_key(cfg), []).append(i)
    return groups


def act_with_arms(
    policy, observations: list[dict[str, Any]], instructions: list[str], ivra: Sequence[dict | None] | None
) -> np.ndarray:
    """``policy.act`` with one IVRA setting per row (see the module docstring)."""
    if ivra is None:
        return np.asarray(policy.act(observations, instructions))
    ivra = list(ivra)
    if len(ivra) != len(observations):
        raise ValueError(f"ivra has {len(ivra)} entries for a batch of {len(observations)} observations")
    if getattr(policy, "per_sample_ivra", False):
        return np.asarray(policy.act(observations, instructions, ivra=ivra))
    groups = group_rows(ivra)
    out: np.ndarray | None = None
    for rows in groups.values():
        cfg = ivra[rows[0]]
        if hasattr(policy, "set_ivra"):
            policy.set_ivra(cfg)
        elif cfg:
            raise ValueError(
                f"policy {getattr(policy, 'name', policy)!r} cannot take IVRA settings (no set_ivra)"
            )
        part = np.asarray(policy.act([observations[i] for i in rows], [instructions[i] for i in rows]))
        if out is None:
            out = np.empty((len(observations), *part.shape[1:]), dtype=part.dtype)
        out[rows] = part
    if hasattr(policy, "set_ivra"):
        policy.set_ivra(None)
    assert out is not None
    return out


class IVRASwitch:
    """``set_ivra`` / ``ivra_counters`` / per-sample arms for a policy wrapper, in one place.

    A wrapper sets ``self.ivra_target`` (the module IVRA attaches to: the VLM, or a lerobot policy) and, where
    auto-detection is not enough, ``self.ivra_adapter`` (an adapter name or instance)."""

    ivra_target: Any = None
    ivra_adapter: Any = None
    ivra_config: dict | None = None
    ivra_handle: Any = None
    _arms: Any = None

    def set_ivra(self, cfg: dict | None) -> None:
        """Attach IVRA with ``cfg`` (fields of :class:`ivra.IVRAConfig`), or detach it (``None``); one loaded
        model serves both arms of an A/B."""
        cfg = dict(cfg) if cfg else None
        if cfg == self.ivra_config and (cfg is None) == (self.ivra_handle is None):
            return
        if self.ivra_handle is not None:
            self.ivra_handle.detach()
            self.ivra_handle = None
        self.ivra_config = None
        if cfg:
            from ivra.config import IVRAConfig
            from ivra.engine import attach

            self.ivra_handle = attach(self.ivra_target, IVRAConfig(**cfg), adapter=self.ivra_adapter)
            self.ivra_config = cfg

    def ivra_counters(self) -> dict | None:
        """Cumulative counters of the attached handle (passes edited, tokens edited, fallback rows), or None."""
        if self.ivra_handle is None:
            return None
        st = self.ivra_handle.stats
        return {"calls": int(st.calls), "tokens": int(st.tokens), "fallback_rows": int(st.fallback_rows)}

    def act_per_sample(self, observations, instructions, ivra, predict) -> np.ndarray:
        """``predict(observations, instructions)`` with one IVRA setting (or None) per row, in one batch."""
        from ivra.policies.arms import SampleArms

        if len(ivra) != len(observations):
            raise ValueError(f"ivra has {len(ivra)} entries for a batch of {len(observations)} observations")
        if self._arms is None:
            self._arms = SampleArms(self.ivra_target)
        saved = self.ivra_config
        if saved is not None:
            self.set_ivra(None)
        try:
            return self._arms.run(
                ivra, lambda rows: predict([observations[i] for i in rows], [instructions[i] for i in rows])
            )
        finally:
            if saved is not None:
                self.set_ivra(saved)
