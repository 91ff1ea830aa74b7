"""Episode state for stateless chunk policies: one queue, seed and step count per episode, K episodes in lockstep.

A policy (:mod:`ivra.policies.base`) predicts chunks of H actions and remembers nothing; the caller keeps, per
episode, the actions left to execute, the episode's seed and how many chunks it has drawn, as openpi's
``ActionChunkBroker`` does on the client side. :class:`EpisodeRunner` is that caller for the tabletop rollouts and
the LIBERO job::

    runner = EpisodeRunner(policy)                      # execute_steps: the policy's default, or execute=
    eps = [runner.start(seed=s, ivra=arm) for s, arm in ...]
    actions = runner.step(eps, observations, instructions)   # (len(eps), D): one action per episode

``step`` makes one batched ``predict`` call for the episodes whose queue is empty (the others pop their queue) and
returns one action per episode; a policy that declares ``takes_episodes`` also gets each row's episode
(:class:`ivra.policies.base.EpisodeIdentity`: its seed and its key, unique per episode), as a blind A/B server's
client needs. The noise of an episode's k-th chunk is seeded by ``chunk_seed(seed, k)``, a
function of the episode alone: an episode gives the same actions alone, in any batch and in either arm of a pair,
and the server's sessions (``ivra serve``) use the same seeds, so a served episode reproduces an in-process one.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ivra.policies.base import EpisodeIdentity, chunk_spec, predict_with_arms


def chunk_seed(episode_seed: int, index: int) -> int:
    """The noise seed of chunk ``index`` (0, 1, ...) of the episode seeded ``episode_seed``: a 63-bit integer
    (numpy's SeedSequence of the pair), distinct for distinct pairs."""
    if int(index) < 0:
        raise ValueError(f"chunk index must be >= 0, got {index}")
    seq = np.random.SeedSequence([int(episode_seed) & 0xFFFFFFFFFFFFFFFF, int(index)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class Episode:
    """One episode's state: its seed, its IVRA arm, the actions left of its last chunk, chunks drawn, steps, and
    its key (unique per episode: :meth:`EpisodeRunner.start` gives one)."""

    seed: int
    ivra: dict | None = None
    execute: int = 1
    queue: deque = field(default_factory=deque)
    chunks: int = 0
    steps: int = 0
    key: str = ""

    @property
    def identity(self) -> EpisodeIdentity:
        """Which episode this is (its seed and key), for policies that take ``episodes=``."""
        return EpisodeIdentity(self.seed, self.key or f"seed:{self.seed}")

    def next_seed(self) -> int:
        return chunk_seed(self.seed, self.chunks)

    @property
    def needs_chunk(self) -> bool:
        """True when the queue is empty: the next action needs a new chunk (seeded :meth:`next_seed`)."""
        return not self.queue

    def feed(self, chunk: np.ndarray) -> None:
        """Queue the first ``execute`` actions of a chunk predicted with :meth:`next_seed`; counts the chunk."""
        self.queue.extend(np.asarray(chunk)[: self.execute])
        self.chunks += 1

    def pop(self) -> np.ndarray:
        """The next action to execute (one step of the episode)."""
        action = self.queue.popleft()
        self.steps += 1
        return action


class EpisodeRunner:
    """Steps episodes of one policy, batching the chunk predictions of the episodes that need one.

    ``execute``: actions executed per chunk (default: the policy's ``execute_steps``; at most its chunk length).
    ``arms``: pass each episode's IVRA arm to the policy (per row); False leaves the policy's own setting (the
    last ``set_ivra``) in place, for callers that switch arms on the policy themselves.
    ``calls`` and ``rows`` count the policy calls made and the rows they carried (for throughput reports)."""

    def __init__(self, policy: Any, execute: int | None = None, arms: bool = True):
        self.policy = policy
        self.arms = bool(arms)
        self.chunk_length, default = chunk_spec(policy)
        self.execute = default if execute is None else int(execute)
        if not 1 <= self.execute <= self.chunk_length:
            raise ValueError(
                f"execute must be in 1..{self.chunk_length} (the chunk length of "
                f"{getattr(policy, 'name', type(policy).__name__)!r}), got {execute}"
            )
        self.calls = 0
        self.rows = 0
        self._uid = uuid.uuid4().hex[:12]
        self._started = 0

    def start(self, seed: int, ivra: dict | None = None, key: str | None = None) -> Episode:
        """A new episode: empty queue, seeded noise, the arm ``ivra`` (None: baseline). ``key`` names it (default:
        ``"<runner>/<n>:<seed>"``, n counting this runner's episodes: unique across runners and processes)."""
        n, self._started = self._started, self._started + 1
        key = f"{self._uid}/{n}:{int(seed)}" if key is None else str(key)
        return Episode(seed=int(seed), ivra=dict(ivra) if ivra else None, execute=self.execute, key=key)

    def step(
        self, episodes: Sequence[Episode], observations: list[dict[str, Any]], instructions: list[str]
    ) -> np.ndarray:
        """One action per episode, shape (len(episodes), action_dim)."""
        n = len(episodes)
        if len(observations) != n or len(instructions) != n:
            raise ValueError(
                f"{n} episodes, {len(observations)} observations and {len(instructions)} instructions"
            )
        need = [i for i, ep in enumerate(episodes) if ep.needs_chunk]
        if need:
            chunks = predict_with_arms(
                self.policy,
                [observations[i] for i in need],
                [instructions[i] for i in need],
                [episodes[i].next_seed() for i in need],
                [episodes[i].ivra for i in need] if self.arms else None,
                [episodes[i].identity for i in need],
            )
            self.calls += 1
            self.rows += len(need)
            for row, i in enumerate(need):
                episodes[i].feed(chunks[row])
        return np.stack([ep.pop() for ep in episodes])
