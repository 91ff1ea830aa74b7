"""vla-eval's model-server protocol on ``ivra serve`` (websocket path ``/vla-eval``): translation only.

vla-eval (allenai's vla-evaluation-harness, PyPI ``vla-eval`` 0.8.0) drives a model server from its benchmark
shards. Facts of 0.8.0 this module follows (``vla_eval/protocol/messages.py``, ``protocol/numpy_codec.py``,
``protocol/image_codec.py``, ``connection.py``, ``runners/sync_runner.py``, ``model_servers/serve.py``,
``benchmarks/libero/benchmark.py``; held by tests/serve/test_vlaeval.py, which drives this server with vla-eval's
own ``Connection``):

* every frame is one binary msgpack map ``{type, payload, seq, timestamp}``, ``type`` one of ``hello``,
  ``observation``, ``action``, ``episode_start``, ``episode_end``, ``error``; numpy arrays travel as
  ``{"__ndarray__": True, data, dtype, shape}`` and HxWxC uint8 images as ``{"__image__": True, format: raw | png |
  jpeg, data, ...}`` (PNG by default);
* the client sends ``hello`` first (payload ``protocol_version`` 1, ``harness_version``) and waits for a ``hello``;
* ``episode_start`` carries ``{"task": {name, suite, task_id, episode_idx, ...}}`` and is not answered;
* each ``observation`` (``images``: camera -> image, ``task_description``, optionally ``states``) is answered by
  exactly one ``action`` ``{"actions": (action_dim,)}`` with the observation's ``seq``;
* ``episode_end`` carries ``{"metrics": {"success": ...}, "steps", "elapsed_sec"}`` and is not answered;
* an ``error`` frame (payload ``{"error": text}``, the request's ``seq``) answers a request the server cannot serve;
  vla-eval's client raises it as that episode's error.

What ivra adds on the server: each vla-eval episode is an :class:`ivra.episodes.Episode` whose seed comes from its
identity -- ``ServeOptions.episode_seed + episode_idx``, the seed ivra's own LIBERO job gives initial state
``episode_idx`` (:func:`ivra.eval.libero.job.make_units`) -- and whose arm is the server's default arm or, with
``--ab blind``, the blind schedule's arm of the episode key ``vla-eval:<suite>/t<task_id>/e<episode_idx>``
(journalled as for openpi clients; the success of ``episode_end`` is written to ``outcomes.jsonl`` so that ``ivra
trials --report`` unblinds without an operator). Chunks are buffered per episode: an observation that finds the
episode's queue empty asks the core (one request, batched with every other client's) for the chunk seeded
``chunk_seed(seed, k)``, and the episode executes its first ``execute_steps`` actions, one per observation --
exactly the actions :class:`ivra.episodes.EpisodeRunner` gives the same episode in process.

Cameras: ``images["agentview"]`` (else the first camera whose name has no "wrist") is ``observation/image``, the
first camera named "...wrist..." is ``observation/wrist_image``; ``states`` is ``observation/state``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
import numpy as np

from ivra.serve.server import RequestError

log = logging.getLogger("ivra.serve.vlaeval")

#: vla-eval 0.8.0 protocol/messages.py: PROTOCOL_VERSION and MessageType values
PROTOCOL_VERSION = 1
TYPES = ("hello", "observation", "action", "episode_start", "episode_end", "error")
FIELDS = ("type", "payload", "seq", "timestamp")
IMAGE_FORMATS = ("raw", "png", "jpeg")
FORBIDDEN_KINDS = ("O", "V", "c")


class FrameError(ValueError):
    """A frame that is not a vla-eval message; the message says why (sent back as an ``error`` frame)."""


def _decode_hook(obj: dict) -> Any:
    if obj.get("__image__") is True:
        return _decode_image(obj)
    if obj.get("__ndarray__") is True:
        try:
            dtype, shape, data = np.dtype(obj["dtype"]), tuple(int(s) for s in obj["shape"]), obj["data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FrameError(f"malformed array: {exc}") from None
        if dtype.kind in FORBIDDEN_KINDS or not isinstance(data, (bytes, bytearray)):
            raise FrameError(f"array of dtype {dtype} with {type(data).__name__} data is not allowed")
        if any(s < 0 for s in shape) or int(np.prod(shape, dtype=object)) * dtype.itemsize != len(data):
            raise FrameError(f"array of shape {shape} and dtype {dtype} does not hold {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return obj


def _decode_image(obj: dict) -> np.ndarray:
    fmt = obj.get("format")
    if fmt not in IMAGE_FORMATS:
        raise FrameError(f"image format {fmt!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if fmt == "raw":
        return _decode_hook({"__ndarray__": True, **{k: obj.get(k) for k in ("data", "dtype", "shape")}})
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        return np.asarray(Image.open(io.BytesIO(obj["data"])).convert("RGB"))
    except (KeyError, TypeError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise FrameError(f"{fmt} image cannot be decoded: {exc}") from None


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__ndarray__": True, "data": arr.tobytes(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__} in a vla-eval frame")


def pack(kind: str, payload: dict, seq: int = 0) -> bytes:
    """One vla-eval frame."""
    msg = {"type": kind, "payload": payload, "seq": int(seq), "timestamp": time.time()}
    return msgpack.packb(msg, default=_encode_default, use_bin_type=True)


def unpack(data: bytes | str) -> dict:
    """One vla-eval frame, checked: a map with ``type`` (a known one), ``payload`` (a map), ``seq``, ``timestamp``."""
    if isinstance(data, str):
        raise FrameError("expected a binary msgpack frame, got a text frame")
    try:
        msg = msgpack.unpackb(data, object_hook=_decode_hook, raw=False, strict_map_key=False)
    except FrameError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError(
            f"frame is not valid msgpack ({len(data)} bytes): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(msg, dict):
        raise FrameError(
            f"expected a msgpack map {{type, payload, seq, timestamp}}, got {type(msg).__name__}"
        )
    missing = [k for k in FIELDS if k not in msg]
    if missing:
        raise FrameError(f"message missing required fields {missing} (got keys {sorted(map(str, msg))})")
    if msg["type"] not in TYPES:
        raise FrameError(f"unknown message type {msg['type']!r}: expected one of {', '.join(TYPES)}")
    if not isinstance(msg["payload"], dict):
        raise FrameError(f"{msg['type']} payload must be a map, got {type(msg['payload']).__name__}")
    if isinstance(msg["seq"], bool) or not isinstance(msg["seq"], int):
        raise FrameError(f"seq must be an integer, got {msg['seq']!r}")
    return msg


def identity(task: Any) -> tuple[str, Any, int]:
    """(suite, task_id, episode_idx) of an ``episode_start`` task; a task without them is refused."""
    if not isinstance(task, dict):
        raise RequestError(f"episode_start payload needs a 'task' map, got {type(task).__name__}")
    suite, task_id, idx = (
        task.get("suite", ""),
        task.get("task_id", task.get("name")),
        task.get("episode_idx"),
    )
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise RequestError(f"episode_start task needs an integer episode_idx >= 0, got {idx!r}")
    if task_id is None:
        raise RequestError("episode_start task needs a task_id (or a name)")
    return str(suite), task_id, idx


def episode_key(suite: str, task_id: Any, idx: int) -> str:
    tid = f"t{task_id:02d}" if isinstance(task_id, int) and not isinstance(task_id, bool) else f"t{task_id}"
    return f"vla-eval:{suite}/{tid}/e{idx}"


def to_openpi(payload: dict, task: dict) -> dict:
    """A vla-eval observation in openpi's keys (see the module docstring)."""
    images = payload.get("images")
    if not isinstance(images, dict) or not images:
        raise RequestError(
            f"observation needs 'images', a map of camera name -> HxWx3 uint8 image (got keys {sorted(payload)})"
        )
    main = "agentview" if "agentview" in images else next((k for k in images if "wrist" not in str(k)), None)
    if main is None:
        raise RequestError(f"observation has only wrist cameras ({sorted(images)}): expected a scene camera")
    msg: dict[str, Any] = {"observation/image": images[main]}
    wrist = next((k for k in images if "wrist" in str(k)), None)
    if wrist is not None:
        msg["observation/wrist_image"] = images[wrist]
    if "states" in payload:
        msg["observation/state"] = np.asarray(payload["states"])
    msg["prompt"] = payload.get("task_description", task.get("name"))
    return msg


def _ndarray_images(payload: dict) -> None:
    for k, v in (payload.get("images") or {}).items():
        if isinstance(v, np.ndarray) and v.ndim == 3 and v.shape[2] == 4:  # RGBA PNG: the policy reads RGB
            payload["images"][k] = np.ascontiguousarray(v[..., :3])


class _Connection:
    """One vla-eval client: its handshake, current episode and its buffered chunk."""

    def __init__(self, server, ws, conn_id: int):
        from ivra.episodes import EpisodeRunner

        self.server, self.ws, self.conn = server, ws, conn_id
        self.runner = EpisodeRunner(server.policy)
        self.hello = False
        self.episode = None  # ivra.episodes.Episode
        self.task: dict = {}
        self.key = ""
        self.arm: str | None = None

    async def send(self, kind: str, payload: dict, seq: int = 0) -> None:
        await self.ws.send(pack(kind, payload, seq))

    async def error(self, text: str, seq: int = 0) -> None:
        self.server.stats["errors"] += 1
        line = " ".join(str(text).split())
        log.warning("vla-eval client %d: %s", self.conn, line)
        await self.send("error", {"error": line}, seq)

    async def run(self) -> None:
        async for frame in self.ws:
            try:
                msg = unpack(frame)
            except FrameError as exc:
                await self.error(f"bad frame: {exc}")
                continue
            kind, payload, seq = msg["type"], msg["payload"], msg["seq"]
            if not self.hello and kind != "hello":
                await self.error(
                    f"expected hello first (vla-eval protocol {PROTOCOL_VERSION}), got {kind}", seq
                )
                continue
            try:
                if kind == "hello":
                    if not await self.on_hello(payload, seq):
                        return
                elif kind == "episode_start":
                    self.on_episode_start(payload)
                elif kind == "observation":
                    await self.on_observation(payload, seq)
                elif kind == "episode_end":
                    self.on_episode_end(payload)
                elif kind == "error":
                    log.warning("vla-eval client %d reports an error: %s", self.conn, payload)
                else:
                    await self.error(f"a client does not send {kind} frames", seq)
            except RequestError as exc:
                await self.error(f"bad {kind}: {exc}", seq)

    async def on_hello(self, payload: dict, seq: int) -> bool:
        version = payload.get("protocol_version")
        if version != PROTOCOL_VERSION:
            from websockets.frames import CloseCode

            line = (
                f"vla-eval protocol_version {version!r} is not supported: ivra serve speaks vla-eval protocol "
                f"{PROTOCOL_VERSION} (vla-eval 0.8.0)"
            )
            await self.error(line, seq)
            await self.ws.close(CloseCode.POLICY_VIOLATION, line[:120])
            return False
        from ivra import __version__

        meta = self.server.metadata()
        self.hello = True
        await self.send(
            "hello",
            {
                "protocol_version": PROTOCOL_VERSION,
                "model_server": f"ivra serve {__version__} ({meta['policy']})",
                "capabilities": {},
                "ivra": {
                    k: meta.get(k) for k in ("policy", "action_dim", "action_horizon", "execute_steps", "ab")
                }
                | ({} if self.server.blind is not None else {"arm": meta.get("default_ivra")}),
            },
            seq,
        )
        return True

    def on_episode_start(self, payload: dict) -> None:
        self.episode = None
        suite, task_id, idx = identity(payload.get("task"))
        self.task = payload["task"]
        self.key = episode_key(suite, task_id, idx)
        self.arm, ivra_cfg = self.server.episode_arm(self.key)
        self.episode = self.runner.start(self.server.options.episode_seed + idx, ivra_cfg)

    async def on_observation(self, payload: dict, seq: int) -> None:
        from ivra.serve.server import Request

        ep = self.episode
        if ep is None:
            raise RequestError("observation before episode_start (each episode starts with an episode_start)")
        if ep.needs_chunk:
            _ndarray_images(payload)
            obs, prompt = self.server.observation(to_openpi(payload, self.task))
            seed = ep.next_seed()
            req = Request(obs, prompt, ep.ivra, arm=self.arm, episode=self.key, seed=seed, encode=_raw)
            req.info = {"episode": self.key, "seed": ep.seed, "chunk": ep.chunks, "noise_seed": seed}
            reply = await (await self.server.submit(req, self.conn))
            if isinstance(reply, str):
                await self.error(reply, seq)
                return
            if self.episode is not ep:  # the episode was replaced while its chunk was computed
                return
            ep.feed(reply)
        action = np.asarray(ep.pop(), dtype=np.float32)
        await self.send("action", {"actions": action}, seq)

    def on_episode_end(self, payload: dict) -> None:
        metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
        success = metrics.get("success")
        if (
            self.episode is not None
            and self.server.blind is not None
            and isinstance(success, (bool, int, float))
        ):
            self.server.blind.record_outcome(self.key, bool(success), note="vla-eval episode_end")
        log.info("vla-eval episode %s ended: success %s, %s steps", self.key, success, payload.get("steps"))
        self.episode = None


def _raw(req, chunk: np.ndarray, timing: dict) -> np.ndarray:
    """The core's reply for a vla-eval request: the chunk itself (the connection buffers it)."""
    return np.asarray(chunk)


async def serve_connection(server, ws, conn_id: int) -> None:
    """Serve one vla-eval client on ``server`` (an :class:`ivra.serve.server.PolicyServer`) until it leaves."""
    # No keepalive pings on this connection: a vla-eval shard blocks its event loop while its simulator builds a
    # scene (a LIBERO task: about a minute on a loaded CPU) and cannot answer pings; vla-eval's own model servers
    # and its client run with ping_interval=None (model_servers/serve.py, connection.py). measured: with pings the
    # server closed both shards of a CPU LIBERO run 50 s after they connected.
    if getattr(ws, "keepalive_task", None) is not None:
        ws.keepalive_task.cancel()
        ws.keepalive_task = None
    await _Connection(server, ws, conn_id).run()
