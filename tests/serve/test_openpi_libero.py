"""A real client, unmodified: openpi's LIBERO example loop (tests/serve/openpi_libero_driver.py: PyPI openpi-client,
224 px resize-with-pad of the rotated agentview and wrist images, 8-d state, replan_steps=5, 10 wait steps) in its
own environment (.venv-openpi with a torch-free LIBERO) against ``ivra serve --policy lerobot:smolvla``: a tiny
random-weight SmolVLA checkpoint (chunks of 10, 5 executed) served from the lerobot environment. Two episodes capped
at 15 policy steps (the example's libero_spatial budget is 220), no error; and every chunk the client received is
the in-process policy's chunk for the observation it sent and the seed of that chunk (the connection's episode,
seed 0: chunk k has noise seed chunk_seed(0, k)).

Needs ``<repo>/.nox/lerobot`` (``nox -s lerobot``; or $IVRA_CROSS_ENV_PYTHON) and ``.venv-openpi`` with LIBERO
(``bash scripts/setup_openpi_client.sh``); skips, saying which, when one is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import no_second_environment
from serve_procs import ROOT, serve_process

DRIVER = Path(__file__).with_name("openpi_libero_driver.py")
CHUNK, EXECUTE, EPISODES, MAX_STEPS, REPLAN = 10, 5, 2, 15, 5


def _env(**extra) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def lerobot_py() -> Path:
    env = os.environ.get("IVRA_CROSS_ENV_PYTHON")
    py = Path(env) if env else ROOT / ".nox" / "lerobot" / "bin" / "python"
    if not py.exists():
        no_second_environment(
            f"no lerobot environment at {py}: create it with `nox -s lerobot` (or set IVRA_CROSS_ENV_PYTHON)"
        )
    probe = subprocess.run(
        [str(py), "-c", "import lerobot, websockets, msgpack"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    if probe.returncode != 0:
        pytest.skip(f"{py} cannot serve SmolVLA: {probe.stderr.strip().splitlines()[-1]}")
    return py


@pytest.fixture(scope="module")
def libero_client_env(openpi_py) -> dict:
    """The client's environment: LIBERO's path config written by setup_openpi_client.sh, a headless renderer."""
    config = ROOT / ".venv-openpi" / "libero"
    env = _env(LIBERO_CONFIG_PATH=str(config), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.pop("PYTHONPATH")  # the client knows nothing of ivra
    probe = subprocess.run(
        [str(openpi_py), "-c", "from libero.libero import get_libero_path; import openpi_client, robosuite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if probe.returncode != 0 or not (config / "config.yaml").is_file():
        pytest.skip(
            "the openpi-client environment has no LIBERO (or no LIBERO config): run `bash scripts/setup_openpi_client.sh`"
            f" ({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'no config.yaml'})"
        )
    return env


@pytest.fixture(scope="module")
def checkpoint(lerobot_py, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("smolvla") / "ckpt"
    code = f"from ivra.tiny.lerobot import save_checkpoint; save_checkpoint({str(folder)!r}, chunk={CHUNK}, execute={EXECUTE})"
    res = subprocess.run(
        [str(lerobot_py), "-c", code], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return folder


def _refusals(url) -> list[str]:
    """Two requests SmolVLA cannot take (no wrist camera; a 7-d state): their error frames, up to the key list."""
    from websockets.sync.client import connect

    from ivra.serve import wire

    img = np.zeros((224, 224, 3), np.uint8)
    good = {
        "observation/image": img,
        "observation/wrist_image": img,
        "observation/state": np.zeros(8, np.float32),
    }
    out = []
    with connect(url, compression=None, max_size=None) as ws:
        ws.recv(timeout=30)
        for bad in ({"observation/wrist_image": None}, {"observation/state": np.zeros(7, np.float32)}):
            msg = {**good, **bad, "prompt": "pick up the black bowl"}
            ws.send(wire.packb({k: v for k, v in msg.items() if v is not None}))
            out.append(ws.recv(timeout=60).split(" (got keys")[0])
    return out


IN_PROCESS = """
import sys, numpy as np
from ivra.episodes import chunk_seed
from ivra.policies.lerobot import LerobotPolicy
folder, src, out = sys.argv[1:4]
pol = LerobotPolicy("smolvla", path=folder, tokenizer=folder + "/smolvlm")
d = np.load(src)
meta = __import__("json").loads(str(d["meta"]))
def chunk(k, seed):
    row = {"image": d["image"][k], "wrist_image": d["wrist"][k], "state": d["state"][k].astype(np.float32)}
    return pol.predict([row], [meta["task"]], [seed])[0]  # one row per call, as the server answered its lone client
chunks = [chunk(k, chunk_seed(0, k)) for k in range(len(d["image"]))]
np.save(out, np.stack([*chunks, chunk(0, chunk_seed(1, 0))]))  # and the first with another episode's seed
"""


def test_openpi_libero_example_loop_against_served_smolvla(
    lerobot_py, checkpoint, openpi_py, libero_client_env, tmp_path
):
    out = tmp_path / "client.npz"
    kwargs = f"path={checkpoint},tokenizer={checkpoint / 'smolvlm'}"
    with serve_process(lerobot_py, "--policy", "lerobot:smolvla", "--policy-kwargs", kwargs, timeout=600) as (
        url,
        proc,
        lines,
    ):
        port = url.rsplit(":", 1)[1]
        cmd = [
            str(openpi_py),
            str(DRIVER),
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--episodes",
            str(EPISODES),
        ]
        cmd += ["--max-steps", str(MAX_STEPS), "--replan-steps", str(REPLAN), "--out", str(out)]
        client = subprocess.run(cmd, capture_output=True, text=True, env=libero_client_env, timeout=900)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
            stats = json.loads(r.read())
        refused = _refusals(url)
    assert out.exists(), client.stderr[-3000:]
    data = np.load(out)
    meta = json.loads(str(data["meta"]))
    assert meta["error"] is None and client.returncode == 0, (
        meta["error"],
        client.stderr[-3000:],
        "".join(lines)[-2000:],
    )
    server = meta["server"]
    assert server["policy"] == "lerobot:smolvla"
    assert (server["action_horizon"], server["execute_steps"]) == (CHUNK, EXECUTE)
    assert len(meta["episodes"]) == EPISODES
    for ep in meta["episodes"]:
        assert ep["done"] or ep["steps"] == MAX_STEPS, (
            ep
        )  # ran its steps (random weights: it will not succeed)
        assert ep["queries"] == -(-ep["steps"] // REPLAN), ep  # one query per replan_steps actions
        assert ep["shapes"] == [[CHUNK, 7]] * ep["queries"]  # whole chunks, (H, D)
    queries = sum(ep["queries"] for ep in meta["episodes"])
    assert stats["requests"] == queries and stats["errors"] == 0, stats
    # what SmolVLA cannot do without is refused per request, naming it, before it reaches a batch
    assert refused == [
        "bad request: missing key 'observation/wrist_image': policy 'lerobot:smolvla' needs it",
        "bad request: observation/state has 7 entries, expected 8 or 9 for policy 'lerobot:smolvla'",
    ]
    assert data["image"].shape == (queries, 224, 224, 3) and data["state"].shape == (queries, 8)
    # what the server answered is the in-process policy's chunk for what the client sent
    want = tmp_path / "in_process.npy"
    res = subprocess.run(
        [str(lerobot_py), "-c", IN_PROCESS, str(checkpoint), str(out), str(want)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    *chunks, other_seed = np.load(want)
    np.testing.assert_array_equal(data["chunk"], np.stack(chunks))
    assert not np.allclose(other_seed, chunks[0])  # the test can fail: the noise seed changes SmolVLA's chunk
    assert np.all(np.isfinite(data["chunk"])) and np.ptp(data["chunk"]) > 0
