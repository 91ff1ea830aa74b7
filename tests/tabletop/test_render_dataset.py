import time

import numpy as np

from ivra.tabletop import COLORS, SHAPES, SIZES, TabletopEnv, draw_action, expert_demos
from ivra.tabletop.dataset import expert_demos as expert_demos_mod


def test_vocabulary_of_scene_is_rich_enough():
    assert len(SHAPES) >= 6 and len(COLORS) >= 6 and {"small", "large"} <= set(SIZES)
    cols = np.array(list(COLORS.values()), float)
    d = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(cols)) * 1e3
    assert d.min() > 90


def test_draw_action_returns_new_image():
    env = TabletopEnv()
    obs, _ = env.reset(seed=0)
    img = obs["image"].copy()
    out = draw_action(img, env.expert_action(), (255, 0, 0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, obs["image"]) and not np.array_equal(out, img)
    assert np.array_equal(out, draw_action(img, env.expert_action(), (255, 0, 0)))


def test_expert_demos_replay_and_format():
    demos = expert_demos(12, split="train", seed=5, resolution=64)
    assert expert_demos is expert_demos_mod
    assert {d["episode"] for d in demos} == set(range(5, 17))
    env = TabletopEnv(resolution=64)
    for d in demos:
        assert set(d) >= {"image", "instruction", "action", "task", "episode", "step"}
        assert d["action"].dtype == np.float32 and d["action"].shape == (4,)
        assert d["image"].shape == (64, 64, 3) and d["image"].dtype == np.uint8
        if d["step"] == 0:
            obs, info = env.reset(seed=d["episode"])
            assert info["task"] == d["task"]
        assert np.array_equal(obs["image"], d["image"]) and obs["instruction"] == d["instruction"]
        obs, _, terminated, _, info = env.step(d["action"])
        assert terminated == info["success"]
    assert all(
        d2["step"] == d1["step"] + 1 for d1, d2 in zip(demos, demos[1:]) if d2["episode"] == d1["episode"]
    )


def test_reset_is_fast():
    env = TabletopEnv(resolution=96)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for s in range(50):
        env.reset(seed=s)
    assert (time.perf_counter() - t0) / 50 < 0.02  # typically ~2 ms
