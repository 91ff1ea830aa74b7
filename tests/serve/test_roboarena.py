"""``ivra serve`` answers RoboArena's protocol (path /roboarena), driven by a client written from RoboArena's
recorded protocol facts (tests/fixtures/roboarena/protocol.json names the repositories, commits and files): the
PolicyServerConfig on connect, ``endpoint`` on every request, the reset reply, DROID keys; a served episode equals
the in-process episode with the same seed and arm; bad input gets one text line."""

from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets.sync.client
from serve_helpers import start as start_thread

from ivra.episodes import EpisodeRunner
from ivra.serve.policies import load_policy

FACTS = json.loads((Path(__file__).parents[1] / "fixtures/roboarena/protocol.json").read_text())
ARM = {"layer": 1, "lam": 0.3}


# -- the client, from the recorded facts (openpi's msgpack-numpy convention, "endpoint" on every request) ---------
def _pack_default(obj):
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_hook(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    return obj


class Client:
    def __init__(self, url: str):
        self.ws = websockets.sync.client.connect(
            url, compression=None, max_size=None, open_timeout=10, legacy=True
        )
        self.metadata = msgpack.unpackb(self.ws.recv(timeout=30), object_hook=_unpack_hook)

    def infer(self, obs: dict):
        self.ws.send(msgpack.packb({**obs, "endpoint": "infer"}, default=_pack_default))
        reply = self.ws.recv(timeout=60)
        return reply if isinstance(reply, str) else msgpack.unpackb(reply, object_hook=_unpack_hook)

    def reset(self, reset_info: dict):
        self.ws.send(msgpack.packb({**reset_info, "endpoint": "reset"}, default=_pack_default))
        return self.ws.recv(timeout=30)

    def close(self):
        self.ws.close()


def droid_obs(
    image: np.ndarray, session_id: str | None = None, prompt: str = "put the marker in the cup"
) -> dict:
    obs = {
        "observation/exterior_image_1_left": image,
        "observation/wrist_image_left": image[::-1].copy(),
        "observation/joint_position": np.zeros(7, np.float32),
        "observation/cartesian_position": np.zeros(6, np.float32),
        "observation/gripper_position": np.zeros(1, np.float32),
        "prompt": prompt,
    }
    if session_id is not None:
        obs["session_id"] = session_id
    return obs


@contextmanager
def serving(policy, spec, **opts):
    st = start_thread(policy, spec, **opts)
    try:
        yield st
    finally:
        st.stop()


def _images(n: int, seed: int, size: int = 32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_the_fixture_names_its_sources():
    for src in FACTS["sources"].values():
        assert src["repository"].startswith("github.com/") and len(src["commit"]) == 40 and src["files"]


def test_config_on_connect_chunks_and_reset_follow_the_recorded_protocol():
    policy, spec = load_policy("sim:chunk=4,execute=3,fixed_ms=0,per_sample_ms=0")
    images = _images(3, seed=1)
    with serving(policy, spec, default_ivra=ARM) as st:
        c = Client(st.url + "/roboarena")
        assert set(c.metadata) == set(
            FACTS["policy_server_config"]
        )  # the client rebuilds the dataclass from it
        assert c.metadata["action_space"] == "cartesian_velocity" and c.metadata["needs_session_id"] is True
        replies = [c.infer(droid_obs(im, "sess-A")) for im in images]
        assert c.reset({"session_id": "sess-A"}) == "reset successful"
        after = c.infer(droid_obs(images[0], "sess-B"))
        c.close()
    got = np.concatenate([r["actions"] for r in replies])
    assert [r["actions"].shape for r in replies] == [
        (3, 7)
    ] * 3  # execute_steps of each chunk: all are executed
    runner = EpisodeRunner(policy)
    ep = runner.start(zlib.crc32(b"sess-A"), ARM)  # the session id names the episode and seeds it
    want = np.concatenate(
        [runner.step([ep], [{"image": images[t // 3]}], ["put the marker in the cup"]) for t in range(9)]
    )
    np.testing.assert_allclose(got, want, atol=1e-9)
    ep_b = runner.start(zlib.crc32(b"sess-B"), ARM)
    np.testing.assert_allclose(
        after["actions"],
        np.concatenate(
            [runner.step([ep_b], [{"image": images[0]}], ["put the marker in the cup"]) for _ in range(3)]
        ),
        atol=1e-9,
    )
    assert not np.allclose(after["actions"], got[:3])  # the seed matters


def test_blind_arms_are_assigned_per_session(tmp_path):
    from ivra.serve.blind import BlindAB, arm_of
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    blind = BlindAB(tmp_path / "ab", treatment=ARM, seed=3, policy="sim")
    image = _images(1, seed=2)[0]
    with ServerThread(PolicyServer(policy, ServeOptions(port=0), spec, blind=blind)) as st:
        got = []
        for i in range(4):  # one connection per episode, as the evaluator runs policy A then B
            c = Client(st.url + "/roboarena")
            got.append(c.infer(droid_obs(image, f"s{i}"))["actions"][0])
            assert c.reset({"session_id": f"s{i}"}) == "reset successful"
            c.close()
    journal = [json.loads(line) for line in (tmp_path / "ab/episodes.jsonl").read_text().splitlines()]
    assert [e["key"] for e in journal] == [f"id:s{i}" for i in range(4)]
    for i, a in enumerate(got):
        arm = ARM if arm_of(3, i) == "ivra" else None
        np.testing.assert_allclose(a, policy.expected({"image": image}, "put the marker in the cup", 7, arm))


def test_bad_requests_get_one_text_line_and_the_connection_stays_usable():
    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with serving(policy, spec) as st:
        c = Client(st.url + "/roboarena")
        c.ws.send(msgpack.packb({"prompt": "x"}))
        assert c.ws.recv(timeout=10) == (
            "bad request: missing key 'endpoint' (expected 'infer' or 'reset'; got keys ['prompt'])"
        )
        c.ws.send(msgpack.packb({"endpoint": "act"}))
        assert c.ws.recv(timeout=10) == "bad request: unknown endpoint 'act': expected 'infer' or 'reset'"
        c.ws.send("infer")
        assert c.ws.recv(timeout=10) == "bad request: expected a binary msgpack frame, got a text frame"
        bad = droid_obs(_images(1, 0)[0])
        del bad["observation/exterior_image_1_left"]
        reply = c.infer(bad)
        assert isinstance(reply, str) and "missing key 'observation/exterior_image_1_left'" in reply
        assert "\n" not in reply
        ok = c.infer(droid_obs(_images(1, 0)[0]))
        assert ok["actions"].shape == (1, 7)
        c.close()


def test_a_policy_without_a_robot_action_space_is_refused_in_one_line():
    policy, spec = load_policy("sim:action_dim=4,fixed_ms=0,per_sample_ms=0")
    with serving(policy, spec) as st:
        ws = websockets.sync.client.connect(st.url + "/roboarena", open_timeout=10, legacy=True)
        line = ws.recv(timeout=10)
        assert line == (
            "ivra serve cannot serve policy 'sim' to RoboArena: RoboArena takes 8-D (joint) or 7-D (cartesian) "
            "actions, the policy answers 4-D ones"
        )
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008
