"""LIBERO closed-loop episodes as :func:`ivra.eval.executor.execute` work units.

A unit is ``{"key", "suite", "task_id", "init_state", "seed", "arm"}`` and alone decides the scene:
``env.reset()`` -> ``env.set_init_state(init_states[init_state])`` -> wait steps -> policy until done or
``max_steps``. Both arms of an A/B get the same units (same scene, same episode seed: the policy's noise of chunk k is seeded by
``ivra.episodes.chunk_seed(seed, k)``).

The simulator and the policy are built lazily inside the worker (``setup()`` and the first unit of a
task); a worker keeps one environment (the last task's) and one policy, switching IVRA on/off per arm.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivra.episodes import EpisodeRunner
from ivra.eval.libero import protocol
from ivra.policies.registry import build_policy


@dataclass
class LiberoConfig:
    suite: str = "libero_spatial"
    policy: str = "zero"  # a name of ivra.policies.registry
    policy_kwargs: dict = field(default_factory=dict)
    execute_steps: int | None = None  # actions executed per predicted chunk; None: the policy's default
    arms: dict = field(default_factory=lambda: {"baseline": None})  # arm -> IVRA settings dict or None
    max_steps: int | None = None  # None: the protocol's per-suite budget
    wait_steps: int = protocol.WAIT_STEPS
    resolution: int = protocol.RESOLUTION
    video_dir: str | None = None  # write one mp4/gif per episode here (for the A/B videos)
    video_fps: int = protocol.CONTROL_HZ
    mujoco_gl: str | None = None
    libero_config_path: str | None = None
    torch_threads: int = 1

    @property
    def steps(self) -> int:
        return int(self.max_steps if self.max_steps is not None else protocol.MAX_STEPS[self.suite])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["effective_max_steps"] = self.steps
        return d


def unit_key(suite: str, task_id: int, init_state: int, seed: int, arm: str) -> str:
    return f"{suite}/t{task_id:02d}/s{init_state:02d}/seed{seed}/{arm}"


def make_units(
    suite: str, tasks: list[int], init_states: list[int], arms: list[str], seed: int = 0
) -> list[dict]:
    """All (task, init state, arm) units, arms adjacent so both arms of a pair finish close in time.

    The episode seed is ``seed + init_state`` -- the same for every arm of a pair.
    """
    units = []
    for t in tasks:
        for s in init_states:
            for arm in arms:
                units.append(
                    {
                        "key": unit_key(suite, t, s, seed + s, arm),
                        "suite": suite,
                        "task_id": int(t),
                        "init_state": int(s),
                        "seed": int(seed + s),
                        "arm": arm,
                    }
                )
    return units


def flip(img: np.ndarray) -> np.ndarray:
    """LIBERO renders upside down; rotate 180 degrees as OpenVLA's LIBERO eval does."""
    return np.ascontiguousarray(img[::-1, ::-1])


def policy_observation(obs: dict) -> dict:
    state = np.concatenate(
        [
            np.asarray(obs["robot0_eef_pos"]),
            np.asarray(obs["robot0_eef_quat"]),
            np.asarray(obs["robot0_gripper_qpos"]),
        ]
    )
    return {
        "image": flip(obs["agentview_image"]),
        "wrist_image": flip(obs["robot0_eye_in_hand_image"]),
        "state": state.astype(np.float32),
    }


def video_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", key)


class LiberoJob:
    """Picklable; ``setup()`` and the environments/policy happen in the worker process.

    ``policy``: an already-built policy object to use instead of building ``config.policy`` (for the
    ``inline`` executor, e.g. a model already loaded in this process); it is not shipped to workers.
    """

    def __init__(self, config: LiberoConfig, policy: Any = None):
        self.config = config
        self._suite = None
        self._env = None
        self._env_task: int | None = None
        self._init_states: dict[int, Any] = {}
        self._policy = policy
        self._policy_given = policy is not None

    def __getstate__(self) -> dict:  # ship only the config to workers
        if self._policy is not None and self._policy_given:
            raise TypeError("a LiberoJob holding a live policy object runs only with executor='inline'")
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    # -- worker side -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        if cfg.mujoco_gl:
            os.environ["MUJOCO_GL"] = cfg.mujoco_gl
            os.environ["PYOPENGL_PLATFORM"] = cfg.mujoco_gl
        if cfg.libero_config_path:
            os.environ["LIBERO_CONFIG_PATH"] = cfg.libero_config_path
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(int(cfg.torch_threads))
        from ivra.eval.libero.install import import_libero

        import_libero()
        from libero.libero import benchmark

        with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] using task orders ..." here
            self._suite = benchmark.get_benchmark_dict()[cfg.suite]()

    def _get_env(self, task_id: int):
        if self._env is not None and self._env_task == task_id:
            return self._env
        self._close_env()
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task = self._suite.get_task(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        res = int(self.config.resolution)
        self._env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=res, camera_widths=res)
        self._env_task = task_id
        return self._env

    def _close_env(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            except Exception:  # noqa: BLE001 -- a broken env is dropped either way
                pass
        self._env, self._env_task = None, None

    def teardown(self) -> None:
        """Close the simulator while its renderer's EGL/OSMesa display is still alive (the executor calls this
        before the process ends; left to interpreter shutdown, robosuite's render-context ``__del__`` runs after
        the display was terminated and prints an EGL_NOT_INITIALIZED traceback per context)."""
        self._close_env()
        import gc

        gc.collect()

    def _get_policy(self):
        if self._policy is None:
            self._policy = build_policy(self.config.policy, self.config.policy_kwargs)
        return self._policy

    def run(self, unit: dict) -> dict:
        cfg = self.config
        if unit["suite"] != cfg.suite:
            raise ValueError(f"unit of suite {unit['suite']} given to a {cfg.suite} job")
        if unit["arm"] not in cfg.arms:
            raise ValueError(f"unknown arm {unit['arm']!r}; this run has {sorted(cfg.arms)}")
        task_id, idx = int(unit["task_id"]), int(unit["init_state"])
        task = self._suite.get_task(task_id)
        if task_id not in self._init_states:
            self._init_states[task_id] = self._suite.get_task_init_states(task_id)
        init_states = self._init_states[task_id]
        if not 0 <= idx < len(init_states):
            raise IndexError(f"init state {idx} out of range: task {task_id} has {len(init_states)}")

        policy = self._get_policy()
        ivra_cfg = cfg.arms[unit["arm"]]
        if hasattr(policy, "set_ivra"):
            policy.set_ivra(ivra_cfg)
        elif ivra_cfg:
            raise ValueError(f"policy {cfg.policy!r} cannot take IVRA settings (no set_ivra)")

        env = self._get_env(task_id)
        counters = getattr(policy, "ivra_counters", None)
        before = counters() if counters else None
        t_start = time.perf_counter()
        sim_time = policy_time = 0.0
        frames: list[np.ndarray] = []
        overlays: list[np.ndarray] = []
        want_video = cfg.video_dir is not None
        try:
            env.seed(int(unit["seed"]))
            env.reset()
            obs = env.set_init_state(init_states[idx])
            runner = EpisodeRunner(policy, execute=cfg.execute_steps, arms=False)  # the arm is set above
            episode = runner.start(int(unit["seed"]))
            wait = list(protocol.WAIT_ACTION)
            t0 = time.perf_counter()
            for _ in range(cfg.wait_steps):
                obs, _, done, _ = env.step(wait)
            sim_time += time.perf_counter() - t0
            success, steps, reward = False, 0, 0.0
            for _ in range(cfg.steps):
                pobs = policy_observation(obs)
                if want_video:
                    frames.append(pobs["image"])
                t0 = time.perf_counter()
                action = runner.step([episode], [pobs], [task.language])[0]
                policy_time += time.perf_counter() - t0
                if want_video and hasattr(policy, "overlay"):
                    ov = policy.overlay()
                    if ov is not None:
                        overlays.append(ov)
                t0 = time.perf_counter()
                obs, reward, done, _ = env.step(action.tolist())
                sim_time += time.perf_counter() - t0
                steps += 1
                if done:
                    success = True
                    break
            if want_video:
                frames.append(policy_observation(obs)["image"])
        except BaseException:
            self._close_env()  # never reuse an env in an unknown state
            raise
        wall = time.perf_counter() - t_start
        after = counters() if counters else None
        ivra_stats = {k: after[k] - (before or {}).get(k, 0) for k in after} if after else None
        env_steps = steps + cfg.wait_steps
        video = None
        if want_video and frames:
            from ivra.eval.video import write_video

            base = Path(cfg.video_dir) / video_name(unit["key"])
            written = write_video(
                base.with_suffix(".mp4"),
                frames,
                fps=cfg.video_fps,
                overlays=overlays if len(overlays) == len(frames) - 1 else None,
            )
            video = written.name
        return {
            "suite": unit["suite"],
            "task_id": task_id,
            "task": task.language,
            "init_state": idx,
            "seed": int(unit["seed"]),
            "arm": unit["arm"],
            "policy": cfg.policy,
            "ivra": ivra_cfg,
            "ivra_stats": ivra_stats,  # forward passes / visual tokens IVRA edited in this episode
            "success": bool(success),
            "steps": steps,
            "env_steps": env_steps,
            "reward": float(reward),
            "video": video,
            "_meta": {
                "wall_s": round(wall, 3),
                "sim_s": round(sim_time, 3),
                "policy_s": round(policy_time, 3),
                "env_steps_per_s": round(env_steps / wall, 3) if wall > 0 else None,
            },
        }
