"""The lerobot policy wrapper under the chunk contract: checkpoints with lerobot's own processors, LIBERO observation
mapping, per-row seeded noise and arms in one batch, the episode runner against lerobot's own ``select_action``
queue, and real LIBERO A/B episodes through the harness with tiny SmolVLA (from a checkpoint, via the
``ivra eval libero`` command) and tiny pi0 (a live object, in process)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ivra.episodes import EpisodeRunner, chunk_seed
from ivra.eval.journal import Journal
from ivra.policies.lerobot import LerobotPolicy, libero_state, quat_to_axis_angle
from ivra.tiny import lerobot as tl

# float32 on CPU: a row's chunk in a batch of 2 differs from the row alone by a few ulp (the matmuls' blocking
# changes with the batch; measured max |diff| 1.8e-7 SmolVLA, 4.8e-7 pi0, 0 pi0.5, also for two identical rows)
BATCH_ATOL = 1e-5
ARM = {"layer": 1, "lam": 0.7}


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
    quat = g.normal(size=4)
    return {
        "image": g.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        "wrist_image": g.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        "state": np.concatenate([g.normal(size=3), quat / np.linalg.norm(quat), [0.02, -0.02]]).astype(
            np.float32
        ),
    }


TEXTS = ["put the black bowl on the plate", "open the top drawer"]


@pytest.fixture(scope="module")
def smolvla_checkpoint(tmp_path_factory):
    return tl.save_checkpoint(tmp_path_factory.mktemp("smolvla"))


def wrap(kind, policy):
    return LerobotPolicy(kind, policy=policy, processors=tl.processors(policy))


@pytest.fixture(scope="module", params=["smolvla", "pi0"])
def wrapped(request, smolvla_checkpoint):
    if request.param == "smolvla":
        folder = smolvla_checkpoint
        return LerobotPolicy(
            "smolvla", path=str(folder), tokenizer=str(folder / "smolvlm")
        )  # a local tokenizer override
    return wrap("pi0", tl.pi0_policy())


def episode(pol, cfg=None, seed=3, steps=6, arms=True):
    """One episode of ``steps`` actions through the runner (a new observation each step)."""
    runner = EpisodeRunner(pol, arms=arms)
    ep = runner.start(seed, ivra=cfg)
    return np.stack([runner.step([ep], [observation(t)], TEXTS[:1])[0] for t in range(steps)])


def test_chunk_spec_and_paired_noise_through_the_runner(wrapped):
    pol = wrapped
    cfg = pol.policy.config
    assert (pol.chunk_length, pol.execute_steps) == (cfg.chunk_size, cfg.n_action_steps) == (4, 4)
    assert not hasattr(pol, "reset") and not hasattr(pol, "act")  # no episode state in the policy
    chunk = pol.predict([observation(0)], TEXTS[:1], [5])
    assert chunk.shape == (1, 4, tl.ACTION_DIM) and np.isfinite(chunk).all()
    assert not np.array_equal(chunk[0, 0], chunk[0, 1])  # the steps of a chunk are its successive actions
    assert np.array_equal(pol.predict([observation(0)], TEXTS[:1], [5]), chunk)  # the seed fixes the noise
    base = episode(pol)
    assert base.shape == (6, tl.ACTION_DIM)
    assert np.array_equal(episode(pol), base)
    assert not np.array_equal(episode(pol, seed=4), base)
    assert np.array_equal(episode(pol, {"layer": 1, "lam": 0.0}), base)  # lam 0: bit-identical arm
    edited = episode(pol, ARM)
    assert not np.allclose(edited, base)
    # the arm set on the policy (as the LIBERO job does) gives the per-row arm's actions; the prefix is edited once
    # per chunk: 6 steps, chunks of 4 -> 2
    pol.set_ivra(ARM)
    try:
        assert np.array_equal(episode(pol, arms=False), edited)
        assert pol.ivra_counters()["calls"] == 2
    finally:
        pol.set_ivra(None)
    assert pol.ivra_counters() is None and np.array_equal(episode(pol), base)


def test_batch_rows_equal_rows_alone_with_mixed_arms(wrapped):
    pol = wrapped
    obs, seeds = [observation(0), observation(1)], [11, 22]
    both = pol.predict(obs, TEXTS, seeds)
    alone = np.concatenate([pol.predict(obs[i : i + 1], TEXTS[i : i + 1], seeds[i : i + 1]) for i in (0, 1)])
    np.testing.assert_allclose(both, alone, rtol=0, atol=BATCH_ATOL)
    other_seed = pol.predict(obs[:1], TEXTS[:1], [12])
    assert (
        np.abs(other_seed - alone[:1]).max() > 100 * BATCH_ATOL
    )  # the seed matters far beyond the tolerance

    vision = []  # one batched forward for both arms: the vision tower runs once per camera on both rows
    tower = (
        pol.policy.model.vlm_with_expert.vlm.model.vision_model
        if pol.kind == "smolvla"
        else pol.policy.model.paligemma_with_expert.paligemma.model.vision_tower
    )
    hook = tower.register_forward_pre_hook(lambda m, a, k: vision.append(1), with_kwargs=True)
    try:
        mixed = pol.predict(obs, TEXTS, seeds, ivra=[None, ARM])
    finally:
        hook.remove()
    assert len(vision) == 2
    assert np.array_equal(mixed[0], both[0])  # the baseline row is untouched by the other row's arm
    edited = pol.predict(obs[1:], TEXTS[1:], seeds[1:], ivra=[ARM])
    np.testing.assert_allclose(mixed[1], edited[0], rtol=0, atol=BATCH_ATOL)
    assert np.abs(mixed[1] - both[1]).max() > 100 * BATCH_ATOL


def test_eight_d_state_is_lerobots_layout(wrapped):
    obs = observation(2)
    eight = {**obs, "state": libero_state(obs["state"])}
    assert np.array_equal(wrapped.predict([eight], TEXTS[:1], [1]), wrapped.predict([obs], TEXTS[:1], [1]))
    with pytest.raises(ValueError, match=r"'state' of shape \(7,\): expected 8-d .* or 9-d"):
        wrapped.predict([{**obs, "state": np.zeros(7)}], TEXTS[:1])


def test_bad_inputs_name_the_value(wrapped):
    with pytest.raises(ValueError, match="unknown lerobot policy kind 'pi1'"):
        LerobotPolicy("pi1", path="x")
    with pytest.raises(ValueError, match="exactly one of path="):
        LerobotPolicy("pi0")
    bad = observation(0)
    bad["image"] = bad["image"].astype(np.float32)
    with pytest.raises(ValueError, match="'image' must be HxWx3 uint8 images, got float32"):
        wrapped.predict([bad], ["x"])
    with pytest.raises(ValueError, match="seeds has 2 entries for a batch of 1"):
        wrapped.predict([observation(0)], ["x"], [1, 2])


@pytest.mark.parametrize("kind", ["smolvla", "pi0", "pi05"])
def test_runner_reproduces_lerobots_own_select_action_queue(kind):
    """lerobot's own loop (reset, then pre-process -> select_action -> post-process every step, its queue refilled
    every n_action_steps) gives the runner's actions when each chunk's noise is the runner's: SmolVLA takes the
    noise as select_action's argument; pi0/pi0.5's select_action has none and draws it with torch.normal on the
    global generator, which is seeded with the chunk's seed before the step that refills the queue."""
    build = {"smolvla": tl.smolvla_policy, "pi0": tl.pi0_policy, "pi05": tl.pi05_policy}[kind]
    raw = build(chunk=4, execute=3)
    pol = wrap(kind, raw)
    assert (pol.chunk_length, pol.execute_steps) == (4, 3)
    seed, steps = 7, 8
    ours = episode(pol, seed=seed, steps=steps)

    raw.reset()
    theirs = []
    for t in range(steps):
        batch = pol.preprocessor(pol.batch([observation(t)], TEXTS[:1]))
        k, fresh = divmod(t, raw.config.n_action_steps)
        with torch.random.fork_rng(devices=[]):
            if kind == "smolvla":
                action = raw.select_action(batch, noise=pol.noise([chunk_seed(seed, k)]))
            else:
                if fresh == 0:
                    torch.manual_seed(chunk_seed(seed, k))
                action = raw.select_action(batch)
        theirs.append(pol.postprocessor(action).float().numpy()[0])
    assert np.array_equal(ours, np.asarray(theirs, dtype=np.float64))
    # the chunk boundary matters: executing all 4 steps of each chunk gives other actions from step 3 on
    runner = EpisodeRunner(pol, execute=4)
    ep = runner.start(seed)
    four = np.stack([runner.step([ep], [observation(t)], TEXTS[:1])[0] for t in range(steps)])
    assert np.array_equal(four[:3], ours[:3]) and not np.allclose(four[3:], ours[3:])


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
    """docs/systems.md's LIBERO command for SmolVLA, as written there (the doc block is not run twice)."""
    pytest.importorskip("libero", reason="LIBERO is installed into this environment by `nox -s lerobot`")
    from ivra.eval.libero.install import child_env

    folder, out = smolvla_checkpoint, tmp_path / "run"
    cmd = [sys.executable, "-m", "ivra.cli", "eval", "libero", "--suite", "libero_spatial", "--tasks", "0",
           "--init-states", "0", "--max-steps", "8", "--resolution", "128", "--no-progress",
           "--policy", "lerobot:smolvla", "--policy-kwargs", f"path={folder},tokenizer={folder / 'smolvlm'}",
           "--ab", "--ivra", "layer=2,lam=0.3", "--executor", "inline", "--out", str(out)]  # fmt: skip
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


@pytest.mark.parametrize("kind", ["smolvla", "pi0", "pi05"])
def test_lerobot_names_load_their_own_policy_class(kind, monkeypatch):
    """``lerobot:<kind>`` loads its checkpoint with lerobot 0.6.1's own class of that kind (issue 23: a registry
    building ``lerobot:pi05`` as pi0 went unnoticed). Each real class's ``from_pretrained`` records the call and
    gives a tiny real pi0, so no checkpoint is needed."""
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from ivra.policies.registry import build_policy, describe

    classes = {"smolvla": SmolVLAPolicy, "pi0": PI0Policy, "pi05": PI05Policy}
    tiny, loaded = tl.pi0_policy(chunk=4, execute=2), []
    for cls in classes.values():
        monkeypatch.setattr(
            cls, "from_pretrained", classmethod(lambda klass, path: loaded.append((klass, path)) or tiny)
        )
    pol = build_policy(f"lerobot:{kind}", {"path": "ckpt", "processors": (None, None)})
    assert loaded == [(classes[kind], "ckpt")]
    assert (pol.name, pol.kind) == (f"lerobot:{kind}", kind)
    assert describe(pol) == {"policy": f"lerobot:{kind}", "chunk_length": 4, "execute_steps": 2}
