"""The OpenVLA policy wrapper: OpenVLA's LIBERO protocol pieces, and a real LIBERO A/B episode with tiny weights."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ivra.policies.openvla import OpenVLAPolicy, center_crop, gripper_to_libero, jpeg_resize


def test_center_crop_takes_the_central_0_9_area():
    img = np.zeros((224, 224, 3), dtype=np.uint8)
    side = int(round(224 * math.sqrt(0.9)))  # 213
    top = (224 - side) // 2
    img[top : top + side, top : top + side] = 255  # exactly the crop window is white
    out = center_crop(img)
    assert out.shape == (224, 224, 3) and out.min() == 255
    img[top, top] = 0  # a corner pixel inside the window shows up, one just outside does not
    img[top - 1, :] = 7
    assert center_crop(img).min() < 255 and 7 not in center_crop(img)[1:, 1:]


def test_jpeg_round_trip_and_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = jpeg_resize(img)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, np.asarray(jpeg_resize(img[::-1])))  # not a constant


def test_gripper_convention():
    a = np.array([[0.1] * 6 + [0.9], [0.1] * 6 + [0.2]])
    out = gripper_to_libero(a)
    assert out[0, -1] == -1.0 and out[1, -1] == 1.0  # OpenVLA 1 = open -> LIBERO -1 = open
    assert np.array_equal(out[:, :6], a[:, :6])


def _image(rng):
    return rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)


def _logits(policy, *args, **kwargs):
    """The policy's answer and the language model's last-position logits of every forward it made (the tiny
    random model's greedy tokens saturate at one bin, so IVRA's effect is checked on the logits)."""
    seen = []
    hook = policy.model.language_model.register_forward_hook(lambda m, a, out: seen.append(out.logits[:, -1]))
    try:
        return policy.predict(*args, **kwargs), torch.cat(seen)
    finally:
        hook.remove()


def test_predict_single_step_set_ivra_and_arms_per_row():
    policy = OpenVLAPolicy(model="tiny")
    assert (policy.chunk_length, policy.execute_steps) == (1, 1) and not hasattr(policy, "reset")
    rng = np.random.default_rng(1)
    obs = [{"image": _image(rng)}, {"image": _image(rng)}]
    texts = ["Put the bowl on the plate", "open the drawer"]
    base = policy.predict(obs[:1], texts[:1])
    assert base.shape == (1, 1, 7) and np.all(np.abs(base) <= 1.0) and abs(base[0, 0, -1]) == 1.0
    bins = policy.model.bin_centers
    assert all(
        np.isclose(bins, v).any() for v in base[0, 0, :6]
    )  # identity norm stats: values are bin centres
    both, logits = _logits(
        policy, obs, texts, seeds=[3, 4]
    )  # greedy: seeds change nothing; rows one at a time
    assert np.array_equal(both[:1], base) and np.array_equal(both[1:], policy.predict(obs[1:], texts[1:]))
    n = len(logits) // 2  # forwards per row
    policy.set_ivra({"layer": 2, "lam": 0.0})
    assert np.array_equal(policy.predict(obs[:1], texts[:1]), base)
    assert policy.ivra_counters()["calls"] == 1 and policy.ivra_counters()["tokens"] == 256
    policy.set_ivra({"layer": 2, "lam": 0.9})
    _, edited = _logits(policy, obs, texts)
    assert not torch.allclose(edited[:n], logits[:n]) and not torch.allclose(edited[n:], logits[n:])
    _, mixed = _logits(policy, obs, texts, ivra=[None, {"layer": 2, "lam": 0.9}])  # one arm per row
    assert torch.equal(mixed[:n], logits[:n]) and torch.equal(mixed[n:], edited[n:])
    assert policy.ivra_config == {"layer": 2, "lam": 0.9}  # the policy's own setting is back after the call
    policy.set_ivra(None)
    assert policy.ivra_counters() is None


def _libero_missing():
    missing = [m for m in ("libero", "robosuite", "mujoco") if importlib.util.find_spec(m) is None]
    return (
        f"LIBERO not installed here (missing {missing}); nox installs it unless IVRA_SKIP_LIBERO"
        if missing
        else None
    )


@pytest.mark.skipif(_libero_missing() is not None, reason=str(_libero_missing()))
def test_libero_ab_episode_with_tiny_weights(tmp_path):
    from ivra.eval.journal import Journal
    from ivra.eval.libero.install import child_env

    out = tmp_path / "openvla"
    cmd = [sys.executable, "-m", "ivra.cli", "eval", "libero", "--suite", "libero_spatial", "--tasks", "0",
           "--init-states", "0", "--max-steps", "12", "--resolution", "128", "--no-progress",
           "--policy", "ivra.policies.openvla:OpenVLAPolicy", "--policy-kwargs", "model=tiny", "--ab", "--ivra", "layer=2,lam=0.5",
           "--executor", "inline", "--out", str(out)]  # fmt: skip
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = {r["unit"]["arm"]: r for r in Journal(out / "journal.jsonl").final_records().values()}
    assert set(recs) == {"baseline", "ivra"}
    for r in recs.values():
        assert r["status"] == "ok", r.get("traceback")
        assert r["result"]["steps"] == 12 or r["result"]["success"]
    stats = recs["ivra"]["result"]["ivra_stats"]
    assert stats["calls"] == recs["ivra"]["result"]["steps"] and stats["tokens"] == 256 * stats["calls"]
    assert recs["baseline"]["result"]["ivra_stats"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["policy"] == "ivra.policies.openvla:OpenVLAPolicy"


def test_quat_to_axis_angle_matches_scipy():
    from scipy.spatial.transform import Rotation

    from ivra.policies.openvla import quat_to_axis_angle

    rng = np.random.default_rng(2)
    for q in rng.normal(size=(5, 4)):
        q = q / np.linalg.norm(q) * (1 if q[3] >= 0 else -1)  # w >= 0: the rotation vector's angle is <= pi
        assert np.allclose(quat_to_axis_angle(q), Rotation.from_quat(q).as_rotvec(), atol=1e-9)
    assert np.array_equal(quat_to_axis_angle([0, 0, 0, 1.0]), np.zeros(3))


def test_oft_policy_predicts_whole_chunks_and_the_runner_executes_open_loop_steps():
    from ivra.episodes import EpisodeRunner
    from ivra.policies.openvla import OpenVLAOFTPolicy

    policy = OpenVLAOFTPolicy(model="tiny", open_loop_steps=4)
    assert (policy.chunk_length, policy.execute_steps) == (8, 4) and not hasattr(policy, "reset")
    rng = np.random.default_rng(3)

    def obs():
        state = np.concatenate([rng.normal(size=3), [0, 0, 0, 1.0], [0.02, -0.02]]).astype(np.float32)
        return {"image": _image(rng), "wrist_image": _image(rng), "state": state}

    frames = [obs() for _ in range(6)]
    chunks = policy.predict(frames[:2], ["pick up the bowl"] * 2)
    assert chunks.shape == (2, 8, 7) and set(np.abs(chunks[..., -1]).ravel()) <= {0.0, 1.0}
    assert np.array_equal(chunks[1:], policy.predict(frames[1:2], ["pick up the bowl"]))  # batch == alone
    assert not np.array_equal(chunks[0, 0], chunks[0, 1])  # a chunk's steps are successive actions
    policy.set_ivra({"layer": 2, "lam": 0.5})
    runner = EpisodeRunner(policy, arms=False)
    ep = runner.start(0)
    actions = np.stack([runner.step([ep], [frames[t]], ["pick up the bowl"])[0] for t in range(6)])
    counters = policy.ivra_counters()
    assert counters["calls"] == 2 and counters["tokens"] == 2 * 2 * 256  # 2 chunks, two cameras of 256 tokens
    edited = [policy.predict([frames[t]], ["pick up the bowl"])[0] for t in (0, 4)]
    assert np.array_equal(actions, np.concatenate([edited[0][:4], edited[1][:2]]))  # 4 steps of each chunk
    assert not np.array_equal(edited[0], chunks[0])
    policy.set_ivra(None)
    assert np.allclose(policy.proprio(frames[0]["state"])[3:6], 0.0)
    with pytest.raises(ValueError, match="OFT's own code"):
        OpenVLAOFTPolicy(model="moojink/openvla-7b-oft-finetuned-libero-spatial")
    with pytest.raises(ValueError, match="open_loop_steps must be in 1..8 \\(the chunk\\), got 9"):
        OpenVLAOFTPolicy(model="tiny", open_loop_steps=9)


@pytest.mark.skipif(_libero_missing() is not None, reason=str(_libero_missing()))
def test_libero_ab_episode_oft_with_tiny_weights(tmp_path):
    from ivra.eval.journal import Journal
    from ivra.eval.libero.install import child_env

    out = tmp_path / "oft"
    cmd = [sys.executable, "-m", "ivra.cli", "eval", "libero", "--suite", "libero_spatial", "--tasks", "0",
           "--init-states", "0", "--max-steps", "12", "--resolution", "128", "--no-progress",
           "--policy", "ivra.policies.openvla:OpenVLAOFTPolicy", "--policy-kwargs", "model=tiny", "--ab", "--ivra", "layer=2,lam=0.5",
           "--executor", "inline", "--out", str(out)]  # fmt: skip
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = {r["unit"]["arm"]: r for r in Journal(out / "journal.jsonl").final_records().values()}
    for r in recs.values():
        assert r["status"] == "ok", r.get("traceback")
    res = recs["ivra"]["result"]
    chunks = -(-res["steps"] // 8)
    assert res["ivra_stats"]["calls"] == chunks and res["ivra_stats"]["tokens"] == chunks * 512
