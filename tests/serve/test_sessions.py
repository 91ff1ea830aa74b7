"""Chunks and sessions: served episodes reproduce in-process EpisodeRunner episodes with the same seeds, for a chunk
policy and for a sampling policy on a real (tiny, random-weight) LLaVA; many sessions share one batched predict
call; episode_id / reset / seed / noise_seed pick the episode and its noise."""

from __future__ import annotations

import threading
import zlib
from collections import deque

import numpy as np
import pytest
from serve_helpers import run_openpi, start
from websockets.sync.client import connect

from ivra.episodes import EpisodeRunner, chunk_seed
from ivra.policies.remote import RemotePolicy
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve import wire
from ivra.serve.policies import ObsSpec

H, E = 6, 3  # the chunk policy: chunks of 6, 3 executed per chunk
SPEC = ObsSpec(image_shape=(16, 16, 3), action_dim=7)
ARM = {"layer": 1, "lam": 0.25}


def obs_at(client: int, t: int, size: int = 16) -> dict:
    """The observation client ``client`` sees at step ``t`` (a function of both, so every request differs)."""
    return {"image": np.full((size, size, 3), (37 * client + 11 * t) % 256, np.uint8)}


class Raw:
    """A websocket client speaking the protocol by hand (session keys as given)."""

    def __init__(self, url):
        self.ws = connect(url, compression=None, max_size=None, legacy=True)
        self.meta = wire.unpackb(self.ws.recv(timeout=10))

    def ask(self, obs: dict, prompt: str, **keys):
        self.ws.send(wire.packb({"observation/image": obs["image"], "prompt": prompt, **keys}))
        reply = self.ws.recv(timeout=60)
        return reply if isinstance(reply, str) else wire.unpackb(reply)

    def close(self):
        self.ws.close()


def client_loop(url, k, steps, first_keys, execute=E, size=16):
    """openpi's LIBERO loop in miniature: ask for a chunk when the plan is empty, execute its first ``execute``
    actions. Returns the executed actions and the replies' episode parts."""
    c = Raw(url)
    plan, actions, infos = deque(), [], []
    for t in range(steps):
        if not plan:
            keys = {
                k_: v for k_, v in first_keys.items() if k_ == "ivra" or not infos
            }  # the arm: every request
            reply = c.ask(obs_at(k, t, size), f"task {k}", **keys)
            assert not isinstance(reply, str), reply
            assert reply["actions"].shape[0] == c.meta["action_horizon"]
            plan.extend(reply["actions"][:execute])
            infos.append(reply["episode"])
        actions.append(plan.popleft())
    c.close()
    return np.stack(actions), infos


def in_process(policy, seeds, steps, execute=E, arms=None, size=16):
    """The same episodes in process: one EpisodeRunner, all episodes in lockstep; (episodes, steps, D)."""
    runner = EpisodeRunner(policy, execute=execute)
    eps = [runner.start(s, None if arms is None else arms[i]) for i, s in enumerate(seeds)]
    got = [
        runner.step(
            eps, [obs_at(k, t, size) for k in range(len(seeds))], [f"task {k}" for k in range(len(seeds))]
        )
        for t in range(steps)
    ]
    return np.stack(got, axis=1)


def run_clients(url, keys, steps, **kw):
    out, errors = {}, []
    barrier = threading.Barrier(len(keys))

    def one(k):
        try:
            barrier.wait(30)
            out[k] = client_loop(url, k, steps, keys[k], **kw)
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    return out


def test_n_clients_get_the_chunks_of_n_in_process_episodes():
    """Four clients, each its own episode (seed given, int id, string id, none: the connection's own, seed 0), get
    exactly the actions four in-process episodes with those seeds get; their requests share batched calls."""
    keys = [{"seed": 11}, {"episode_id": 5}, {"episode_id": "robot-2/ep-3", "ivra": ARM}, {}]
    seeds = [11, 5, zlib.crc32(b"robot-2/ep-3"), 0]
    arms = [None, None, ARM, None]
    steps = 13  # 5 chunks per episode, the last one cut short
    want = in_process(SimLatencyPolicy(0, 0, chunk=H, execute=E), seeds, steps, arms=arms)
    policy = SimLatencyPolicy(fixed_ms=20, per_sample_ms=1, chunk=H, execute=E)
    st = start(policy, SPEC, max_batch=8, max_wait_ms=50)
    try:
        got = run_clients(st.url, keys, steps)
    finally:
        st.stop()
    for k in range(len(keys)):
        actions, infos = got[k]
        np.testing.assert_array_equal(actions, want[k], err_msg=f"client {k}")
        assert [i["chunk"] for i in infos] == list(range(5)) and {i["seed"] for i in infos} == {seeds[k]}
        assert [i["noise_seed"] for i in infos] == [chunk_seed(seeds[k], j) for j in range(5)]
    assert not np.array_equal(want[0], want[3])  # the test can fail: the seeds change the chunks
    assert sum(policy.batch_sizes) == 4 * 5
    assert max(policy.batch_sizes) > 1 and policy.calls < 20, policy.batch_sizes  # sessions shared calls


def test_sampling_tiny_vla_served_to_n_clients_equals_in_process():
    """The real tiny LLaVA VLA sampling (temperature 1): served episodes give the in-process episodes' actions,
    and the seeds matter (different episodes, different actions for the same observations)."""
    from ivra.policies.vla import TinyVLAPolicy

    policy = TinyVLAPolicy(temperature=1.0)
    keys = [{"seed": 3}, {"seed": 4}, {"episode_id": 9}]
    steps = 4
    want = in_process(policy, [3, 4, 9], steps, execute=1, size=64)
    st = start(policy, ObsSpec(action_dim=7), max_batch=8, max_wait_ms=50)
    try:
        got = run_clients(st.url, keys, steps, execute=1, size=64)
        sizes = dict(st.server.stats["batch_sizes"])
    finally:
        st.stop()
    for k in range(3):
        np.testing.assert_array_equal(got[k][0], want[k], err_msg=f"client {k}")
    # same observations, other seed: other actions (sampling); greedy would give the same
    again = in_process(policy, [5, 6, 7], steps, execute=1, size=64)
    assert not np.array_equal(again, want)
    assert max(sizes) > 1, sizes  # one predict call served several sessions


def test_reset_episode_id_seed_and_noise_seed():
    policy = SimLatencyPolicy(fixed_ms=1, per_sample_ms=0, chunk=H, execute=E)
    st = start(policy, SPEC)
    o = obs_at(0, 0)

    def chunk(seed):
        return SimLatencyPolicy.expected_chunk(o, "x", seed=seed, chunk=H)

    def check(reply, seed, k, episode_id=None):
        assert not isinstance(reply, str), reply
        assert reply["episode"] == {
            "episode_id": episode_id,
            "seed": seed,
            "chunk": k,
            "noise_seed": chunk_seed(seed, k),
        }
        np.testing.assert_array_equal(reply["actions"], chunk(chunk_seed(seed, k)))

    try:
        c = Raw(st.url)
        assert (c.meta["action_horizon"], c.meta["execute_steps"]) == (H, E)
        for k in range(3):  # no keys: the connection's first episode, seed 0, chunk after chunk
            check(c.ask(o, "x"), 0, k)
        check(c.ask(o, "x", reset=True), 1, 0)  # the connection's second episode: seed 1
        check(c.ask(o, "x", seed=1), 1, 1)  # the running episode's own seed may be repeated
        assert "seed 6 differs from the seed of the running episode (1)" in c.ask(o, "x", seed=6)
        check(c.ask(o, "x"), 1, 2)  # ... and the refused request did not advance it
        # noise_seed: this request alone, the session untouched
        r = c.ask(o, "x", noise_seed=123)
        assert r["episode"] == {"noise_seed": 123}
        np.testing.assert_array_equal(r["actions"], chunk(123))
        check(c.ask(o, "x"), 1, 3)
        first = [c.ask(o, "x", episode_id="pick-7")] + [c.ask(o, "x") for _ in range(2)]
        for k, reply in enumerate(first):
            check(reply, zlib.crc32(b"pick-7"), k, "pick-7")
        check(c.ask(o, "x", episode_id=42), 42, 0, 42)
        check(c.ask(o, "x", episode_id=42), 42, 1, 42)  # the same id continues
        again = [c.ask(o, "x", episode_id="pick-7")] + [c.ask(o, "x") for _ in range(2)]  # a new value: over
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a["actions"], b["actions"])  # the same episode, reproduced
        check(c.ask(o, "x", episode_id=42, reset=True, seed=5), 5, 0, 42)  # reset with an id and a seed
        c.close()
        c2 = Raw(st.url)  # a new connection: its own session (the other's state went with it)
        check(c2.ask(o, "x"), 0, 0)
        check(c2.ask(o, "x", episode_id="pick-7"), zlib.crc32(b"pick-7"), 0, "pick-7")
        c2.close()
    finally:
        st.stop()
    assert not st.server._sessions  # dropped when their connections closed


def test_remote_policy_is_stateless_and_equal_to_in_process():
    """EpisodeRunner over RemotePolicy (noise_seed per row, arms per row) = EpisodeRunner over the policy."""
    policy = SimLatencyPolicy(fixed_ms=1, per_sample_ms=0, chunk=H, execute=E)
    st = start(policy, SPEC, max_batch=16)
    try:
        rp = RemotePolicy(st.url)
        assert (rp.chunk_length, rp.execute_steps) == (H, E)
        arms = [None, ARM, None]
        got = in_process(rp, [7, 8, 9], 10, execute=2, arms=arms)
        with pytest.raises(ValueError, match=f"answers chunks of {H} actions: use predict"):
            rp.act([obs_at(0, 0)], ["x"])
        rp.close()
    finally:
        st.stop()
    want = in_process(SimLatencyPolicy(0, 0, chunk=H, execute=E), [7, 8, 9], 10, execute=2, arms=arms)
    np.testing.assert_array_equal(got, want)
    assert max(policy.batch_sizes) == 3  # the lockstep episodes went as one pipelined batch


def test_openpi_client_gets_whole_chunks(openpi_py, tmp_path):
    """The unmodified PyPI openpi-client receives (H, D) chunks: its connection's episode (seed 0), chunk after
    chunk."""
    policy = SimLatencyPolicy(fixed_ms=1, per_sample_ms=0, chunk=H, execute=E)
    st = start(policy, SPEC)
    obs = [obs_at(0, t) for t in range(4)]
    try:
        got, meta = run_openpi(openpi_py, st.url, tmp_path, [o["image"] for o in obs], ["x"] * 4)
    finally:
        st.stop()
    assert meta["errors"] == [None] * 4
    assert meta["server"]["action_horizon"] == H and meta["server"]["execute_steps"] == E
    assert got.shape == (4, H, 7)
    for k, o in enumerate(obs):
        np.testing.assert_array_equal(
            got[k], SimLatencyPolicy.expected_chunk(o, "x", seed=chunk_seed(0, k), chunk=H)
        )
