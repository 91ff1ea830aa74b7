"""Ray Serve replicas behind the same websocket protocol: a local Ray with two CPU replicas (small, bounded)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from websockets.sync.client import connect

from ivra.episodes import chunk_seed
from ivra.policies.remote import RemotePolicy, ServerError
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve import wire
from ivra.serve.server import ServeOptions, ServerThread

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def replicas():
    pytest.importorskip("ray.serve", reason="needs ray[serve] (requirements/dev.txt)")
    import ray

    from ivra.serve.ray_serve import shutdown_replicas, start_replicas

    handle = start_replicas(
        "sim:fixed_ms=30,per_sample_ms=1,chunk=4,execute=2",
        replicas=2,
        max_batch=8,
        max_wait_ms=20,
        num_cpus=0.5,
        torch_threads=1,
    )
    try:
        yield handle
    finally:
        shutdown_replicas()
        ray.shutdown()


def test_two_replicas_serve_many_clients_through_the_websocket_front(replicas):
    from ivra.serve.ray_serve import RayServeFront

    front = RayServeFront(replicas, ServeOptions(port=0))
    st = ServerThread(front).start()
    results, errors = {}, []
    cfg = {"layer": 1, "lam": 0.5}

    def client(k):
        try:
            rp = RemotePolicy(st.url)
            got = []
            for step in range(6):
                obs = {"image": np.full((8, 8, 3), 20 * k + step, np.uint8)}
                arm = cfg if (k + step) % 2 else None
                seed = 1000 * k + step
                got.append(
                    (
                        rp.predict([obs], ["wipe"], [seed], ivra=[arm])[0],
                        SimLatencyPolicy.expected_chunk(obs, "wipe", ivra=arm, seed=seed, chunk=4),
                    )
                )
            results[k] = got
            rp.close()
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        rp = RemotePolicy(st.url)
        assert rp.metadata["backend"] == "ray-serve" and rp.metadata["policy"] == "sim"
        assert (rp.chunk_length, rp.execute_steps) == (4, 2)  # the replicas' chunk spec
        with pytest.raises(ServerError, match="missing key 'observation/image'"):
            rp.predict([{}], ["x"])  # validated by the front, as in the single-process server
        rp.close()
        # the front keeps the sessions: a connection's requests are its episode's chunks 0, 1, ...
        ws = connect(st.url, legacy=True)
        ws.recv(timeout=10)
        img = np.full((8, 8, 3), 3, np.uint8)
        for k in range(2):
            ws.send(wire.packb({"observation/image": img, "prompt": "x", "episode_id": 21}))
            reply = wire.unpackb(ws.recv(timeout=60))
            want = SimLatencyPolicy.expected_chunk({"image": img}, "x", seed=chunk_seed(21, k), chunk=4)
            np.testing.assert_array_equal(reply["actions"], want)
        ws.close()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        st.stop()
    assert not errors, errors
    for k in range(8):
        for got, want in results[k]:
            np.testing.assert_array_equal(got, want)  # both arms, right answers to the right client
    assert len(front.replicas_seen) == 2, front.replicas_seen  # Ray Serve spread the load on both replicas
    assert max(front.stats["batch_sizes"]) > 1  # and batched inside the replicas
