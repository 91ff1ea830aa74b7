"""Ray Serve replicas behind the same websocket protocol: a local Ray with two CPU replicas (small, bounded)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ivra.policies.remote import RemotePolicy, ServerError
from ivra.policies.sim import SimLatencyPolicy
from ivra.serve.server import ServeOptions, ServerThread

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def replicas():
    pytest.importorskip("ray.serve", reason="needs ray[serve] (requirements/dev.txt)")
    import ray

    from ivra.serve.ray_serve import shutdown_replicas, start_replicas

    handle = start_replicas(
        "sim:fixed_ms=30,per_sample_ms=1",
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
                got.append(
                    (rp.act([obs], ["wipe"], ivra=[arm])[0], SimLatencyPolicy.expected(obs, "wipe", ivra=arm))
                )
            results[k] = got
            rp.close()
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        rp = RemotePolicy(st.url)
        assert rp.metadata["backend"] == "ray-serve" and rp.metadata["policy"] == "sim"
        with pytest.raises(ServerError, match="missing key 'observation/image'"):
            rp.act([{}], ["x"])  # validated by the front, as in the single-process server
        rp.close()
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
