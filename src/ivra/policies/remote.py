"""The client the evaluation workers use: the chunk contract (:mod:`ivra.policies.base`) over ``ivra serve``.

``RemotePolicy("ws://127.0.0.1:8000")`` is a policy like a local one: ``predict(observations, instructions, seeds,
ivra)`` -> (B, H, D) sends one request per row, pipelined on one connection (the server batches them with every
other client's), each with ``noise_seed`` = the row's seed, and reads the answers (whole chunks) in order. It is
stateless, like every policy: row i's chunk is the in-process policy's chunk for that observation, seed and arm, so
:class:`ivra.episodes.EpisodeRunner` over a RemotePolicy gives the in-process episodes. ``chunk_length`` and
``execute_steps`` are the server's (its metadata: ``action_horizon``, ``execute_steps``). ``set_ivra`` chooses the
arm the following requests carry (None = explicit baseline); before any ``set_ivra`` the server's default arm
applies. ``act(observations, instructions[, ivra])`` -> (B, D) remains for single-step servers (H = 1).

Blind A/B servers assign the arm per episode, so the server must know which episode a request belongs to, which a
noise seed does not say. The policy declares ``takes_episodes``: :class:`ivra.episodes.EpisodeRunner` hands each
call its rows' episodes (:class:`ivra.policies.base.EpisodeIdentity`), and against a blind server each request
carries ``episode_id`` = its episode's key, so episodes stepped in lockstep (even with one seed) keep their own
arms. There a call without ``episodes`` is refused, and so is a row that asks for an arm (the server assigns it).

Faults: when the connection drops (server restart, network), the client reconnects with exponential backoff
(0.1 s doubling to 5 s) for up to ``reconnect_s`` seconds and re-sends the requests of the current call that were
not answered (a request carries its own noise seed, so a resend gets the same chunk); after that it raises
:class:`ServerUnavailable` and the evaluation executor journals the unit as an error and retries it. A text frame
from the server (bad request, policy error) raises :class:`ServerError` at once, naming the problem.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ivra.serve import wire

_UNSET = object()


class ServerError(RuntimeError):
    """The server answered a request with an error (text frame)."""


class ServerUnavailable(ConnectionError):
    """The server could not be reached (again) within the reconnect budget."""


def is_server_url(name: str) -> bool:
    return isinstance(name, str) and name.startswith(("ws://", "wss://"))


class RemotePolicy:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        reconnect_s: float = 60.0,
        recv_timeout_s: float = 600.0,
        max_backoff_s: float = 5.0,
    ):
        if not is_server_url(url):
            raise ValueError(f"policy server URL must start with ws:// or wss://, got {url!r}")
        self.url = url
        self.api_key = api_key
        self.reconnect_s = float(reconnect_s)
        self.recv_timeout_s = float(recv_timeout_s)
        self.max_backoff_s = float(max_backoff_s)
        self._ws = None
        self.metadata: dict = {}
        self._arm: Any = _UNSET
        self.reconnects = 0
        self.last_timing: list[dict] = []
        self._connect(first=True)

    # -- connection ---------------------------------------------------------------------------------------------
    def _open(self):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        ws = connect(
            self.url,
            compression=None,
            max_size=None,
            additional_headers=headers,
            open_timeout=10,
            close_timeout=2,
            legacy=True,
        )
        meta = wire.unpackb(ws.recv(timeout=self.recv_timeout_s))
        return ws, meta

    def _connect(self, first: bool = False) -> None:
        from websockets.exceptions import InvalidStatus

        self.close()
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.1
        last: BaseException | None = None
        while True:
            try:
                self._ws, self.metadata = self._open()
                if not first:
                    self.reconnects += 1
                return
            except InvalidStatus as exc:  # 401 and friends: retrying will not help
                raise ServerUnavailable(f"{self.url} refused the connection: {exc}") from None
            except (OSError, TimeoutError, EOFError) as exc:
                last = exc
            except Exception as exc:  # noqa: BLE001 -- websockets' handshake errors
                last = exc
            if time.monotonic() + delay > deadline:
                raise ServerUnavailable(
                    f"policy server {self.url} unreachable for {self.reconnect_s:.0f}s: {type(last).__name__}: {last}"
                )
            time.sleep(delay)
            delay = min(2 * delay, self.max_backoff_s)

    @property
    def random_weights(self) -> str | None:
        """Why the served policy runs random weights (its server's metadata), or None."""
        note = self.metadata.get("random_weights")
        return f"served by {self.url}: {note}" if note else None

    @property
    def stand_in(self) -> str | None:
        """What the served stand-in is (its server's metadata: e.g. ``sim``'s latency model), or None."""
        note = self.metadata.get("stand_in")
        return f"served by {self.url}: {note}" if note else None

    def close(self) -> None:
        ws = self.__dict__.get("_ws")
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 -- closing a broken connection
                pass
        self._ws = None

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(
                f"a policy served over {self.url} has no model in this process (run it in-process for that)"
            )
        raise AttributeError(name)

    def __del__(self):
        self.close()

    def __getstate__(self):  # a worker process opens its own connection
        state = {k: v for k, v in self.__dict__.items() if k != "_ws"}
        state["_ws"] = None
        return state

    # -- policy interface -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"remote:{self.metadata.get('policy', '?')}@{self.url}"

    @property
    def image_size(self) -> int | None:
        shape = (self.metadata.get("observation") or {}).get("image_shape") or [None]
        return shape[0]

    @property
    def chunk_length(self) -> int:
        """H: the actions per chunk the server answers (its metadata's ``action_horizon``)."""
        return int(self.metadata.get("action_horizon", 1))

    @property
    def execute_steps(self) -> int:
        """How many actions of a chunk the served policy executes by default (the server's metadata)."""
        return int(self.metadata.get("execute_steps", self.chunk_length))

    def set_ivra(self, cfg: dict | None) -> None:
        if cfg and self.metadata.get("ab") == "blind":
            raise ValueError(
                f"{self.url} runs a blind A/B: the server assigns the arm per episode, set_ivra cannot"
            )
        self._arm = dict(cfg) if cfg else None

    def request(
        self,
        obs: dict[str, Any],
        instruction: str,
        ivra: Any = _UNSET,
        noise_seed: int = 0,
        episode: Any = None,
    ) -> dict:
        """The request of one row (an openpi observation map plus ``noise_seed`` and, per mode, the arm or, for a
        blind A/B server, ``episode_id`` = the key of ``episode``, an :class:`ivra.policies.base.EpisodeIdentity`)."""
        msg: dict[str, Any] = {"prompt": instruction, "noise_seed": int(noise_seed)}
        if "image" in obs:
            msg["observation/image"] = np.ascontiguousarray(obs["image"], dtype=np.uint8)
        if "wrist_image" in obs:
            msg["observation/wrist_image"] = np.ascontiguousarray(obs["wrist_image"], dtype=np.uint8)
        if "state" in obs:
            msg["observation/state"] = np.asarray(obs["state"], dtype=np.float32)
        arm = self._arm if ivra is _UNSET else ivra
        if self.metadata.get("ab") == "blind":
            if episode is None:
                raise ValueError(
                    f"{self.url} runs a blind A/B (the server assigns the arm per episode): each row needs its "
                    "episode (predict(..., episodes=...), as ivra.episodes.EpisodeRunner passes them)"
                )
            if arm not in (_UNSET, None):
                raise ValueError(
                    f"{self.url} runs a blind A/B: the server assigns the arm per episode, a request cannot choose "
                    f"one (got {arm!r})"
                )
            msg["episode_id"] = str(episode.key)
        elif arm is not _UNSET:
            msg["ivra"] = arm
        return msg

    def predict(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        seeds=None,
        ivra: list[dict | None] | None = None,
        episodes: list | None = None,
    ) -> np.ndarray:
        """(B, H, D): row i's chunk from the server, seeded ``seeds[i]`` (None: 0), with arm ``ivra[i]`` (None
        for the argument: the arm of :meth:`set_ivra`, else the server's default); ``episodes[i]``: row i's episode
        (:class:`ivra.policies.base.EpisodeIdentity`; a blind A/B server needs it)."""
        from ivra.policies.base import row_seeds

        n = len(observations)
        if len(instructions) != n:
            raise ValueError(f"{len(instructions)} instructions for a batch of {n} observations")
        if ivra is not None and len(ivra) != n:
            raise ValueError(f"ivra has {len(ivra)} entries for a batch of {n} observations")
        if episodes is not None and len(episodes) != n:
            raise ValueError(f"episodes has {len(episodes)} entries for a batch of {n} observations")
        seeds = row_seeds(seeds, n)
        frames = [
            wire.packb(
                {
                    **self.request(
                        o,
                        s,
                        _UNSET if ivra is None else ivra[i],
                        seeds[i],
                        None if episodes is None else episodes[i],
                    ),
                    "more": n - 1 - i,
                }
            )
            for i, (o, s) in enumerate(zip(observations, instructions))
        ]
        replies = self._exchange(frames)
        self.last_timing = [r.get("server_timing", {}) for r in replies]
        return np.stack([np.asarray(r["actions"]) for r in replies])

    def act(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        ivra: list[dict | None] | None = None,
    ) -> np.ndarray:
        """(B, D): one action per row from a single-step server (H = 1; noise seed 0)."""
        if self.chunk_length != 1:
            raise ValueError(
                f"{self.url} answers chunks of {self.chunk_length} actions: use predict (or ivra.episodes."
                "EpisodeRunner), not act"
            )
        return self.predict(observations, instructions, None, ivra)[:, 0]

    per_sample_ivra = True
    takes_episodes = True  # a blind A/B server needs each row's episode (ivra.policies.base.EpisodeIdentity)

    def _exchange(self, frames: list[bytes]) -> list[dict]:
        from websockets.exceptions import ConnectionClosed

        replies: list[dict] = []
        deadline = time.monotonic() + self.reconnect_s
        while True:
            todo = frames[len(replies) :]
            try:
                if self._ws is None:
                    self._connect()
                for f in todo:
                    self._ws.send(f)
                for _ in todo:
                    reply = self._ws.recv(timeout=self.recv_timeout_s)
                    if isinstance(reply, str):
                        raise ServerError(f"policy server {self.url}: {reply}")
                    replies.append(wire.unpackb(reply))
                return replies
            except ServerUnavailable:
                raise
            except (ConnectionClosed, OSError) as exc:
                self.close()
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"lost the policy server {self.url}: {exc}") from None
            except ServerError:
                self.close()  # answers of the remaining pipelined requests would be out of step
                raise
