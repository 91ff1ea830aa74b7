"""LIBERO closed-loop episodes as :func:`ivra.eval.executor.execute` work units, K of them in lockstep.

A unit is ``{"key", "suite", "task_id", "init_state", "seed", "arm"}`` and alone decides the scene:
``env.reset()`` -> ``env.set_init_state(init_states[init_state])`` -> wait steps -> policy until done or
``max_steps``. A job runs the units of every suite in ``config.suites`` (a base suite and its LIBERO-PRO
perturbations: one simulator per lane per task of that suite). The simulator is seeded as the protocol preset says
(``env_seeding``): ``episode`` -- ``env.seed(unit seed)`` before the reset; ``task`` -- ``env.seed(env_seed)`` then
``init_state`` resets, replaying the resets of the episodes a task-seeded loop (OpenVLA's, openpi's) runs before
this one, then the episode's own reset. The instruction is ``task.language`` or, for the suites whose perturbation
is the instruction (``protocol.instruction_source``), the one the environment parsed from the BDDL file. Both arms of an A/B get the same units (same scene, same episode seed: the policy's noise of chunk k is seeded by
``ivra.episodes.chunk_seed(seed, k)``).

:meth:`LiberoJob.run_lockstep` steps K units together in one worker: K simulators (one per lane), one
:class:`ivra.episodes.EpisodeRunner` step per control step for every lane still running (one batched ``predict``
for the lanes whose action queue is empty), each lane with its own episode seed and arm; a lane that finishes
leaves the batch. A lane's episode is the one it gets alone (its result, including ``actions_sha1``, a digest of
every action it executed, is the same for any K); a lane that raises is that unit's error, the others finish.

How arms reach the policy: a ``per_sample_ivra`` policy that reports no IVRA counters (``sim``, a served policy)
gets every lane in one call with per-row arms (:func:`ivra.policies.base.predict_with_arms`); any other policy
gets one call per arm, its arm set with ``set_ivra`` -- the sub-batches ``predict_with_arms`` would make anyway,
and for a policy with ``ivra_counters`` (tiny-vla, the VLA wrappers) the way each episode's ``ivra_stats`` stay
its own: the per-sample path attaches its handles for one call and keeps no counters. A policy call that raises
fails the lanes in it; a simulator that raises fails its lane.

The simulators and the policy are built lazily inside the worker (``setup()`` and the first unit of a task); a
worker keeps idle simulators for the next batch, at most as many as its largest batch had lanes, those of the
tasks it ran last first.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import io
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivra.episodes import Episode, EpisodeRunner
from ivra.eval.libero import protocol, render
from ivra.policies.base import ivra_key
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
    suites: list | None = None  # the suites whose units this job runs (None: [suite])
    protocol: str = "ivra"  # the preset (protocol.PRESETS) whose step budgets apply when max_steps is None
    env_seeding: str = "episode"  # "episode" | "task" (see the module docs)
    env_seed: int = 0  # the task-wide seed of env_seeding "task"
    render: str = "demand"  # "demand": cameras only for the observations read (render.py); "every": every step

    @property
    def steps(self) -> int:
        if self.max_steps is not None:
            return int(self.max_steps)
        return protocol.preset(self.protocol).steps(self.suite)

    @property
    def all_suites(self) -> list[str]:
        return list(self.suites or [self.suite])

    def to_dict(self) -> dict:
        d = asdict(self)
        # fields at their default are left out: runs from before they existed keep their fingerprint
        for key, default in (
            ("suites", None),
            ("protocol", "ivra"),
            ("env_seeding", "episode"),
            ("env_seed", 0),
        ):
            if d[key] == default:
                del d[key]
        d["effective_max_steps"] = self.steps
        return d


class NonFiniteAction(RuntimeError):
    """A policy answered NaN or inf: the action is not executed, the episode ends in this error."""


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


def bddl_instruction(env) -> str:
    """The instruction the environment parsed from its BDDL file (``env.language_instruction``), without the quotes
    a BDDL file may put around it."""
    return str(env.language_instruction).strip().strip('"').strip()


def reset_to(
    env, init_state, env_seeding: str, seed: int, env_seed: int, index: int, on_demand: bool = False, read: bool = True
):
    """Seed and reset ``env`` and set the initial state; returns the observation.

    ``episode``: ``env.seed(seed)``, reset. ``task``: ``env.seed(env_seed)``, ``index`` resets (those of the earlier
    episodes of a loop that seeds once per task and runs the initial states in order), then the episode's reset.
    LIBERO's ``env.seed`` seeds numpy's global generator, so the whole sequence runs back to back.
    ``on_demand`` (:mod:`ivra.eval.libero.render`): the resets' camera images, which nobody reads, are not rendered,
    nor the initial state's unless ``read``."""
    if env_seeding not in ("episode", "task"):
        raise ValueError(f"unknown env_seeding {env_seeding!r}; expected episode or task")
    with render.unread(on_demand):
        if env_seeding == "episode":
            env.seed(seed)
        else:
            env.seed(env_seed)
            for _ in range(index):
                env.reset()
        env.reset()
    with render.unread(on_demand and not read):
        return env.set_init_state(init_state)


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


def actions_digest(actions: list[np.ndarray]) -> str:
    """sha1 of the executed actions rounded to 6 decimals (float64, -0.0 as 0.0): equal digests, equal actions."""
    arr = np.round(np.asarray(actions, dtype=np.float64).reshape(len(actions), -1), 6) + 0.0
    return hashlib.sha1(np.ascontiguousarray(arr, dtype="<f8").tobytes()).hexdigest()


@dataclass(eq=False)  # compared and hashed by identity
class _Lane:
    """One unit's episode in a lockstep batch."""

    index: int
    unit: dict
    suite: str
    task_id: int
    instruction: str
    ivra: dict | None
    env: Any
    obs: Any
    episode: Episode | None = None
    t_start: float = 0.0
    start_s: float = 0.0  # reset, initial state and wait steps
    wall: float = 0.0
    sim_s: float = 0.0
    policy_s: float = 0.0
    steps: int = 0
    success: bool = False
    reward: float = 0.0
    actions: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    overlays: list = field(default_factory=list)
    overlay: Any = None
    overlays_ok: bool = True
    ivra_calls: int = 0
    ivra_tokens: float = 0
    batch_fallback_rows: int = 0
    counted: bool = False  # the policy reported IVRA counters for this lane's calls
    rendered: bool = True  # obs holds camera images (False: a step rendered on demand that nobody was to read)

    @property
    def arm_key(self) -> str | None:
        return ivra_key(self.ivra)

    @property
    def pool(self) -> tuple[str, int]:
        return (self.suite, self.task_id)


class LiberoJob:
    """Picklable; ``setup()`` and the environments/policy happen in the worker process.

    ``policy``: an already-built policy object to use instead of building ``config.policy`` (for the
    ``inline`` executor, e.g. a model already loaded in this process); it is not shipped to workers.
    ``simulators_from``: a set-up job of this process (same suite and resolution) whose suite, initial states and
    idle simulators this one takes over, so that several policies run on one set of simulators (tests, benchmarks).
    """

    def __init__(self, config: LiberoConfig, policy: Any = None, simulators_from: LiberoJob | None = None):
        self.config = config
        self._suites: dict[str, Any] = {}  # suite name -> LIBERO benchmark object
        self._envs: dict[tuple, list] = {}  # (suite, task id) -> idle simulators of that task
        self._peak = 1  # the most lanes a batch of this worker had: the simulators it keeps
        self._init_states: dict[tuple, Any] = {}
        self._policy = policy
        self._policy_given = policy is not None
        self._frozen = False
        if simulators_from is not None:
            other = simulators_from.config
            if (other.all_suites, other.resolution) != (config.all_suites, config.resolution):
                raise ValueError(
                    f"simulators of {other.all_suites} at {other.resolution} px cannot run {config.all_suites} at "
                    f"{config.resolution} px"
                )
            self._suites, self._init_states = simulators_from._suites, simulators_from._init_states
            self._envs, simulators_from._envs = simulators_from._envs, {}
            self._frozen, simulators_from._frozen = simulators_from._frozen, False  # this one's teardown unfreezes
            self._peak = simulators_from._peak

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
        render.check_mode(cfg.render)
        if cfg.render == "demand":
            render.install()
        from libero.libero import benchmark

        with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] using task orders ..." here
            known = benchmark.get_benchmark_dict()
            self._suites = {name: known[name]() for name in cfg.all_suites}
        self._freeze()

    def _freeze(self) -> None:
        """Leave every object that exists now (imported modules, a given policy) out of Python's cyclic garbage
        collector until :meth:`teardown` (``gc.freeze``). robosuite collects garbage at every hard reset (``MjSim.free``),
        which walks every tracked object of the process: 0.18 s a reset on this project's 2-core machine with torch,
        transformers, LIBERO and tiny-vla loaded (450k objects), 0.0 s with them frozen. Only while this job has no
        simulator, so that a simulator it closes is collected at once as before; the frozen objects are only
        examined again after teardown (:func:`gc.unfreeze`), never freed while the job runs, and nothing that lives on
        after the job is kept from the collector."""
        if not self._envs:
            gc.collect()
            gc.freeze()
            self._frozen = True

    # -- simulators: a pool per task ---------------------------------------------------------------
    def _acquire_env(self, suite: str, task_id: int):
        idle = self._envs.get((suite, task_id))
        if idle:
            return idle.pop()
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task = self._suites[suite].get_task(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        res = int(self.config.resolution)
        return OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=res, camera_widths=res)

    def _release_env(self, pool: tuple[str, int], env) -> None:
        self._envs.setdefault(pool, []).append(env)

    @staticmethod
    def _close(env) -> None:
        try:
            env.close()
        except Exception:  # noqa: BLE001 -- a broken env is dropped either way
            pass

    def _trim_envs(self, keep_tasks: set[tuple], keep: int) -> None:
        """Keep at most ``keep`` idle simulators, those of ``keep_tasks`` first."""
        order = sorted(self._envs, key=lambda t: t in keep_tasks)  # other tasks' first: closed first
        total = sum(len(v) for v in self._envs.values())
        for task in order:
            idle = self._envs[task]
            while idle and total > keep:
                self._close(idle.pop())
                total -= 1
            if not idle:
                del self._envs[task]

    def _close_all(self) -> None:
        for idle in self._envs.values():
            for env in idle:
                self._close(env)
        self._envs = {}

    def teardown(self) -> None:
        """Close the simulators while their renderer's EGL/OSMesa display is still alive (the executor calls this
        before the process ends; left to interpreter shutdown, robosuite's render-context ``__del__`` runs after
        the display was terminated and prints an EGL_NOT_INITIALIZED traceback per context)."""
        self._close_all()
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        gc.collect()

    def _get_policy(self):
        if self._policy is None:
            self._policy = build_policy(self.config.policy, self.config.policy_kwargs)
            if self._frozen:  # the model and the modules it imported: frozen too
                self._freeze()
        return self._policy

    # -- episodes ----------------------------------------------------------------------------------
    def run(self, unit: dict) -> dict:
        """One episode (a lockstep batch of one)."""
        (out,) = self.run_lockstep([unit])
        if isinstance(out, BaseException):
            raise out
        return out

    def run_lockstep(self, units: list[dict]) -> list[dict | Exception]:
        """The units' episodes stepped together; per unit its result dict, or the exception that ended it."""
        cfg = self.config
        outs: list[dict | Exception | None] = [None] * len(units)
        lanes: list[_Lane] = []
        try:
            policy = self._get_policy()
            counted = callable(getattr(policy, "ivra_counters", None))
            one_call = bool(getattr(policy, "per_sample_ivra", False)) and not counted  # see the module docs
            runner = EpisodeRunner(policy, execute=cfg.execute_steps, arms=one_call)
        except Exception as exc:  # noqa: BLE001 -- every lane fails alike
            return [exc] * len(units)
        for i, unit in enumerate(units):
            try:
                lanes.append(self._start(i, unit, policy, runner))
            except Exception as exc:  # noqa: BLE001 -- this unit's error; the others run
                outs[i] = exc
        try:
            running = list(lanes)
            for _ in range(cfg.steps):
                if not running:
                    break
                failed = self._step(running, policy, runner, counted, one_call)
                for lane, exc in failed.items():
                    outs[lane.index] = exc
                    self._close(lane.env)  # never reuse an env in an unknown state
                    lane.env = None
                still = []
                for lane in running:
                    if lane in failed:
                        continue
                    if lane.success:
                        outs[lane.index] = self._finish(lane)
                    else:
                        still.append(lane)
                running = still
            for lane in running:  # out of steps
                outs[lane.index] = self._finish(lane)
        except BaseException:
            for lane in lanes:
                if lane.env is not None:
                    self._close(lane.env)
                    lane.env = None
            raise
        finally:
            for lane in lanes:
                if lane.env is not None:
                    self._release_env(lane.pool, lane.env)
                    lane.env = None
            self._peak = max(self._peak, len(units))
            self._trim_envs({lane.pool for lane in lanes}, self._peak)
        return [o if o is not None else RuntimeError("lane ended without a result") for o in outs]

    def _start(self, index: int, unit: dict, policy, runner: EpisodeRunner) -> _Lane:
        """Check the unit, take a simulator of its task, reset it to the unit's scene and run the wait steps."""
        cfg = self.config
        suite = unit["suite"]
        if suite not in cfg.all_suites:
            raise ValueError(f"unit of suite {suite} given to a job of {', '.join(cfg.all_suites)}")
        if unit["arm"] not in cfg.arms:
            raise ValueError(f"unknown arm {unit['arm']!r}; this run has {sorted(cfg.arms)}")
        task_id, idx = int(unit["task_id"]), int(unit["init_state"])
        bench = self._suites[suite]
        task = bench.get_task(task_id)
        if (suite, task_id) not in self._init_states:
            self._init_states[(suite, task_id)] = bench.get_task_init_states(task_id)
        init_states = self._init_states[(suite, task_id)]
        if not 0 <= idx < len(init_states):
            raise IndexError(f"init state {idx} out of range: task {task_id} has {len(init_states)}")
        ivra_cfg = cfg.arms[unit["arm"]]
        if ivra_cfg and not hasattr(policy, "set_ivra"):
            raise ValueError(f"policy {cfg.policy!r} cannot take IVRA settings (no set_ivra)")
        episode = runner.start(int(unit["seed"]), ivra_cfg)
        env = self._acquire_env(suite, task_id)
        t_start = time.perf_counter()  # the episode's wall time, simulator creation excluded
        try:
            t0 = time.perf_counter()
            demand = cfg.render == "demand"  # the wait steps' images are never read, the last one's is
            obs = reset_to(
                env, init_states[idx], cfg.env_seeding, int(unit["seed"]), cfg.env_seed, idx,
                on_demand=demand, read=cfg.wait_steps == 0,
            )  # fmt: skip
            instruction = (
                bddl_instruction(env) if protocol.instruction_source(suite) == "bddl" else task.language
            )
            wait = list(protocol.WAIT_ACTION)
            for i in range(cfg.wait_steps):
                with render.unread(demand and i < cfg.wait_steps - 1):
                    obs, _, _, _ = env.step(wait)
            sim = time.perf_counter() - t0
        except BaseException:
            self._close(env)
            raise
        return _Lane(
            index,
            unit,
            suite,
            task_id,
            instruction,
            ivra_cfg,
            env,
            obs,
            episode,
            t_start=t_start,
            start_s=sim,
            sim_s=sim,
        )

    def _step(
        self, running: list[_Lane], policy, runner: EpisodeRunner, counted: bool, one_call: bool
    ) -> dict:
        """One control step of every running lane; returns {lane: exception} for the lanes that failed."""
        want_video = self.config.video_dir is not None
        demand = self.config.render == "demand" and not want_video  # a video reads every frame
        pobs: dict[int, dict | None] = {}
        for lane in running:  # the observations read: by a lane that needs a chunk, by a video
            if want_video or not lane.episode.queue:
                if not lane.rendered:  # never: a step is rendered when its observation is to be read (below)
                    raise RuntimeError(f"{lane.unit['key']}: the observation to read was not rendered")
                pobs[id(lane)] = policy_observation(lane.obs)
            else:
                pobs[id(lane)] = None  # the runner reads only the observations of episodes with an empty queue
        if want_video:
            for lane in running:
                lane.frames.append(pobs[id(lane)]["image"])
        groups: dict[str | None, list[_Lane]] = {}
        for lane in running:  # one call for all (per-row arms), or one per arm
            groups.setdefault("all" if one_call else lane.arm_key, []).append(lane)
        failed: dict[_Lane, Exception] = {}
        actions: dict[int, np.ndarray] = {}
        for group in groups.values():
            need = [lane for lane in group if not lane.episode.queue]
            try:
                if not one_call and hasattr(policy, "set_ivra"):
                    policy.set_ivra(group[0].ivra)
                before = policy.ivra_counters() if counted else None
                t0 = time.perf_counter()
                acts = runner.step(
                    [lane.episode for lane in group],
                    [pobs[id(lane)] for lane in group],
                    [lane.instruction for lane in group],
                )
                dt = time.perf_counter() - t0
                after = policy.ivra_counters() if counted else None
            except Exception as exc:  # noqa: BLE001 -- the policy call failed: every lane in it
                for lane in group:
                    failed[lane] = exc
                continue
            for lane, a in zip(group, acts):
                actions[id(lane)] = a
                lane.policy_s += (
                    dt / max(1, len(need)) if lane in need else (0.0 if need else dt / len(group))
                )
            self._count(need, before, after)
            if want_video:
                self._overlays(policy, group, need)
        for lane in running:
            if lane in failed:
                continue
            a = actions[id(lane)]
            if not np.isfinite(a).all():  # never sent to the simulator: the episode's error, named
                failed[lane] = NonFiniteAction(
                    f"policy {self.config.policy!r} answered a non-finite action at step {lane.steps} of "
                    f"{lane.unit['key']}: {np.asarray(a).tolist()}"
                    + (f" ({policy.nonfinite_means})" if getattr(policy, "nonfinite_means", None) else "")
                    + "; it was not executed"
                )
                continue
            read = not (demand and lane.episode.queue)  # an empty queue: the next step predicts from this one
            try:
                t0 = time.perf_counter()
                with render.unread(not read):
                    lane.obs, reward, done, _ = lane.env.step(a.tolist())
                lane.sim_s += time.perf_counter() - t0
                lane.rendered = read
            except Exception as exc:  # noqa: BLE001 -- this lane's simulator failed
                failed[lane] = exc
                continue
            lane.actions.append(np.asarray(a, dtype=np.float64))
            lane.reward = float(reward)
            lane.steps += 1
            lane.success = bool(done)
        return failed

    @staticmethod
    def _count(need: list[_Lane], before: dict | None, after: dict | None) -> None:
        """Share one call's IVRA counters among the episodes whose chunk it predicted (all of one arm, alike rows:
        each edited the same number of visual tokens). ``calls`` per episode: its chunk predictions in which IVRA
        edited tokens; the affinity rows that fell back are not per row: they are kept per batch (``_meta``)."""
        if not need or after is None:
            return
        before = before or {}
        delta = {k: after[k] - before.get(k, 0) for k in after}
        n = len(need)
        tokens = delta.get("tokens", 0)
        share = tokens // n if tokens % n == 0 else tokens / n
        for lane in need:
            lane.counted = True
            lane.ivra_calls += int(delta.get("calls", 0) > 0)
            lane.ivra_tokens += share
            lane.batch_fallback_rows += int(delta.get("fallback_rows", 0))

    @staticmethod
    def _overlays(policy, group: list[_Lane], need: list[_Lane]) -> None:
        """The IVRA overlay of each lane's current chunk: from a call that predicted it alone, or by row where the
        policy's ``overlay(row=...)`` can tell rows apart; otherwise the lane's video has no overlay."""
        fn = getattr(policy, "overlay", None)
        if fn is None:
            return
        by_row = "row" in inspect.signature(fn).parameters
        for row, lane in enumerate(need):
            if len(need) == 1:
                lane.overlay = fn()
            elif by_row:
                lane.overlay = fn(row=row)
            else:
                lane.overlay, lane.overlays_ok = None, False
        for lane in group:
            if lane.overlay is not None:
                lane.overlays.append(lane.overlay)

    def _finish(self, lane: _Lane) -> dict | Exception:
        cfg = self.config
        unit = lane.unit
        try:
            lane.wall = time.perf_counter() - lane.t_start
            video = None
            if cfg.video_dir is not None:
                lane.frames.append(policy_observation(lane.obs)["image"])
                from ivra.eval.video import write_video

                base = Path(cfg.video_dir) / video_name(unit["key"])
                fits = lane.overlays_ok and len(lane.overlays) == len(lane.frames) - 1
                video = write_video(
                    base.with_suffix(".mp4"),
                    lane.frames,
                    fps=cfg.video_fps,
                    overlays=lane.overlays if fits else None,
                ).name
                lane.frames, lane.overlays = [], []
        except Exception as exc:  # noqa: BLE001 -- this lane's error
            return exc
        env_steps = lane.steps + cfg.wait_steps
        ivra_stats = (
            {"calls": lane.ivra_calls, "tokens": lane.ivra_tokens} if lane.counted and lane.ivra else None
        )
        meta = {
            "wall_s": round(lane.wall, 3),
            "start_s": round(lane.start_s, 3),
            "sim_s": round(lane.sim_s, 3),
            "policy_s": round(lane.policy_s, 3),
            "env_steps_per_s": round(env_steps / lane.wall, 3) if lane.wall > 0 else None,
        }
        if ivra_stats is not None:
            meta["ivra_batch_fallback_rows"] = lane.batch_fallback_rows
        return {
            "suite": unit["suite"],
            "task_id": lane.task_id,
            "task": lane.instruction,
            "instruction": lane.instruction,
            "perturbation": protocol.perturbation(unit["suite"]),
            "init_state": int(unit["init_state"]),
            "seed": int(unit["seed"]),
            "arm": unit["arm"],
            "policy": cfg.policy,
            "ivra": lane.ivra,
            # IVRA's edits in this episode: its chunk predictions IVRA edited, the visual tokens edited in them
            "ivra_stats": ivra_stats,
            "success": bool(lane.success),
            "steps": lane.steps,
            "env_steps": env_steps,
            "reward": float(lane.reward),
            "chunks": lane.episode.chunks,
            "actions_sha1": actions_digest(lane.actions),
            "video": video,
            "_meta": meta,
        }
