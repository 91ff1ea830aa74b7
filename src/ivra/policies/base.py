"""The one contract every policy implements: a batch of observations in, a batch of action chunks out.

``predict(observations, instructions, seeds=None, ivra=None) -> (B, H, D)``

* ``observations``: one dict of numpy arrays per row (``{"image": HxWx3 uint8, "wrist_image": ..., "state": ...}``
  as the benchmark gives them), ``instructions``: one string per row;
* ``seeds``: one integer per row, the noise seed of this call (flow-matching noise, sampling). A row's output
  depends only on its own observation, instruction, seed and arm -- never on the other rows or on earlier calls --
  so both arms of a pair draw the same noise and a result does not depend on how episodes are batched. ``None``:
  seed 0 for every row. Deterministic policies ignore it;
* ``ivra``: one IVRA setting per row (a dict of :class:`ivra.IVRAConfig` fields, or None for the baseline); ``None``
  (the argument) keeps the setting of the last ``set_ivra``.

A policy holds no episode state. ``chunk_length`` (H) is how many actions one call predicts (1 for single-step
policies) and ``execute_steps`` how many of them a caller executes before it asks again by default (lerobot's
``n_action_steps``, OpenVLA-OFT's open-loop steps, FLOWER's ``multistep``). The episode state -- the queue of
actions left, the episode's seed, the number of chunks drawn -- lives with the caller: :mod:`ivra.episodes` for
the tabletop rollouts and the LIBERO job, the server's sessions for ``ivra serve``, the client for a remote robot
(as openpi's ``ActionChunkBroker`` does).

:func:`predict_with_arms` calls any policy with one arm per row: natively when the policy declares
``per_sample_ivra = True`` (one forward pass), otherwise one sub-batch per distinct setting through ``set_ivra`` (the policy's own setting restored after).
Single-step policies implement ``act(observations, instructions[, ivra]) -> (B, D)`` and get ``predict`` from
:class:`SingleStep`.

A policy that must know which episode a row belongs to -- the client of a blind A/B server
(:class:`ivra.policies.remote.RemotePolicy`), where the server assigns the arm per episode -- declares
``takes_episodes = True`` and then gets ``episodes=``: one :class:`EpisodeIdentity` per row (the episode's seed and
its key), from :class:`ivra.episodes.EpisodeRunner` through :func:`predict_with_arms`. No other policy's signature
changes: the keyword is passed only to policies that declare it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    name: str
    chunk_length: int
    execute_steps: int

    def predict(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        seeds: Sequence[int] | None = None,
        ivra: Sequence[dict | None] | None = None,
    ) -> np.ndarray:
        """Return a float array of shape (batch, chunk_length, action_dim)."""

    def set_ivra(self, cfg: dict | None) -> None:
        """Attach IVRA with ``cfg`` (fields of :class:`ivra.IVRAConfig`) to the policy's model, or detach it
        (``None``), so that one loaded model serves both arms of an A/B."""


@dataclass(frozen=True)
class EpisodeIdentity:
    """Which episode a row belongs to: its seed and its key (one key per episode: a blind A/B server assigns the
    arm by it). Given to policies that declare ``takes_episodes = True``."""

    seed: int
    key: str


def policy_notes(policy) -> dict:
    """What a policy is when it is not a trained one: ``random_weights`` (why it runs random weights) and
    ``stand_in`` (a stand-in whose actions are no policy's, e.g. ``sim``'s latency model), each a sentence or None.
    A served policy (:class:`ivra.policies.remote.RemotePolicy`) answers from its server's metadata."""
    return {k: getattr(policy, k, None) or None for k in ("random_weights", "stand_in")}


def note_warnings(name: str, notes: dict) -> list[str]:
    """The stderr warnings of :func:`policy_notes` (one line each) for the policy named ``name`` on the command
    line, as every evaluation verb prints them."""
    lines = []
    if notes.get("random_weights"):
        lines.append(
            f"WARNING: policy {name} runs RANDOM WEIGHTS ({notes['random_weights']}): its success rates say "
            "nothing about a trained policy"
        )
    if notes.get("stand_in"):
        lines.append(
            f"WARNING: policy {name} is a STAND-IN ({notes['stand_in']}): its success rates say nothing about a "
            "policy"
        )
    return lines


def ivra_key(cfg: dict | None) -> str | None:
    """A canonical, hashable name of one IVRA setting (None for the baseline)."""
    return None if not cfg else json.dumps(cfg, sort_keys=True)


def group_rows(ivra: Sequence[dict | None]) -> dict[str | None, list[int]]:
    """Rows of a batch grouped by IVRA setting, in first-seen order."""
    groups: dict[str | None, list[int]] = {}
    for i, cfg in enumerate(ivra):
        groups.setdefault(ivra_key(cfg), []).append(i)
    return groups


def chunk_spec(policy) -> tuple[int, int]:
    """``(chunk_length, execute_steps)`` of a policy, checked: 1 <= execute_steps <= chunk_length."""
    h = int(getattr(policy, "chunk_length", 1))
    e = int(getattr(policy, "execute_steps", h))
    if h < 1 or not 1 <= e <= h:
        name = getattr(policy, "name", type(policy).__name__)
        raise ValueError(f"policy {name!r}: execute_steps {e} must be in 1..chunk_length ({h})")
    return h, e


def row_seeds(seeds: Sequence[int] | None, n: int) -> list[int]:
    """The per-row seeds of a call (``None``: 0 for every row), checked against the batch size."""
    if seeds is None:
        return [0] * n
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"seeds has {len(seeds)} entries for a batch of {n} observations")
    return seeds


def check_chunks(policy, chunks: Any, n: int) -> np.ndarray:
    """A policy's answer as a (n, H, D) float array, or a ValueError naming what came back."""
    arr = np.asarray(chunks, dtype=np.float64)
    h = int(getattr(policy, "chunk_length", 1))
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[1] != h:
        name = getattr(policy, "name", type(policy).__name__)
        raise ValueError(
            f"policy {name!r} returned actions of shape {arr.shape}; expected ({n}, {h}, action_dim)"
        )
    return arr


def predict_with_arms(
    policy,
    observations: list[dict[str, Any]],
    instructions: list[str],
    seeds: Sequence[int] | None = None,
    ivra: Sequence[dict | None] | None = None,
    episodes: Sequence[EpisodeIdentity] | None = None,
) -> np.ndarray:
    """``policy.predict`` with one IVRA setting per row (see the module docstring); (B, H, D). ``episodes``: the
    rows' episodes, passed on (``episodes=``) only to a policy that declares ``takes_episodes``."""
    n = len(observations)
    if len(instructions) != n:
        raise ValueError(f"{len(instructions)} instructions for a batch of {n} observations")
    seeds = row_seeds(seeds, n)
    if episodes is not None and len(episodes) != n:
        raise ValueError(f"episodes has {len(episodes)} entries for a batch of {n} observations")
    takes = episodes is not None and getattr(policy, "takes_episodes", False)

    def of(
        rows: list[int] | None = None,
    ) -> dict:  # the episodes keyword of a (sub-)batch, for policies taking it
        if not takes:
            return {}
        return {"episodes": list(episodes) if rows is None else [episodes[i] for i in rows]}

    if ivra is None:
        return check_chunks(policy, policy.predict(observations, instructions, seeds, **of()), n)
    ivra = list(ivra)
    if len(ivra) != n:
        raise ValueError(f"ivra has {len(ivra)} entries for a batch of {n} observations")
    if getattr(policy, "per_sample_ivra", False):
        return check_chunks(policy, policy.predict(observations, instructions, seeds, ivra=ivra, **of()), n)
    out: np.ndarray | None = None
    saved = getattr(policy, "ivra_config", None)  # the setting of the last set_ivra, restored afterwards
    try:
        for rows in group_rows(ivra).values():
            cfg = ivra[rows[0]]
            if hasattr(policy, "set_ivra"):
                policy.set_ivra(cfg)
            elif cfg:
                raise ValueError(
                    f"policy {getattr(policy, 'name', policy)!r} cannot take IVRA settings (no set_ivra)"
                )
            part = check_chunks(
                policy,
                policy.predict(
                    [observations[i] for i in rows],
                    [instructions[i] for i in rows],
                    [seeds[i] for i in rows],
                    **of(rows),
                ),
                len(rows),
            )
            if out is None:
                out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
            out[rows] = part
    finally:
        if hasattr(policy, "set_ivra"):
            policy.set_ivra(saved)
    assert out is not None
    return out


class SingleStep:
    """``predict`` for a policy that answers one action per call with ``act(observations, instructions[, ivra])``
    -> (B, D): chunk length 1, every action executed. Deterministic: the seeds are not used."""

    chunk_length = 1
    execute_steps = 1

    def predict(self, observations, instructions, seeds=None, ivra=None) -> np.ndarray:
        row_seeds(seeds, len(observations))
        actions = (
            self.act(observations, instructions)
            if ivra is None
            else self.act(observations, instructions, ivra=ivra)
        )
        return np.asarray(actions, dtype=np.float64)[:, None, :]


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
            self._arms = SampleArms(self.ivra_target, adapter=self.ivra_adapter)
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
