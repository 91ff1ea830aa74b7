"""Sessions of ``ivra serve``: which episode a request belongs to, and the noise seed of the chunk it asks for.

A policy holds no episode state (:mod:`ivra.policies.base`); the server keeps, per connection, the episode it is
in, that episode's seed and how many chunks it has drawn, as :class:`ivra.episodes.EpisodeRunner` does in process.
The k-th request (k = 0, 1, 2, ...) of an episode seeded ``s`` is answered with the chunk predicted with noise seed
:func:`ivra.episodes.chunk_seed` ``(s, k)``, so a served episode gives the chunks an in-process episode with the
same seed gives (each chunk is one request: the client executes what it wants of it and asks again).

Request keys (all optional):

``episode_id`` (a string or an integer)
    names the episode: a value other than the connection's current one starts a new episode, the same value
    continues it. Without it, requests continue the connection's current episode (the first request of a
    connection starts one): one connection is one episode unless the client says otherwise.
``reset`` (true / false)
    ``true`` starts a new episode with this request, as RoboArena's policy servers take a reset; with an
    ``episode_id`` it starts that episode over (same seed: the same chunks again).
``seed`` (an integer)
    the seed of the episode this request starts. Default: the ``episode_id`` itself if it is an integer,
    ``zlib.crc32`` of its UTF-8 bytes if it is a string, else the connection's episode number (0 for the first
    episode started on the connection, then 1, 2, ... in the order they start). Every connection's first episode is
    seed 0 unless the client says otherwise: give each client its own ``seed`` or ``episode_id`` for independent
    noise. On a request that continues an episode, ``seed`` must equal that episode's seed.
``noise_seed`` (an integer in 0..2**63-1)
    the noise seed of this request alone, outside any episode: the connection's session is neither read nor
    advanced (for stateless callers that seed each chunk themselves, such as :class:`ivra.policies.remote.
    RemotePolicy`). It cannot be combined with ``reset`` or ``seed``; in a blind A/B it needs an ``episode_id``
    (the arm is assigned per episode).

A connection's session is dropped when the connection closes: an ``episode_id`` sent again on a new connection
starts that episode anew (chunk 0). Mistakes raise :class:`SessionError` naming the key and what was expected.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ivra.episodes import chunk_seed

KEYS = ("episode_id", "reset", "seed", "noise_seed")
MAX_NOISE_SEED = 2**63 - 1


class SessionError(ValueError):
    """A session key with a bad value; the message names the key and what was expected."""


def _int(value: Any) -> int | None:
    """An integer (python or numpy, not a bool), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def default_seed(episode_id: str | int) -> int:
    """The seed of an episode named ``episode_id`` when the request gives none: an integer id itself, a string's
    ``zlib.crc32`` of its UTF-8 bytes."""
    if isinstance(episode_id, str):
        return zlib.crc32(episode_id.encode("utf-8"))
    return int(episode_id)


@dataclass(frozen=True)
class SessionKeys:
    """The validated session keys of one request (None: absent)."""

    episode_id: str | int | None = None
    reset: bool = False
    seed: int | None = None
    noise_seed: int | None = None


def parse_keys(msg: dict, blind: bool = False) -> SessionKeys:
    """Validate a request's session keys (see the module docstring)."""
    ep = msg.get("episode_id")
    if ep is not None:
        as_int = _int(ep)
        if as_int is None and not isinstance(ep, str):
            raise SessionError(f"episode_id must be a string or an integer, got {type(ep).__name__} {ep!r}")
        ep = ep if isinstance(ep, str) else as_int
    reset = msg.get("reset", False)
    if reset is None:
        reset = False
    if not isinstance(reset, (bool, np.bool_)):
        raise SessionError(
            f"reset must be true or false (start a new episode), got {type(reset).__name__} {reset!r}"
        )
    seed = msg.get("seed")
    if seed is not None and _int(seed) is None:
        raise SessionError(
            f"seed must be an integer (the seed of the episode this request starts), got {seed!r}"
        )
    noise = msg.get("noise_seed")
    if noise is not None:
        n = _int(noise)
        if n is None or not 0 <= n <= MAX_NOISE_SEED:
            raise SessionError(
                f"noise_seed must be an integer in 0..2**63-1 (this request's noise seed), got {noise!r}"
            )
        if reset or seed is not None:
            raise SessionError(
                "noise_seed seeds one request outside any episode: it cannot be combined with reset or seed "
                f"(got reset={bool(reset)!r}, seed={seed!r})"
            )
        if blind and ep is None:
            raise SessionError(
                "this server runs a blind A/B (arms are assigned per episode): a request with noise_seed needs an "
                "episode_id"
            )
        noise = n
    return SessionKeys(ep, bool(reset), None if seed is None else _int(seed), noise)


@dataclass
class ServedEpisode:
    """One episode of a connection: its id (None: the connection's own), seed, chunks drawn, blind A/B key."""

    key: str
    episode_id: str | int | None
    seed: int
    chunks: int = 0


@dataclass(frozen=True)
class Assignment:
    """What one request gets: its noise seed, the blind A/B key of its episode, and what the reply says."""

    noise_seed: int
    key: str
    info: dict


class Session:
    """The episode state of one connection (``boot`` makes its blind A/B keys unique across server runs)."""

    def __init__(self, conn: int, boot: str = ""):
        self.conn, self.boot = int(conn), boot
        self.started = 0  # episodes started on this connection
        self.episode: ServedEpisode | None = None

    def _key(self, episode_id, n: int) -> str:
        return f"id:{episode_id}" if episode_id is not None else f"conn:{self.boot}:{self.conn}:{n}"

    def assign(self, keys: SessionKeys) -> Assignment:
        """The noise seed of this request; starts or advances the connection's episode (never on an error)."""
        if keys.noise_seed is not None:
            key = self._key(keys.episode_id, 0) if keys.episode_id is not None else self._current_key()
            return Assignment(keys.noise_seed, key, {"noise_seed": keys.noise_seed})
        ep = self.episode
        new = ep is None or keys.reset or (keys.episode_id is not None and keys.episode_id != ep.episode_id)
        if not new and keys.seed is not None and keys.seed != ep.seed:
            raise SessionError(
                f"seed {keys.seed} differs from the seed of the running episode ({ep.seed}): a seed applies when an "
                "episode starts (send reset: true or a new episode_id with it)"
            )
        if new:
            n = self.started
            if keys.seed is not None:
                seed = keys.seed
            elif keys.episode_id is not None:
                seed = default_seed(keys.episode_id)
            else:
                seed = n
            ep = ServedEpisode(self._key(keys.episode_id, n), keys.episode_id, int(seed))
            self.episode = ep
            self.started += 1
        k = ep.chunks
        ep.chunks += 1
        noise = chunk_seed(ep.seed, k)
        return Assignment(
            noise, ep.key, {"episode_id": ep.episode_id, "seed": ep.seed, "chunk": k, "noise_seed": noise}
        )

    def _current_key(self) -> str:
        return self.episode.key if self.episode is not None else self._key(None, self.started)
