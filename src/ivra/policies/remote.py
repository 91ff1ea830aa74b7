"""The client the evaluation workers use: the common policy interface over ``ivra serve``'s websocket.

``RemotePolicy("ws://127.0.0.1:8000")`` behaves like a local policy (``reset(seed)``, ``act(observations,
instructions[, ivra=[...]])``, ``set_ivra(cfg)``): ``act`` sends one request per observation, pipelined on one
connection (the server batches them with every other client's), and reads the answers in order. ``set_ivra``
chooses the arm the following requests carry (None = explicit baseline); before any ``set_ivra`` the server's
default arm applies.

Faults: when the connection drops (server restart, network), the client reconnects with exponential backoff
(0.1 s doubling to 5 s) for up to ``reconnect_s`` seconds and re-sends the requests of the current ``act`` that
were not answered (the policy is a function of the observation, so a resend is safe); after that it raises
:class:`ServerUnavailable` and the evaluation executor journals the unit as an error and retries it. A text
frame from the server (bad request, policy error) raises :class:`ServerError` at once, naming the problem.
"""

from __future__ import annotations

import time
import uuid
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
        self._client_id = uuid.uuid4().hex[:12]
        self._episode = 0
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

    def reset(self, seed: int | None = None) -> None:
        """A new episode: a blind A/B server assigns the next episode's arm from the next request on."""
        self._episode += 1

    def set_ivra(self, cfg: dict | None) -> None:
        if cfg and self.metadata.get("ab") == "blind":
            raise ValueError(
                f"{self.url} runs a blind A/B: the server assigns the arm per episode, set_ivra cannot"
            )
        self._arm = dict(cfg) if cfg else None

    def request(self, obs: dict[str, Any], instruction: str, ivra: Any = _UNSET) -> dict:
        msg: dict[str, Any] = {"prompt": instruction}
        if "image" in obs:
            msg["observation/image"] = np.ascontiguousarray(obs["image"], dtype=np.uint8)
        if "wrist_image" in obs:
            msg["observation/wrist_image"] = np.ascontiguousarray(obs["wrist_image"], dtype=np.uint8)
        if "state" in obs:
            msg["observation/state"] = np.asarray(obs["state"], dtype=np.float32)
        arm = self._arm if ivra is _UNSET else ivra
        if self.metadata.get("ab") == "blind":
            msg["episode_id"] = f"{self._client_id}/{self._episode}"
        elif arm is not _UNSET:
            msg["ivra"] = arm
        return msg

    def act(
        self,
        observations: list[dict[str, Any]],
        instructions: list[str],
        ivra: list[dict | None] | None = None,
    ) -> np.ndarray:
        if ivra is not None and len(ivra) != len(observations):
            raise ValueError(f"ivra has {len(ivra)} entries for a batch of {len(observations)} observations")
        n = len(observations)
        frames = [
            wire.packb({**self.request(o, s, _UNSET if ivra is None else ivra[i]), "more": n - 1 - i})
            for i, (o, s) in enumerate(zip(observations, instructions))
        ]
        replies = self._exchange(frames)
        self.last_timing = [r.get("server_timing", {}) for r in replies]
        return np.stack([np.asarray(r["actions"])[0] for r in replies])

    per_sample_ivra = True

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
