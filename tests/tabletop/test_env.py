import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ivra.tabletop import SPLITS, TASKS, TabletopEnv


def run_episode(env, policy, seed, task, split):
    obs, info = env.reset(seed=seed, options={"task": task, "split": split})
    assert env.observation_space.contains(obs)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(env))
        done = terminated or truncated
    return info


def expert(env):
    return env.unwrapped.expert_action()


def test_registered_and_make():
    env = gym.make("ivra/Tabletop-v0", resolution=96)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (96, 96, 3) and obs["image"].dtype == np.uint8
    assert isinstance(obs["instruction"], str)
    assert env.observation_space.contains(obs)
    assert info["split"] == "train" and info["task"] in TASKS and info["success"] is False
    assert env.action_space.shape == (4,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)


def test_vector_env():
    envs = gym.make_vec("ivra/Tabletop-v0", num_envs=2, vectorization_mode="sync", resolution=32)
    obs, info = envs.reset(seed=[1, 2], options={"split": "val"})
    assert obs["image"].shape == (2, 32, 32, 3) and len(obs["instruction"]) == 2
    obs, reward, terminated, truncated, info = envs.step(np.full((2, 4), 0.5, np.float32))
    assert envs.observation_space.contains(obs)
    envs.close()


def test_check_env_clean():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("ivra/Tabletop-v0").unwrapped)
        check_env(gym.make("ivra/Tabletop-v0", render_mode="rgb_array").unwrapped)


@pytest.mark.parametrize("split", SPLITS)
def test_expert_solves_every_episode(split):
    env = TabletopEnv(resolution=64)
    for task in TASKS:
        for seed in range(20):
            info = run_episode(env, expert, seed, task, split)
            assert info["success"], (task, split, seed, info)
            assert info["steps"] == info["n_required"]


def test_random_policy_mostly_fails():
    env = TabletopEnv(resolution=32)
    rng = np.random.default_rng(0)
    wins = n = 0
    for split in SPLITS:
        for task in TASKS:
            for seed in range(8):
                info = run_episode(env, lambda e: rng.uniform(0, 1, 4), seed, task, split)
                wins += info["success"]
                n += 1
    assert wins / n < 0.25


@pytest.mark.parametrize("resolution", [48, 96, 128])
def test_deterministic(resolution):
    for split in ("train", "combination"):
        for task in TASKS:
            a, b = TabletopEnv(resolution=resolution), TabletopEnv(resolution=resolution)
            oa, _ = a.reset(seed=7, options={"task": task, "split": split})
            ob, _ = b.reset(seed=7, options={"task": task, "split": split})
            assert oa["image"].shape == (resolution, resolution, 3)
            assert oa["image"].tobytes() == ob["image"].tobytes() and oa["instruction"] == ob["instruction"]
            act = a.expert_action()
            assert np.array_equal(act, b.expert_action())
            assert a.step(act)[0]["image"].tobytes() == b.step(act)[0]["image"].tobytes()


def test_unseeded_resets_vary_but_follow_seed():
    env = TabletopEnv()
    env.reset(seed=3)
    x = [env.reset()[0]["image"].tobytes() for _ in range(3)]
    env.reset(seed=3)
    y = [env.reset()[0]["image"].tobytes() for _ in range(3)]
    assert x == y and len(set(x)) == 3


def test_sampled_task_equals_explicit_task():
    env = TabletopEnv()
    for seed in range(12):
        obs, info = env.reset(seed=seed, options={"task": None, "split": "val"})
        obs2, _ = env.reset(seed=seed, options={"task": info["task"], "split": "val"})
        assert obs["image"].tobytes() == obs2["image"].tobytes()
    tasks = {env.reset(seed=s)[1]["task"] for s in range(60)}
    assert tasks == set(TASKS)


def test_same_seed_differs_across_splits():
    env = TabletopEnv(resolution=48)
    for task in TASKS:
        for seed in range(15):
            images = set()
            for split in SPLITS:
                images.add(env.reset(seed=seed, options={"task": task, "split": split})[0]["image"].tobytes())
            assert len(images) == len(SPLITS), (task, seed)


def test_bad_options_raise():
    env = TabletopEnv()
    with pytest.raises(ValueError, match="'stack'.*pick_place"):
        env.reset(seed=0, options={"task": "stack"})
    with pytest.raises(ValueError, match="'test'.*novel_object"):
        env.reset(seed=0, options={"split": "test"})
    with pytest.raises(ValueError, match="'colour'"):
        env.reset(seed=0, options={"colour": "red"})
    with pytest.raises(ValueError, match="'nope'"):
        TabletopEnv(split="nope")
    with pytest.raises(ValueError, match="shape"):
        env.reset(seed=0)
        env.step(np.zeros(3))


def test_pick_on_nothing_does_nothing_and_truncates():
    env = TabletopEnv(max_steps=3)
    obs, _ = env.reset(seed=0, options={"task": "pick_place"})
    ep = env.episode
    empty = next(
        (x, y)
        for x in np.linspace(0.01, 0.99, 40)
        for y in np.linspace(0.01, 0.99, 40)
        if not any(o.contains(x, y) for o in ep.objects)
    )
    for i in range(3):
        obs2, reward, terminated, truncated, info = env.step([*empty, 0.5, 0.5])
        assert info["picked"] is None and reward == 0.0 and not terminated
        assert obs2["image"].tobytes() == obs["image"].tobytes()
        assert truncated == (i == 2)


def test_wrong_object_in_target_is_a_terminal_mistake():
    env = TabletopEnv()
    for task in ("relative_size", "spatial", "color_match"):
        env.reset(seed=1, options={"task": task})
        ep = env.episode
        wrong = next(o for o in ep.objects if o.uid not in ep.required)
        target = ep.container(ep.target)
        _, reward, terminated, truncated, info = env.step([wrong.x, wrong.y, target.x, target.y])
        assert terminated and info["mistake"] and not info["success"] and reward == 0.0
        assert not info["picked_required"]
        assert info["picked"] == wrong.name and info["placed_in"] == target.name


def test_multi_object_needs_several_steps():
    env = TabletopEnv()
    env.reset(seed=2, options={"task": "multi_object"})
    n = len(env.episode.required)
    assert n >= 2 and env.max_steps == n + 2
    for i in range(n):
        _, reward, terminated, _, info = env.step(env.expert_action())
        assert info["n_done"] == i + 1 and terminated == (i == n - 1)
    assert info["success"] and reward == 1.0 and info["picked_required"]
    assert np.array_equal(env.expert_action(), np.zeros(4, np.float32))


@pytest.mark.parametrize("split", ["train", "placement", "novel_object", "placement_extrapolation"])
def test_expert_placements_do_not_collide(split):
    env = TabletopEnv(resolution=32)
    for seed in range(40):
        run_episode(env, expert, seed, "multi_object", split)
        ep = env.episode
        objs = [ep.obj(u) for u in ep.required]
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius, (split, seed)


def test_topmost_object_is_picked():
    env = TabletopEnv()
    env.reset(seed=4, options={"task": "pick_place"})
    a, b = env.episode.objects[:2]
    env.step([a.x, a.y, b.x, b.y])  # a now lies on top of b
    _, _, _, _, info = env.step([b.x, b.y, 0.5, 0.5])
    assert info["picked"] == a.name
