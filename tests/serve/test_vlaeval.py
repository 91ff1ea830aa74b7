"""``ivra serve`` answers vla-eval's protocol (path /vla-eval), driven by vla-eval 0.8.0's own client
(``vla_eval.connection.Connection``, the one its runners use): a served episode equals the in-process episode with
the same seed and arm, shards are batched, blind arms are journalled and scored from ``episode_end``, bad input
gets one line."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from contextlib import contextmanager

import anyio
import msgpack
import numpy as np
import pytest
import websockets.sync.client
from serve_helpers import start as start_thread

pytest.importorskip("vla_eval", reason="vla-eval is pinned in requirements/dev.txt")
from vla_eval.connection import Connection  # noqa: E402
from vla_eval.protocol.messages import Message, MessageType, pack_message, unpack_message  # noqa: E402

from ivra.episodes import EpisodeRunner  # noqa: E402
from ivra.serve.policies import load_policy  # noqa: E402

ARM = {"layer": 1, "lam": 0.3}


@contextmanager
def start(policy, spec, **opts):
    st = start_thread(policy, spec, **opts)
    try:
        yield st
    finally:
        st.stop()


def _images(n: int, seed: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _task(idx: int, task_id: int = 3) -> dict:
    return {
        "name": "put the bowl on the plate",
        "suite": "libero_spatial",
        "task_id": task_id,
        "episode_idx": idx,
    }


async def _episode(url: str, task: dict, images, success: bool = True, wrist: bool = False) -> np.ndarray:
    """One episode through vla-eval's Connection, as its SyncEpisodeRunner drives it."""
    conn = Connection(url, timeout=60, max_retries=1)
    await conn.connect(benchmark="test")
    try:
        await conn.start_episode({"task": task})
        actions = []
        for img in images:
            obs = {"images": {"agentview": img}, "task_description": task["name"]}
            if wrist:
                obs["images"]["wrist"] = img[::-1]
            actions.append(np.asarray((await conn.act(obs))["actions"]))
        await conn.end_episode({"metrics": {"success": success}, "steps": len(images), "elapsed_sec": 0.0})
        return np.stack(actions)
    finally:
        await conn.close()


def _in_process(policy, seed: int, arm, task: dict, images) -> np.ndarray:
    runner = EpisodeRunner(policy)
    ep = runner.start(seed, arm)
    return np.concatenate([runner.step([ep], [{"image": im}], [task["name"]]) for im in images])


def test_a_chunked_episode_is_served_one_action_per_observation_as_in_process():
    policy, spec = load_policy("sim:chunk=4,execute=3,fixed_ms=0,per_sample_ms=0")
    images = _images(8, seed=1)
    task = _task(5)
    with start(policy, spec, default_ivra=ARM, episode_seed=100) as st:
        got = anyio.run(_episode, st.url + "/vla-eval", task, images)
        stats = dict(st.server.stats)
    want = _in_process(policy, 105, ARM, task, images)  # seed: episode_seed + episode_idx
    assert got.shape == (8, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert stats["requests"] == 3  # chunks of 3 executed actions: observations 0, 3, 6 asked for one
    # the seed matters: another episode_idx gives other actions (sim's chunks depend on their noise seed)
    assert not np.allclose(got, _in_process(policy, 106, ARM, task, images), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_vla():
    return load_policy("tiny-vla", {"temperature": 1.0})  # the real tiny LLaVA VLA, sampling


def test_a_sampling_vla_with_an_ivra_arm_gives_the_in_process_episodes_and_shards_are_batched(tiny_vla):
    policy, spec = tiny_vla
    task_a, task_b = _task(0), _task(1, task_id=4)
    imgs_a, imgs_b = _images(3, seed=2, size=64), _images(3, seed=3, size=64)

    async def two_shards(url):
        out = {}

        async def one(name, task, imgs):
            out[name] = await _episode(url, task, imgs, wrist=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a", task_a, imgs_a)
            tg.start_soon(one, "b", task_b, imgs_b)
        return out

    with start(policy, spec, default_ivra=ARM, max_wait_ms=500) as st:
        got = anyio.run(two_shards, st.url + "/vla-eval")
        sizes = dict(st.server.stats["batch_sizes"])
    np.testing.assert_array_equal(got["a"], _in_process(policy, 0, ARM, task_a, imgs_a).astype(np.float32))
    np.testing.assert_array_equal(got["b"], _in_process(policy, 1, ARM, task_b, imgs_b).astype(np.float32))
    # the seed matters (sampling): the same observations in episode 2 give other actions
    assert not np.array_equal(got["a"], _in_process(policy, 2, ARM, task_a, imgs_a).astype(np.float32))
    assert sizes.get(2, 0) >= 1  # the two shards' requests shared policy calls


def test_blind_arms_follow_the_schedule_and_episode_end_scores_them(tmp_path):
    from ivra.serve.blind import BlindAB, arm_of, report

    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    blind = BlindAB(tmp_path / "ab", treatment=ARM, seed=7, policy="sim")
    images = _images(2, seed=4)
    successes = [True, False, True, True]
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    with ServerThread(PolicyServer(policy, ServeOptions(port=0), spec, blind=blind)) as st:
        got = [
            anyio.run(_episode, st.url + "/vla-eval", _task(i), images, ok) for i, ok in enumerate(successes)
        ]
    journal = [json.loads(line) for line in (tmp_path / "ab/episodes.jsonl").read_text().splitlines()]
    assert [e["key"] for e in journal] == [f"vla-eval:libero_spatial/t03/e{i}" for i in range(4)]
    for i, actions in enumerate(got):
        arm = ARM if arm_of(7, i) == "ivra" else None
        np.testing.assert_allclose(actions, _in_process(policy, i, arm, _task(i), images), atol=1e-6)
    r = report(tmp_path / "ab")
    assert r["episodes_scored"] == 4 and r["paired"]["n"] == 2
    by_arm = {a: [ok for i, ok in enumerate(successes) if arm_of(7, i) == a] for a in ("baseline", "ivra")}
    assert r["arms"]["ivra"]["successes"] == sum(by_arm["ivra"])


def _raw_session(url: str):
    return websockets.sync.client.connect(url, open_timeout=10, close_timeout=5)


def _frame(kind: str, payload: dict, seq: int = 1) -> bytes:
    return pack_message(Message(type=MessageType(kind), payload=payload, seq=seq))


def test_bad_input_gets_one_line_and_the_connection_stays_usable():
    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with start(policy, spec) as st, _raw_session(st.url + "/vla-eval") as ws:
        ws.send(b"\xc1 not msgpack")
        err = unpack_message(ws.recv(timeout=10))
        assert err.type == MessageType.ERROR and "not valid msgpack" in err.payload["error"]
        ws.send(msgpack.packb({"type": "hello", "payload": {}}))
        err = unpack_message(ws.recv(timeout=10)).payload["error"]
        assert "missing required fields ['seq', 'timestamp']" in err and "\n" not in err
        ws.send(msgpack.packb({"type": "greet", "payload": {}, "seq": 1, "timestamp": 0.0}))
        assert "unknown message type 'greet'" in unpack_message(ws.recv(timeout=10)).payload["error"]
        ws.send(_frame("observation", {"images": {}}, seq=2))
        err = unpack_message(ws.recv(timeout=10))
        assert err.seq == 2 and "expected hello first" in err.payload["error"]
        ws.send(_frame("hello", {"protocol_version": 1, "harness_version": "0.8.0"}, seq=3))
        hello = unpack_message(ws.recv(timeout=10))
        assert hello.type == MessageType.HELLO and hello.payload["protocol_version"] == 1
        ws.send(_frame("observation", {"images": {"agentview": _images(1, 0)[0]}}, seq=4))
        err = unpack_message(ws.recv(timeout=10)).payload["error"]
        assert "observation before episode_start" in err
        ws.send(_frame("episode_start", {"task": {"name": "x", "task_id": 0}}, seq=5))
        assert "integer episode_idx >= 0, got None" in unpack_message(ws.recv(timeout=10)).payload["error"]
        ws.send(_frame("episode_start", {"task": _task(0)}, seq=6))
        ws.send(_frame("observation", {"images": {"agentview": np.zeros((8, 8), np.uint8)}}, seq=7))
        err = unpack_message(ws.recv(timeout=10))
        assert err.seq == 7 and "observation/image has shape (8, 8)" in err.payload["error"]
        ws.send(
            _frame("observation", {"images": {"agentview": _images(1, 0)[0]}, "task_description": "x"}, seq=8)
        )
        ok = unpack_message(ws.recv(timeout=10))  # still usable: the next good observation gets its action
        assert ok.type == MessageType.ACTION and ok.seq == 8 and ok.payload["actions"].shape == (7,)


def test_another_protocol_version_is_refused_in_one_line_and_closed():
    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with start(policy, spec) as st, _raw_session(st.url + "/vla-eval") as ws:
        ws.send(_frame("hello", {"protocol_version": 2, "harness_version": "9.0"}))
        err = unpack_message(ws.recv(timeout=10)).payload["error"]
        assert err == (
            "vla-eval protocol_version 2 is not supported: ivra serve speaks vla-eval protocol 1 (vla-eval 0.8.0)"
        )
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008


def test_health_config_and_unknown_paths():
    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with start(policy, spec, max_batch=4) as st:
        http = f"http://127.0.0.1:{st.server.port}"
        health = urllib.request.urlopen(http + "/health", timeout=10)
        assert json.loads(health.read()) == {"status": "ok"}
        assert health.headers["Content-Type"] == "application/json"
        cfg = json.loads(urllib.request.urlopen(http + "/config", timeout=10).read())
        assert cfg["config"]["max_batch_size"] == 4 and cfg["config"]["ivra"]["policy"] == "sim"
        cfg = json.loads(urllib.request.urlopen(http + "/config?max_batch_size=8", timeout=10).read())
        assert cfg["applied"] == {"max_batch_size": 8} and st.server.options.max_batch == 8
        for query, line in [
            ("bogus=1", "unknown key 'bogus': expected max_batch_size or max_wait_time"),
            ("max_batch_size=0", "max_batch_size='0': expected an integer >= 1"),
        ]:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{http}/config?{query}", timeout=10)
            assert e.value.code == 422 and json.loads(e.value.read())["errors"] == [line]
        assert st.server.options.max_batch == 8
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            _raw_session(st.url + "/vla_eval")
        assert e.value.response.status_code == 404
        assert b"unknown path '/vla_eval'" in e.value.response.body


def test_vla_eval_connections_are_not_pinged_openpi_ones_are():
    """A vla-eval shard blocks its event loop while its simulator builds a scene and cannot answer pings (its own
    servers send none): the server must not ping (and so close) it; openpi connections keep their keepalive."""
    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0")
    with start(policy, spec) as st, _raw_session(st.url + "/vla-eval") as ws, _raw_session(st.url) as openpi:
        ws.send(_frame("hello", {"protocol_version": 1}))
        ws.recv(timeout=10)
        openpi.recv(timeout=10)  # the metadata: the connection's handler runs
        conns = {c.request.path: c for c in st.server._server.connections}
        assert conns["/vla-eval"].keepalive_task is None
        assert conns["/"].keepalive_task is not None


def test_a_nonfinite_chunk_is_an_error_of_that_observation_never_an_action():
    """Nothing non-finite leaves the server: vla-eval's client raises the one-line error of that observation."""
    from ivra.policies.sim import SimLatencyPolicy
    from ivra.serve.policies import ObsSpec

    class NaNChunks(SimLatencyPolicy):
        nonfinite_means = "a test policy's NaN"

        def predict(self, observations, instructions, seeds=None, ivra=None):
            out = super().predict(observations, instructions, seeds, ivra)
            out[:, 1, 2] = np.nan  # step 1 of every chunk
            return out

    async def one_step(url):
        async with Connection(url, timeout=30, max_retries=1) as conn:
            await conn.start_episode({"task": _task(0)})
            with pytest.raises(RuntimeError) as e:
                await conn.act({"images": {"agentview": _images(1, 0)[0]}, "task_description": "x"})
            return str(e.value)

    with start(NaNChunks(fixed_ms=0, per_sample_ms=0, chunk=3), ObsSpec()) as st:
        err = anyio.run(one_step, st.url + "/vla-eval")
    assert "answered a non-finite action" in err and "a test policy's NaN" in err
