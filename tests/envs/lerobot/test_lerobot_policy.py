"""The lerobot policy wrapper: checkpoints with lerobot's own processors, LIBERO observation mapping, paired
noise, IVRA per arm, and real LIBERO A/B episodes through the harness with tiny SmolVLA (from a checkpoint, via
the ``ivra eval libero`` command) and tiny pi0 (a live object, in process)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ivra.eval.journal import Journal
from ivra.policies.lerobot import LerobotPolicy, libero_state, quat_to_axis_angle
from ivra.tiny import lerobot as tl


def test_quaternion_to_axis_angle():
    s = np.sqrt(0.5)
    assert np.allclose(quat_to_axis_angle([0, 0, s, s]), [0, 0, np.pi / 2])  # 90 degrees about z (xyzw)
    assert np.allclose(quat_to_axis_angle([1, 0, 0, 0]), [np.pi, 0, 0])
    assert np.allclose(quat_to_axis_angle([0, 0, 0, 1]), [0, 0, 0])
    state = libero_state(np.array([1, 2, 3, 0, 0, s, s, 0.04, -0.04]))
    assert state.dtype == np.float32 and np.allclose(state, [1, 2, 3, 0, 0, np.pi / 2, 0.04, -0.04])
    with pytest.raises(ValueError, match="9-d LIBERO state"):
        libero_state(np.zeros(8))


def observation(seed):
    g = np.random.default_rng(seed)
    return {
        "image": g.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        "wrist_image": g.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        "state": np.concatenate([g.normal(size=3), [0, 0, 0, 1], [0.02, -0.02]]).astype(np.float32),
    }


@pytest.fixture(scope="module")
def smolvla_checkpoint(tmp_path_factory):
    return tl.save_checkpoint(tmp_path_factory.mktemp("smolvla"))


@pytest.fixture(scope="module", params=["smolvla", "pi0"])
def wrapped(request, smolvla_checkpoint):
    if request.param == "smolvla":
        folder = smolvla_checkpoint
        return LerobotPolicy(
            "smolvla", path=str(folder), tokenizer=str(folder / "smolvlm")
        )  # a local tokenizer override
    policy = tl.pi0_policy()
    return LerobotPolicy("pi0", policy=policy, processors=tl.processors(policy))


def test_round_trip_paired_noise_and_arms(wrapped):
    pol = wrapped
    obs, text = [observation(0)], ["put the black bowl on the plate"]

    def episode(cfg, seed=3, steps=6):
        pol.set_ivra(cfg)
        pol.reset(seed)
        return np.stack([pol.act(obs, text) for _ in range(steps)])

    base = episode(None)
    assert base.shape == (6, 1, tl.ACTION_DIM) and np.isfinite(base).all()
    assert np.array_equal(episode(None), base)  # the episode seed fixes the flow-matching noise
    assert not np.array_equal(episode(None, seed=4), base)
    assert np.array_equal(episode({"layer": 1, "lam": 0.0}), base)  # lam 0: bit-identical arm
    edited = episode({"layer": 1, "lam": 0.7})
    assert not np.allclose(edited, base)
    assert pol.ivra_counters()["calls"] == 2  # 6 steps, chunks of 4: the prefix is edited once per chunk
    pol.set_ivra(None)
    assert pol.ivra_counters() is None and np.array_equal(episode(None), base)


def test_bad_inputs_name_the_value(wrapped):
    with pytest.raises(ValueError, match="unknown lerobot policy kind 'pi1'"):
        LerobotPolicy("pi1", path="x")
    with pytest.raises(ValueError, match="exactly one of path="):
        LerobotPolicy("pi0")
    bad = observation(0)
    bad["image"] = bad["image"].astype(np.float32)
    wrapped.reset(0)
    with pytest.raises(ValueError, match="'image' must be HxWx3 uint8 images, got float32"):
        wrapped.act([bad], ["x"])


def _check_ab(out):
    recs = {r["unit"]["arm"]: r for r in Journal(out / "journal.jsonl").final_records().values()}
    assert sorted(recs) == ["baseline", "ivra"]
    for r in recs.values():
        assert r["status"] == "ok", r.get("traceback")
        assert r["result"]["steps"] == 8 or r["result"]["success"]
    stats = recs["ivra"]["result"]["ivra_stats"]
    assert stats["calls"] == 2  # 8 steps, chunks of 4: the prefix edited once per chunk
    assert stats["tokens"] == 2 * 2 * 16  # two cameras of 16 tokens each
    assert recs["baseline"]["result"]["ivra_stats"] is None
    assert json.loads((out / "summary.json").read_text())["paired"][0]["n"] == 1


LIBERO_ARGS = dict(suite="libero_spatial", tasks=[0], init_states=[0], max_steps=8, resolution=128)


def test_libero_ab_smolvla_checkpoint_through_the_cli(smolvla_checkpoint, tmp_path):
    pytest.importorskip("libero", reason="LIBERO is installed into this environment by `nox -s lerobot`")
    from ivra.eval.libero.install import child_env

    folder, out = smolvla_checkpoint, tmp_path / "run"
    cmd = [sys.executable, "-m", "ivra.cli", "eval", "libero", "--suite", "libero_spatial", "--tasks", "0",
           "--init-states", "0", "--max-steps", "8", "--resolution", "128", "--no-progress",
           "--policy", "lerobot:smolvla", "--policy-kwargs", f"path={folder},tokenizer={folder / 'smolvlm'}",
           "--ab", "--ivra", "layer=1,lam=0.5", "--executor", "inline", "--out", str(out)]  # fmt: skip
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_ab(out)


def test_libero_ab_pi0_live_policy_inline(tmp_path):
    pytest.importorskip("libero", reason="LIBERO is installed into this environment by `nox -s lerobot`")
    from ivra.eval.libero.run import run_libero

    policy = tl.pi0_policy()
    wrapped = LerobotPolicy("pi0", policy=policy, processors=tl.processors(policy))
    run_libero(policy="lerobot:pi0", arms={"baseline": None, "ivra": {"layer": 1, "lam": 0.5}},
               executor="inline", policy_instance=wrapped, progress=False, out=tmp_path / "run",
               **LIBERO_ARGS)  # fmt: skip
    _check_ab(tmp_path / "run")
