"""pi0 and pi0.5 behind ``ivra serve`` (lerobot environment): whole chunks, one batched call for several sessions,
each session's chunks those of the in-process episode with the same seed. (SmolVLA from a checkpoint, through
``ivra serve --policy lerobot:smolvla`` and the PyPI openpi-client, is tests/serve/test_openpi_libero.py.)"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from websockets.sync.client import connect

from ivra.episodes import chunk_seed
from ivra.policies.lerobot import LerobotPolicy
from ivra.serve import wire
from ivra.serve.policies import spec_of
from ivra.serve.server import PolicyServer, ServeOptions, ServerThread
from ivra.tiny import lerobot as tl


def _obs(k: int) -> dict:
    g = np.random.default_rng(k)
    return {
        "observation/image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation/wrist_image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation/state": g.normal(size=8).astype(np.float32),  # lerobot's (and openpi's) 8-d layout
    }


def _ours(msg: dict) -> dict:
    return {"image": msg["observation/image"], "wrist_image": msg["observation/wrist_image"],
            "state": msg["observation/state"]}  # fmt: skip


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_served_sessions_get_the_in_process_chunks(kind):
    live = tl.pi0_policy(chunk=4, execute=2) if kind == "pi0" else tl.pi05_policy(chunk=4, execute=2)
    policy = LerobotPolicy(kind, policy=live, processors=tl.processors(live))
    server = PolicyServer(policy, ServeOptions(port=0, max_wait_ms=200.0), spec_of(f"lerobot:{kind}", policy))
    seeds, text = (11, 12), "put the bowl on the plate"
    with ServerThread(server) as st:
        with contextlib.ExitStack() as stack:
            conns = [stack.enter_context(connect(st.url, max_size=None)) for _ in seeds]
            meta = [wire.unpackb(c.recv(timeout=30)) for c in conns]
            assert meta[0]["action_horizon"] == 4 and meta[0]["execute_steps"] == 2
            got = {s: [] for s in seeds}
            for k in range(2):  # two chunks per session; both sessions' requests in flight together
                for c, s in zip(conns, seeds):
                    c.send(
                        wire.packb({**_obs(10 * s + k), "prompt": text, "episode_id": f"ep{s}", "seed": s})
                    )
                for c, s in zip(conns, seeds):
                    reply = wire.unpackb(c.recv(timeout=120))
                    got[s].append(np.asarray(reply["actions"]))
    assert max(server.stats["batch_sizes"]) == 2  # both sessions in one batched denoising call
    for s in seeds:
        for k, chunk in enumerate(got[s]):
            assert chunk.shape == (4, tl.ACTION_DIM)
            want = policy.predict([_ours(_obs(10 * s + k))], [text], [chunk_seed(s, k)])[0]
            np.testing.assert_allclose(chunk, want, atol=1e-5)  # batch vs alone: float32 rounding only
    assert not np.allclose(got[seeds[0]][0], got[seeds[1]][0], atol=1e-3)
