"""RoboArena's policy-server protocol on ``ivra serve`` (websocket path ``/roboarena``): translation only.

Facts (recorded with their sources in tests/fixtures/roboarena/protocol.json: robo-arena/roboarena
``roboarena/policy_server.py``, ``policy_client.py``, ``scripts/test_policy_server.py`` at 6fa329f, and the
evaluator's ``evaluation_client/main.py``, pranavatreya/roboarena_evaluator at 5992b26):

* frames are msgpack with openpi's numpy convention (:mod:`ivra.serve.wire`); on connect the server sends its
  ``PolicyServerConfig`` -- exactly ``image_resolution``, ``needs_wrist_camera``, ``n_external_cameras``,
  ``needs_stereo_camera``, ``needs_session_id``, ``action_space`` (the client rebuilds the dataclass from it);
* every request carries ``endpoint``: ``infer`` (DROID observation keys, answered ``{"actions": (N, D)}``, all N
  executed before the next infer) or ``reset`` (answered with the text frame ``"reset successful"``);
* a text frame answering ``infer`` is an error (the client raises it).

ivra announces: the policy's image size if it has one (else RoboArena's default 224x224), the wrist camera, one
external camera, no stereo, ``needs_session_id: true`` (the evaluator then sends ``<session>-<A|B>`` with each
request) and the action space of ``--roboarena-action-space`` (default: ``joint_position`` for an 8-D policy,
``cartesian_velocity`` for a 7-D one). Mapping: ``observation/exterior_image_1_left`` (the evaluator's name; ``_0_``
in RoboArena's test script) -> ``observation/image``, ``observation/wrist_image_left`` -> ``observation/wrist_image``,
``observation/joint_position`` (joint spaces) or ``observation/cartesian_position`` (cartesian ones) followed by
``observation/gripper_position`` -> ``observation/state``, ``prompt`` -> ``prompt``.

Episodes are the core's sessions (:mod:`ivra.serve.sessions`): ``session_id`` names the episode (its seed: the
CRC-32 of the id), a connection without one is one episode seeded by its order on the connection, and ``reset``
ends it. Each ``infer`` is the episode's next chunk (noise seed ``chunk_seed(seed, k)``) and is answered with its
first ``execute_steps`` actions -- what :class:`ivra.episodes.EpisodeRunner` executes in process. Arms: the server's
default, or the blind schedule's per episode (``--ab blind``; outcomes from the operator with ``ivra trials``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ivra.serve import wire
from ivra.serve.server import RequestError, decode_map
from ivra.serve.sessions import Session, SessionError, parse_keys

log = logging.getLogger("ivra.serve.roboarena")

ACTION_SPACES = {"joint_position": 8, "joint_velocity": 8, "cartesian_position": 7, "cartesian_velocity": 7}
ENDPOINTS = ("infer", "reset")
RESET_REPLY = "reset successful"
EXTERIOR = ("observation/exterior_image_1_left", "observation/exterior_image_0_left")
WRIST = "observation/wrist_image_left"


@dataclasses.dataclass(frozen=True)
class PolicyServerConfig:
    """RoboArena's announcement (its fields and their meaning: tests/fixtures/roboarena/protocol.json)."""

    image_resolution: tuple[int, int] | None = (224, 224)
    needs_wrist_camera: bool = True
    n_external_cameras: int = 1
    needs_stereo_camera: bool = False
    needs_session_id: bool = False
    action_space: str = "joint_position"


def action_space_for(action_dim: int, chosen: str | None = None) -> str:
    """The action space to announce for a policy with ``action_dim`` actions; ValueError when none fits."""
    if chosen is not None:
        if chosen not in ACTION_SPACES:
            raise ValueError(f"RoboArena action space {chosen!r}: expected one of {', '.join(ACTION_SPACES)}")
        if ACTION_SPACES[chosen] != action_dim:
            raise ValueError(
                f"RoboArena action space {chosen} takes {ACTION_SPACES[chosen]}-D actions, the policy answers "
                f"{action_dim}-D"
            )
        return chosen
    if action_dim == 8:
        return "joint_position"
    if action_dim == 7:
        return "cartesian_velocity"
    raise ValueError(
        f"RoboArena takes 8-D (joint) or 7-D (cartesian) actions, the policy answers {action_dim}-D ones"
    )


def server_config(server) -> PolicyServerConfig:
    h, w, _ = server.spec.image_shape
    return PolicyServerConfig(
        image_resolution=(int(h), int(w)) if h is not None and w is not None else (224, 224),
        needs_wrist_camera=True,
        n_external_cameras=1,
        needs_stereo_camera=False,
        needs_session_id=True,
        action_space=action_space_for(server.spec.action_dim, server.options.roboarena_action_space),
    )


def to_openpi(msg: dict, action_space: str) -> dict:
    """A RoboArena ``infer`` request in openpi's keys (see the module docstring)."""
    out: dict = {}
    exterior = next((k for k in EXTERIOR if k in msg), None)
    if exterior is not None:
        out["observation/image"] = msg[exterior]
    if WRIST in msg:
        out["observation/wrist_image"] = msg[WRIST]
    arm_key = (
        "observation/joint_position" if action_space.startswith("joint") else "observation/cartesian_position"
    )
    if arm_key in msg and "observation/gripper_position" in msg:
        parts = [
            np.asarray(msg[arm_key]).reshape(-1),
            np.asarray(msg["observation/gripper_position"]).reshape(-1),
        ]
        if all(p.dtype.kind in "fiu" for p in parts):
            out["observation/state"] = np.concatenate(parts).astype(np.float32)
    if "prompt" in msg:
        out["prompt"] = msg["prompt"]
    if exterior is None and "observation/image" not in out:
        raise RequestError(
            f"missing key {EXTERIOR[0]!r} (the external camera; got keys {sorted(map(str, msg))})"
        )
    return out


async def serve_connection(server, ws, conn_id: int, session: Session) -> None:
    """Serve one RoboArena client on ``server`` (an :class:`ivra.serve.server.PolicyServer`) until it leaves."""
    from websockets.frames import CloseCode

    from ivra.serve.server import Request

    try:
        config = server_config(server)
    except ValueError as exc:
        line = f"ivra serve cannot serve policy {server.metadata_policy()} to RoboArena: {exc}"
        log.error(line)
        await ws.send(line)
        await ws.close(CloseCode.POLICY_VIOLATION, line[:120])
        return
    _, execute = server.chunk_spec()
    await ws.send(wire.packb(dataclasses.asdict(config)))
    reset = False  # the next infer starts a new episode
    async for frame in ws:
        try:
            msg = decode_map(frame, "a map with an 'endpoint'")
            if "endpoint" not in msg:
                raise RequestError(
                    f"missing key 'endpoint' (expected 'infer' or 'reset'; got keys {sorted(map(str, msg))})"
                )
            endpoint = msg.pop("endpoint")
            if endpoint not in ENDPOINTS:
                raise RequestError(f"unknown endpoint {endpoint!r}: expected 'infer' or 'reset'")
            if endpoint == "reset":
                log.info("RoboArena client %d: reset (%s)", conn_id, msg.get("session_id"))
                reset = True
                await ws.send(RESET_REPLY)
                continue
            obs, prompt = server.observation(to_openpi(msg, config.action_space))
            sid = msg.get("session_id")
            keys = {} if sid is None else {"episode_id": str(sid)}
            try:
                got = session.assign(parse_keys({**keys, "reset": reset}, blind=server.blind is not None))
            except SessionError as exc:
                raise RequestError(str(exc)) from None
            reset = False
            arm, ivra_cfg = server.episode_arm(got.key)
            req = Request(obs, prompt, ivra_cfg, arm=arm, episode=got.key, seed=got.noise_seed, info=got.info)
            req.encode = lambda r, chunk, timing: wire.packb({"actions": np.asarray(chunk)[:execute]})
            reply = await (await server.submit(req, conn_id))
        except RequestError as exc:
            server.stats["errors"] += 1
            reply = f"bad request: {' '.join(str(exc).split())}"
        await ws.send(reply)
