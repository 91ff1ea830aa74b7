"""The policy server: openpi's websocket protocol, whole action chunks, sessions, dynamic batching, per-sample arms.

Protocol (what the PyPI ``openpi-client`` ``WebsocketClientPolicy`` speaks):

* on connect the server sends one binary frame: the metadata map (policy name, observation spec, action
  dimension, ``action_horizon`` H = the policy's chunk length, ``execute_steps`` = how many of a chunk its caller
  executes by default, default arm, batching limits, A/B mode);
* then each binary frame from the client is one observation map, answered by one binary frame
  ``{"actions": (H, action_dim) array, "server_timing": {...}, "episode": {...}}``, in order: the whole chunk, as
  openpi's servers answer (a single-step policy answers (1, action_dim)); the client executes what it wants of it
  (openpi's LIBERO example: the first ``replan_steps``). A client may send several requests before reading
  (pipelining); answers still come back in request order;
* a request the server cannot serve (not msgpack, missing keys, wrong image shape or dtype, bad IVRA settings, bad
  session keys) is answered with a *text* frame naming the problem; the connection stays open and every other
  client is unaffected;
* ``GET /healthz`` answers 200 ``OK`` (no websocket upgrade); a frame larger than ``max_payload_bytes`` closes
  that connection with code 1009 (websockets' size limit);
* a non-loopback bind needs an API key; the client then sends ``Authorization: Api-Key <key>`` (as
  ``openpi-client`` does with ``api_key=``), anything else is refused with 401 before the upgrade.

Observation keys follow openpi's LIBERO example: ``observation/image`` (HxWx3 uint8), ``observation/wrist_image``,
``observation/state``, ``prompt`` (str). Extensions: ``ivra`` (a map of :class:`ivra.IVRAConfig` fields, or nil
for the baseline; absent = the server's default arm), ``more`` (a pipelining client's count of requests that follow
this one at once, so that the batcher waits for them) and the session keys of :mod:`ivra.serve.sessions`
(``episode_id``, ``reset``, ``seed``, ``noise_seed``): each request of an episode is its next chunk, seeded as
:class:`ivra.episodes.EpisodeRunner` seeds it, so a served episode reproduces an in-process one.

Batching: requests from all connections go into one queue; the batch loop takes the first waiting request and
gathers more until ``max_batch`` requests or ``max_wait_ms`` after the first one arrived (or after the previous
call ended, if that was later: requests that queued during a call wait a little for the clients that call just
answered), then makes ONE ``predict`` call -- one denoising loop for a flow-matching policy, each row with its own
noise seed and IVRA arm (:func:`ivra.policies.base.predict_with_arms`) -- in one worker thread (one model copy, one
call at a time) while the next batch gathers. A batch is sent at once when every connected client already has a
request in it and none announced more (nobody else could join), so a lone client never waits ``max_wait_ms``, and
clients that drift out of step are pulled back into one batch. If a batched call fails, its rows are retried one by
one, so a request the policy cannot take gets the error and the others their chunks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ivra.serve import wire
from ivra.serve.policies import ObsSpec
from ivra.serve.sessions import Session, SessionError, parse_keys

log = logging.getLogger("ivra.serve")

IMAGE_KEYS = {"observation/image": "image", "observation/wrist_image": "wrist_image"}
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
PROTOCOL = "openpi-websocket-msgpack-numpy"
#: websocket paths: openpi's clients connect to the root; the other protocols to their own path
OPENPI_PATHS = ("", "/")
PROTOCOL_PATHS = {"/vla-eval": "vla-eval", "/roboarena": "roboarena"}
#: RoboArena's action spaces (tests/fixtures/roboarena/protocol.json)
ROBOARENA_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")
#: what GET /config may change (vla-eval's model servers take the same two keys)
CONFIG_KEYS = {"max_batch_size": ("max_batch", int, 1.0), "max_wait_time": ("max_wait_ms", float, 1000.0)}


class RequestError(ValueError):
    """A request that cannot be served; its message goes back to the client as a text frame."""


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_payload_bytes: int = 8 * 2**20
    api_key: str | None = None
    default_ivra: dict | None = None
    max_pending_per_client: int = 256
    #: vla-eval episodes: the seed of episode (suite, task_id, episode_idx) is episode_seed + episode_idx
    episode_seed: int = 0
    #: RoboArena: the action space announced (None: joint_position for 8-D actions, cartesian_velocity for 7-D)
    roboarena_action_space: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_payload_bytes < 1024:
            raise ValueError(f"max_payload_bytes must be >= 1024, got {self.max_payload_bytes}")
        if self.roboarena_action_space is not None and self.roboarena_action_space not in ROBOARENA_SPACES:
            raise ValueError(
                f"RoboArena action space {self.roboarena_action_space!r}: expected one of {', '.join(ROBOARENA_SPACES)}"
            )
        check_bind(self.host, self.api_key)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"refusing to bind to non-loopback host {host!r} without an API key: set IVRA_SERVE_API_KEY or "
            "--api-key-file (clients send 'Authorization: Api-Key <key>')"
        )


@dataclass
class Request:
    obs: dict[str, Any]
    instruction: str
    ivra: dict | None
    arm: str | None = None  # blind A/B: the hidden arm name
    episode: str | None = None  # blind A/B key of the request's episode
    seed: int = 0  # the noise seed of this request's chunk
    info: dict = field(default_factory=dict)  # the episode part of the reply (id, seed, chunk, noise seed)
    conn: int = -1
    more: int = 0  # further requests this client announced right behind this one (pipelining)
    t_arrival: float = field(default_factory=time.perf_counter)
    future: asyncio.Future | None = None
    #: builds the reply frame from the chunk (H, action_dim) and the timing; None: openpi's reply (the whole chunk)
    encode: Callable[[Request, np.ndarray, dict], Any] | None = None


def openpi_reply(req: Request, chunk: np.ndarray, timing: dict) -> bytes:
    """openpi's answer: the whole chunk (H, action_dim), as openpi's servers answer, with timing and episode."""
    return wire.packb({"actions": chunk, "server_timing": timing, "episode": req.info})


def _check_image(key: str, value: Any, shape: tuple) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise RequestError(f"{key} must be a numpy array (HxWx3 uint8), got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise RequestError(f"{key} must have dtype uint8, got {value.dtype}")
    want = tuple(shape)
    if value.ndim != 3 or any(w is not None and w != g for w, g in zip(want, value.shape)):
        pretty = "x".join("H" if w is None else str(w) for w in want)
        raise RequestError(f"{key} has shape {tuple(value.shape)}, expected {pretty}")
    return value


def normalise_ivra(value: Any) -> dict | None:
    """A request's ``ivra`` entry -> a full, validated settings dict, or None (baseline)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(f"ivra must be a map of IVRA settings or nil, got {type(value).__name__}")
    from ivra.config import IVRAConfig

    try:
        return IVRAConfig(
            **{str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in value.items()}
        ).to_dict()
    except (TypeError, ValueError) as exc:
        raise RequestError(f"ivra: {exc}") from None


def decode_map(frame: bytes | str, what: str) -> dict:
    """A request frame decoded to its map (any wire protocol's); ``what`` says what the map should be."""
    if isinstance(frame, str):
        raise RequestError("expected a binary msgpack frame, got a text frame")
    try:
        msg = wire.unpackb(frame)
    except wire.WireError as exc:
        raise RequestError(str(exc)) from None
    if not isinstance(msg, dict):
        raise RequestError(f"a request must be {what}, got {type(msg).__name__}")
    return msg


class PolicyServer:
    """Serve one policy object to many websocket clients (see the module docstring)."""

    def __init__(self, policy, options: ServeOptions | None = None, spec: ObsSpec | None = None, blind=None):
        self.policy = policy
        self.options = options or ServeOptions()
        self.spec = spec or ObsSpec()
        self.blind = blind
        if self.blind is not None and self.options.default_ivra is not None:
            raise ValueError("a blind A/B server takes its arms from the A/B settings, not --ivra")
        self.default_ivra = normalise_ivra(self.options.default_ivra) if self.options.default_ivra else None
        self.stats = {
            "requests": 0,
            "errors": 0,
            "nonfinite": 0,  # requests refused because the policy answered NaN or inf (never sent)
            "batches": 0,
            "batch_sizes": {},
            "policy_s": 0.0,
            "clients": 0,
            "arms": {},  # requests per arm: "baseline" or "layer=..,lam=.." (not in blind mode: arms stay hidden)
        }
        self._conn_ids = itertools.count()
        self._boot = uuid.uuid4().hex[:8]  # blind A/B keys of connection episodes stay unique across restarts
        self._sessions: dict[int, Session] = {}  # connection -> its episode state (dropped when it closes)
        self._open: set[int] = set()  # connections now open
        self._more: dict[int, int] = {}  # connection -> requests it announced and has not sent yet
        self._queue: asyncio.Queue[Request] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivra-policy")
        self._server = None
        self._batch_task: asyncio.Task | None = None
        self.port: int | None = None

    # -- metadata and validation -----------------------------------------------------------------------------
    def chunk_spec(self) -> tuple[int, int]:
        """(chunk length H, default executed steps) of the served policy."""
        from ivra.policies.base import chunk_spec

        return chunk_spec(self.policy)

    def metadata(self) -> dict:
        from ivra import __version__
        from ivra.policies.base import policy_notes
        from ivra.serve.sessions import KEYS

        horizon, execute = self.chunk_spec()
        meta = {
            "protocol": PROTOCOL,
            "server": f"ivra {__version__}",
            "policy": getattr(self.policy, "name", type(self.policy).__name__),
            "observation": self.spec.to_dict(),
            "observation_keys": [*IMAGE_KEYS, STATE_KEY, PROMPT_KEY],
            "action_dim": self.spec.action_dim,
            "action_horizon": horizon,
            "execute_steps": execute,
            "session_keys": list(KEYS),
            "max_batch": self.options.max_batch,
            "max_wait_ms": self.options.max_wait_ms,
            "max_payload_bytes": self.options.max_payload_bytes,
            "ab": None if self.blind is None else "blind",
            **policy_notes(self.policy),  # random_weights, stand_in: what a client's report must say
        }
        if self.blind is None:
            meta["default_ivra"] = self.default_ivra
        return meta

    def parse(self, frame: bytes | str, conn_id: int, session: Session | None = None) -> Request:
        """One request, validated; ``session`` (the connection's) gives its episode and noise seed."""
        msg = decode_map(frame, "a map of observation keys")
        obs, prompt = self.observation(msg)
        more = msg.get("more", 0)
        if isinstance(more, bool) or not isinstance(more, (int, np.integer)) or more < 0:
            raise RequestError(f"more must be an integer >= 0 (requests that follow this one), got {more!r}")
        if self.blind is not None and "ivra" in msg:
            raise RequestError(
                "this server runs a blind A/B: the arm is assigned per episode, a request may not set 'ivra'"
            )
        ivra_cfg = normalise_ivra(msg["ivra"]) if "ivra" in msg else self.default_ivra
        if session is None:
            session = Session(conn_id, self._boot)
        try:  # last: a request refused above neither starts nor advances an episode
            got = session.assign(parse_keys(msg, blind=self.blind is not None))
        except SessionError as exc:
            raise RequestError(str(exc)) from None
        req = Request(obs, prompt, ivra_cfg, seed=got.noise_seed, info=got.info, more=int(more))
        if self.blind is not None:
            req.arm, req.ivra = self.blind.arm_for(got.key)
            req.episode = got.key
        return req

    def observation(self, msg: dict) -> tuple[dict[str, Any], str]:
        """The policy's observation and instruction from a map in openpi's keys (``observation/image``,
        ``observation/wrist_image``, ``observation/state``, ``prompt``), checked against the served policy's spec;
        the other protocols map their keys to these first."""
        obs: dict[str, Any] = {}
        for key, ours in IMAGE_KEYS.items():
            if key in msg:
                obs[ours] = _check_image(
                    key, msg[key], self.spec.image_shape if ours == "image" else (None, None, 3)
                )
        if self.spec.image_required and "image" not in obs:
            raise RequestError(f"missing key 'observation/image' (got keys {sorted(map(str, msg))})")
        for key in self.spec.requires:
            if key not in msg:
                raise RequestError(
                    f"missing key {key!r}: policy {self.metadata_policy()} needs it (got keys {sorted(map(str, msg))})"
                )
        if STATE_KEY in msg:
            state = msg[STATE_KEY]
            if not isinstance(state, np.ndarray) or state.dtype.kind not in "fiu" or state.ndim != 1:
                raise RequestError(
                    f"{STATE_KEY} must be a 1-D numeric array, got {getattr(state, 'shape', state)!r}"
                )
            if self.spec.state_dims and state.shape[0] not in self.spec.state_dims:
                raise RequestError(
                    f"{STATE_KEY} has {state.shape[0]} entries, expected "
                    f"{' or '.join(map(str, self.spec.state_dims))} for policy {self.metadata_policy()}"
                )
            obs["state"] = state.astype(np.float32)
        prompt = msg.get(PROMPT_KEY)
        if not isinstance(prompt, str):
            if PROMPT_KEY not in msg:
                raise RequestError(f"missing key 'prompt' (got keys {sorted(map(str, msg))})")
            raise RequestError(f"prompt must be a string, got {type(prompt).__name__}")
        return obs, prompt

    def episode_arm(self, key: str) -> tuple[str | None, dict | None]:
        """(hidden arm name or None, IVRA settings or None) of the episode ``key``: the blind schedule's arm, else
        the server's default arm."""
        if self.blind is not None:
            return self.blind.arm_for(key)
        return None, self.default_ivra

    async def submit(self, req: Request, conn_id: int) -> asyncio.Future:
        """Queue one validated request for the batch loop; the future gets its reply (or an error string)."""
        req.future, req.conn = asyncio.get_running_loop().create_future(), conn_id
        self._more[conn_id] = req.more
        self.stats["requests"] += 1
        if self.blind is None:
            arm = "baseline" if req.ivra is None else f"layer={req.ivra['layer']},lam={req.ivra['lam']}"
            self.stats["arms"][arm] = self.stats["arms"].get(arm, 0) + 1
        await self._queue.put(req)
        return req.future

    def metadata_policy(self) -> str:
        return repr(getattr(self.policy, "name", type(self.policy).__name__))

    # -- batching ----------------------------------------------------------------------------------------------
    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        t_free = 0.0
        while True:
            first = await self._queue.get()
            max_wait = self.options.max_wait_ms / 1000.0  # read per batch: GET /config may change it
            batch = [first]
            # wait at most max_wait once both the first request and the model are there
            deadline = max(first.t_arrival, t_free) + max_wait
            while len(batch) < self.options.max_batch:
                try:
                    batch.append(self._queue.get_nowait())  # whatever is queued joins first
                    continue
                except asyncio.QueueEmpty:
                    pass
                if len({r.conn for r in batch}) >= len(self._open) and not any(self._more.values()):
                    break  # every connected client is waiting on this batch: nobody else can join it
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [r for r in batch if r.future is not None and not r.future.done()]  # clients gone
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                chunks = await loop.run_in_executor(self._pool, self._call_policy, batch)
            except Exception as exc:  # noqa: BLE001 -- the rows are retried alone below, the server lives
                log.exception("policy call failed on a batch of %d", len(batch))
                chunks = await self._one_by_one(batch, exc)
            t_free = time.perf_counter()
            dt = t_free - t0
            self.stats["batches"] += 1
            self.stats["policy_s"] += dt
            sizes = self.stats["batch_sizes"]
            sizes[len(batch)] = sizes.get(len(batch), 0) + 1
            for row, (r, chunk) in enumerate(zip(batch, chunks)):
                if r.future.done():
                    continue
                if not isinstance(chunk, str) and not np.isfinite(chunk).all():
                    chunk = self._refuse_nonfinite(chunk, row, len(batch))
                if isinstance(chunk, str):
                    r.future.set_result(chunk)
                    continue
                timing = {
                    "infer_ms": 1000.0 * dt,
                    "queue_ms": 1000.0 * (t0 - r.t_arrival),
                    "batch_size": len(batch),
                }
                r.future.set_result((r.encode or openpi_reply)(r, chunk, timing))

    def _refuse_nonfinite(self, chunk: np.ndarray, row: int | None, n: int) -> str:
        """The error that replaces a chunk holding NaN or inf: no such action leaves the server (a robot would
        execute it). Names the policy, the row and, where the policy says what a non-finite row means, why."""
        name = self.metadata_policy()
        bad = np.argwhere(~np.isfinite(np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)))
        why = getattr(self.policy, "nonfinite_means", None) or "NaN or inf in its output"
        self.stats["nonfinite"] += 1
        self.stats["errors"] += 1
        where = f"row {row} of a batch of {n}" if row is not None else f"in a batch of {n}"
        where += f", step {int(bad[0][0])} of the chunk, {len(bad)} value(s)"
        log.error("policy %s answered a non-finite action (%s): %s; refused", name, where, why)
        return (
            f"policy error: policy {name} answered a non-finite action for this request ({where}): {why}; "
            "nothing was sent to execute"
        )

    async def _one_by_one(self, batch: list[Request], exc: BaseException) -> list:
        """After a failed batched call: each row alone, so only the requests the policy cannot take get an error
        (a batch of one gets its error at once)."""
        if len(batch) == 1:
            return [f"policy error: {type(exc).__name__}: {exc}"]
        loop = asyncio.get_running_loop()
        out: list = []
        for r in batch:
            try:
                out.append((await loop.run_in_executor(self._pool, self._call_policy, [r]))[0])
            except Exception as one:  # noqa: BLE001 -- this request's error, the others are served
                out.append(f"policy error: {type(one).__name__}: {one}")
        return out

    def _call_policy(self, batch: list[Request]) -> np.ndarray:
        """One ``predict`` for the batch: per-row noise seeds and arms; (B, H, action_dim)."""
        from ivra.policies.base import predict_with_arms

        return predict_with_arms(
            self.policy,
            [r.obs for r in batch],
            [r.instruction for r in batch],
            [r.seed for r in batch],
            [r.ivra for r in batch],
        )

    # -- connections -------------------------------------------------------------------------------------------
    def _process_request(self, connection, request):
        url = urlsplit(request.path)
        path = url.path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if path == "/health":  # vla-eval's readiness probe
            return _json(connection, HTTPStatus.OK, {"status": "ok"})
        if self.options.api_key:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Api-Key {self.options.api_key}".encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        if path == "/stats":
            return connection.respond(HTTPStatus.OK, json.dumps(self.stats, default=str) + "\n")
        if path == "/config":
            return self._config(connection, parse_qs(url.query, keep_blank_values=True))
        if path not in OPENPI_PATHS and path not in PROTOCOL_PATHS:
            return connection.respond(
                HTTPStatus.NOT_FOUND,
                f"unknown path {path!r}: expected / (openpi), {', '.join(PROTOCOL_PATHS)} (websocket), "
                "/health, /healthz, /config or /stats\n",
            )
        return None

    def config(self) -> dict:
        """GET /config: the batching settings under vla-eval's names, and the served policy's metadata."""
        return {
            "max_batch_size": self.options.max_batch,
            "max_wait_time": self.options.max_wait_ms / 1000.0,
            "ivra": self.metadata(),
        }

    def _config(self, connection, query: dict):
        """GET /config[?max_batch_size=N&max_wait_time=S]: vla-eval's control plane (the keys its model servers
        take); a bad key or value changes nothing and gets 422 naming it."""
        applied: dict[str, Any] = {}
        for key, values in query.items():
            if key not in CONFIG_KEYS:
                return _json(
                    connection,
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    {"errors": [f"unknown key {key!r}: expected {' or '.join(CONFIG_KEYS)}"]},
                )
            cast = CONFIG_KEYS[key][1]
            try:
                value = cast(values[-1])
                if not (value >= 1 if cast is int else value >= 0):
                    raise ValueError
            except ValueError:
                want = "an integer >= 1" if cast is int else "a number of seconds >= 0"
                return _json(
                    connection,
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    {"errors": [f"{key}={values[-1]!r}: expected {want}"]},
                )
            applied[key] = value
        for key, value in applied.items():
            attr, _, scale = CONFIG_KEYS[key]
            setattr(self.options, attr, value * scale if scale != 1.0 else value)
        return _json(connection, HTTPStatus.OK, {"applied": applied, "config": self.config()})

    async def _handler(self, ws) -> None:
        """One connection: its protocol is chosen by the path (openpi at the root, see ``PROTOCOL_PATHS``)."""
        from websockets.exceptions import ConnectionClosed

        conn_id = next(self._conn_ids)
        self._open.add(conn_id)
        session = self._sessions[conn_id] = Session(conn_id, self._boot)
        self.stats["clients"] += 1
        protocol = PROTOCOL_PATHS.get(urlsplit(ws.request.path).path if ws.request else "/", "openpi")
        try:
            if protocol == "vla-eval":
                from ivra.serve import vlaeval

                await vlaeval.serve_connection(self, ws, conn_id)
            elif protocol == "roboarena":
                from ivra.serve import roboarena

                await roboarena.serve_connection(self, ws, conn_id, session)
            else:
                await self._openpi(ws, conn_id, session)
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(conn_id)
            self._more.pop(conn_id, None)
            self._sessions.pop(conn_id, None)  # its episode state goes with the connection

    async def _openpi(self, ws, conn_id: int, session: Session) -> None:
        from websockets.exceptions import ConnectionClosed

        pending: asyncio.Queue = asyncio.Queue(maxsize=self.options.max_pending_per_client)
        sender = asyncio.create_task(self._sender(ws, pending))
        loop = asyncio.get_running_loop()
        try:
            await ws.send(wire.packb(self.metadata()))
            async for frame in ws:
                try:
                    req = self.parse(frame, conn_id, session)
                except RequestError as exc:
                    self.stats["errors"] += 1
                    fut = loop.create_future()
                    fut.set_result(f"bad request: {exc}")
                else:
                    fut = await self.submit(req, conn_id)
                await pending.put(fut)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            while not pending.empty():
                fut = pending.get_nowait()
                if not fut.done():
                    fut.cancel()  # the batch loop skips requests of a client that left

    async def _sender(self, ws, pending: asyncio.Queue) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                fut = await pending.get()
                reply = await fut
                await ws.send(reply)
        except (ConnectionClosed, asyncio.CancelledError):
            return

    # -- lifetime ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        self._queue = asyncio.Queue()
        self._batch_task = asyncio.create_task(self._batch_loop())
        self._server = await serve(
            self._handler,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            max_size=self.options.max_payload_bytes,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        # the command line prints its own start line (once); this is for library users who turn on debug logs
        log.debug("ivra serve: %s on ws://%s:%d", self.metadata()["policy"], self.options.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._batch_task is not None:
            self._batch_task.cancel()
            try:
                await self._batch_task
            except asyncio.CancelledError:
                pass
            self._batch_task = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        await self.start()
        try:
            await (stop.wait() if stop is not None else asyncio.Future())
        finally:
            await self.stop()


def _json(connection, status: HTTPStatus, body: dict):
    resp = connection.respond(status, json.dumps(body, default=str) + "\n")
    del resp.headers["Content-Type"]  # respond() says text/plain
    resp.headers["Content-Type"] = "application/json"
    return resp


class ServerThread:
    """Run a :class:`PolicyServer` in a background thread (tests, benchmarks, notebooks)::

    with ServerThread(server) as st:
        url = st.url
    """

    def __init__(self, server: PolicyServer, timeout: float = 30.0):
        self.server = server
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ivra-serve", daemon=True)

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                raise
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 -- reported by start()
            self._error = self._error or exc

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError(f"server did not start within {self.timeout}s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return f"ws://{self.server.options.host}:{self.server.port}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"server thread did not stop within {self.timeout}s")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
