"""ivra inside inspect-robots (PyPI ``inspect-robots`` 0.60.0): a policy plug-in and the tabletop benchmark.

Registered in ivra's ``pyproject.toml``::

    [project.entry-points."inspect_robots.policies"]      ivra = ...:IvraPolicy
    [project.entry-points."inspect_robots.embodiments"]   ivra-tabletop = ...:TabletopEmbodiment
    [project.entry-points."inspect_robots.tasks"]         ivra-tabletop = ...:tabletop_task

so that, with ivra installed, ``inspect-robots run --policy ivra -P policy=NAME -P ivra=layer=2,lam=0.3 ...`` runs
any policy of :mod:`ivra.policies.registry` with one IVRA arm, and ``--embodiment ivra-tabletop --task
ivra-tabletop`` runs ivra's tabletop benchmark. ``-P`` keys of ``--policy ivra``:

==================  ==============================================================================================
``policy``          an ivra policy name (``low``, ``zero``, ``sim:action_dim=2``, ``lerobot:pi0``, ``ws://...``)
``kwargs``          its constructor keywords, ``k=v,...`` (e.g. ``action_dim=2`` for ``zero``)
``ivra``            the IVRA setting, ``layer=2,lam=0.3`` (fields of :class:`ivra.IVRAConfig`); absent: baseline
``arm``             ``ivra`` (every trial gets the setting; the default when ``ivra`` is given), ``baseline``
                    (none; the default otherwise) or ``blind`` (trial i of the run gets the arm
                    :func:`ivra.serve.blind.arm_of` (``blind_seed``, i): balanced in every two consecutive trials)
``blind_seed``      the blind schedule's seed (default 0)
``seed``            the run's ``--seed`` (default 0, inspect-robots' default): episode seeds are computed from it
``camera``          the embodiment camera the policy sees as its image (default: the first one it declares)
``wrist``           a second camera, given to the policy as its wrist image (default: none)
``state``           state keys, ``a,b``, concatenated in that order as the policy's state (default: none)
``execute``         actions executed per predicted chunk (default: the policy's ``execute_steps``)
==================  ==============================================================================================

Each trial is one ivra episode, as :class:`ivra.episodes.EpisodeRunner` runs it: its seed is inspect-robots' trial
seed, ``derive_seed(seed, scene.init_seed, epoch)`` (in a blind run, the second trial of a pair that runs the
first one's scene again takes the first one's seed, so both arms of the pair draw the same noise), the k-th
chunk's noise is seeded by
``ivra.episodes.chunk_seed(episode seed, k)``, and each ``act`` answers the first ``execute`` actions of one
predicted chunk. ``on_trial_end`` writes the trial's ``ivra`` metadata (policy, arm, setting, episode seed, chunks;
in a blind run, the schedule's seed and the trial's index and pair) into the EvalLog's ``trial_metadata``;
inspect-robots takes an operator's verdict before that hook runs, so a blind operator grades before the arm is
written. A non-finite action is an error naming the policy (the trial ends as an inspect-robots ``PolicyError``).

The tabletop embodiment is :class:`ivra.tabletop.env.TabletopEnv`; its scene is the work unit ``(split, seed,
task)`` of the task's scene metadata, so an inspect-robots trial is the episode ``ivra demo`` runs for that seed
(its trial seed is not used; a scene without that metadata, e.g. ``--instruction``, uses the trial seed on the
``train`` split). Actions are absolute ``[pick_x, pick_y, place_x, place_y]`` points in [0, 1], declared with a
per-step limit of the whole range, so inspect-robots' default guardrails (bounds clamp, delta limit) never change
an action inside the table.

Facts this module is built on (inspect-robots 0.60.0, the wheel's files): ``registry.py`` (entry-point groups
``inspect_robots.{policies,embodiments,tasks}``, factories called with the ``-P/-E/-T`` keywords), ``policy.py``
(``info``, ``config``, ``reset(scene)``, ``act(observation) -> ActionChunk``, optional ``bind(embodiment_info)``,
``on_trial_start(scene_id, epoch, log_dir, run_id)``, ``on_trial_end(record, log_dir, run_id)`` whose
``record.metadata`` lands in the log), ``rollout.py`` (``derive_seed`` = crc32 of ``"{eval_seed}:{scene_seed}:
{epoch}"``; ``policy.reset(scene)`` runs before ``embodiment.reset(scene, seed=trial_seed)``), ``eval.py``
(``bind`` before the compatibility check), ``controller.py`` (``DefaultController`` plays the whole chunk before
asking again), ``approver.py`` (``DeltaLimitApprover`` takes a declared ``max_step`` for absolute modes).

Imports no torch at import time (the policy it builds may).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from inspect_robots.embodiment import (
    PRIVILEGED_SUCCESS,
    RENDERABLE,
    RESETTABLE,
    SEEDABLE,
    EmbodimentBase,
    EmbodimentInfo,
)
from inspect_robots.policy import PolicyBase, PolicyConfig, PolicyInfo
from inspect_robots.rollout import derive_seed
from inspect_robots.scene import Scene
from inspect_robots.scorer import success_at_end
from inspect_robots.spaces import ActionSemantics, Box, CameraSpec, ObservationSpace
from inspect_robots.task import Task
from inspect_robots.types import Action, ActionChunk, Observation, StepResult

ARMS = ("baseline", "ivra", "blind")


def _key_values(text: Any, what: str) -> dict:
    """``-P`` value ``a=1,b=x`` as a dict (None or "" -> {}), a ValueError naming the key otherwise."""
    if text is None or text == "":
        return {}
    import argparse

    from ivra.cliargs import key_values

    try:
        return key_values(str(text))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"-P {what}={text!r}: {exc}") from None


def _names(text: Any) -> list[str]:
    return [s.strip() for s in str(text or "").split(",") if s.strip()]


class IvraPolicy(PolicyBase):
    """``--policy ivra``: one ivra policy with a fixed or blind IVRA arm (see the module docstring)."""

    def __init__(
        self,
        policy: str = "low",
        kwargs: str | None = None,
        ivra: str | None = None,
        arm: str | None = None,
        blind_seed: int = 0,
        seed: int = 0,
        camera: str | None = None,
        wrist: str | None = None,
        state: str | None = None,
        execute: int | None = None,
    ):
        from ivra.episodes import EpisodeRunner
        from ivra.policies.registry import build_policy

        setting = _key_values(ivra, "ivra") or None
        arm = arm or ("ivra" if setting else "baseline")
        if arm not in ARMS:
            raise ValueError(f"-P arm={arm!r}: expected one of {', '.join(ARMS)}")
        if arm in ("ivra", "blind") and not setting:
            raise ValueError(f"-P arm={arm} needs the IVRA setting: -P ivra=layer=..,lam=..")
        if arm == "baseline" and setting:
            raise ValueError("-P arm=baseline with -P ivra=...: a baseline arm has no IVRA setting")
        if setting:
            from ivra.config import IVRAConfig

            setting = IVRAConfig(**setting).to_dict()  # validated; a bad field is a one-line ValueError
        self.policy_name = str(policy)
        self.setting = setting
        self.arm = arm
        self.blind_seed = int(blind_seed)
        self.seed = int(seed)
        self.camera, self.wrist = camera, wrist
        self.state_keys = _names(state)
        self.policy = build_policy(self.policy_name, _key_values(kwargs, "kwargs"))
        self.runner = EpisodeRunner(self.policy, execute=None if execute is None else int(execute))
        self.config = PolicyConfig(action_horizon=self.runner.execute)
        self.info = PolicyInfo(name=f"ivra:{self.policy_name}", action_space=Box(shape=(1,)))
        self._trials = 0  # trials started in this run (the blind schedule's index)
        self._pair_first: tuple[str, int] | None = None  # (scene id, seed) of the first trial of a blind pair
        self._episode = None
        self._current: dict | None = None
        self._instruction: str | None = None

    # -- inspect-robots hooks -------------------------------------------------------------------------
    def bind(self, embodiment_info: EmbodimentInfo) -> None:
        """Take the embodiment's action space; require the cameras and state keys this policy reads."""
        cams = {c.name: c for c in embodiment_info.observation_space.cameras}
        if self.camera is None:
            if not embodiment_info.observation_space.cameras:
                raise ValueError(f"embodiment {embodiment_info.name!r} has no camera for the policy's image")
            self.camera = embodiment_info.observation_space.cameras[0].name
        wanted = [self.camera] + ([self.wrist] if self.wrist else [])
        self.info = PolicyInfo(
            name=f"ivra:{self.policy_name}",
            action_space=embodiment_info.action_space,
            observation_space=ObservationSpace(
                cameras=tuple(cams.get(n, CameraSpec(n, 0, 0)) for n in wanted),
                state_keys=frozenset(self.state_keys),
            ),
        )

    def on_trial_start(self, scene_id: str, epoch: int, log_dir: str, run_id: str) -> None:
        index = self._trials
        self._trials += 1
        if self.arm == "blind":
            from ivra.serve.blind import arm_of

            arm = arm_of(self.blind_seed, index)
        else:
            arm = self.arm
        self._current = {"arm": arm, "index": index, "epoch": int(epoch)}

    def reset(self, scene: Scene) -> None:
        if self.arm == "blind" and self._current is None:
            raise RuntimeError(
                "a blind ivra policy needs inspect-robots' on_trial_start hook (run it with eval())"
            )
        cur = self._current or {"arm": self.arm, "index": None, "epoch": 0}
        trial_seed = derive_seed(self.seed, scene.init_seed, cur["epoch"])
        seed = trial_seed
        if self.arm == "blind":
            # the two trials of a blind pair, one scene run twice, draw the same noise: the first trial's seed
            if cur["index"] % 2 == 0:
                self._pair_first = (scene.id, trial_seed)
            elif self._pair_first is not None and self._pair_first[0] == scene.id:
                seed = self._pair_first[1]
        self._episode = self.runner.start(seed, self.setting if cur["arm"] == "ivra" else None)
        self._instruction = scene.instruction
        self._current = {**cur, "seed": seed, "trial_seed": trial_seed}

    def act(self, observation: Observation) -> ActionChunk:
        if self._episode is None:
            raise RuntimeError("act() before reset()")
        obs = self._observation(observation)
        instruction = observation.instruction or self._instruction or ""
        ep = self._episode
        actions = [self.runner.step([ep], [obs], [instruction])[0]]  # draws one chunk into ep.queue
        while ep.queue:
            actions.append(ep.queue.popleft())
            ep.steps += 1
        arr = np.asarray(actions, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            why = getattr(self.policy, "nonfinite_means", "")
            raise ValueError(
                f"ivra policy {self.policy_name!r} answered a non-finite action (chunk {ep.chunks - 1} of the "
                f"episode seeded {ep.seed})" + (f": {why}" if why else "")
            )
        return ActionChunk(actions=[Action(data=a) for a in arr])

    def on_trial_end(self, record: Any, log_dir: str, run_id: str) -> None:
        cur, ep = self._current or {}, self._episode
        if not cur or ep is None:
            return
        meta = {
            "policy": self.policy_name,
            "arm": cur["arm"],
            "setting": self.setting if cur["arm"] == "ivra" else None,
            "episode_seed": int(cur["seed"]),
            "trial_seed": int(cur["trial_seed"]),
            "chunks": int(ep.chunks),
        }
        if self.arm == "blind":
            meta["blind"] = {"seed": self.blind_seed, "trial": cur["index"], "pair": cur["index"] // 2}
        record.metadata["ivra"] = meta
        self._current, self._episode = None, None
        if record.seed is not None and int(record.seed) != int(cur["trial_seed"]):
            raise ValueError(
                f"the ivra policy computed trial seed {cur['trial_seed']} from -P seed={self.seed}, but the trial seed is "
                f"{record.seed}: pass -P seed=<the run's --seed>"
            )

    # -- helpers --------------------------------------------------------------------------------------
    def _observation(self, observation: Observation) -> dict[str, Any]:
        images = observation.images
        if self.camera not in images:
            raise ValueError(f"no camera {self.camera!r} in the observation; it has {sorted(images)}")
        out: dict[str, Any] = {"image": np.asarray(images[self.camera])}
        if self.wrist:
            if self.wrist not in images:
                raise ValueError(f"no camera {self.wrist!r} in the observation; it has {sorted(images)}")
            out["wrist_image"] = np.asarray(images[self.wrist])
        if self.state_keys:
            missing = [k for k in self.state_keys if k not in observation.state]
            if missing:
                raise ValueError(f"no state {missing} in the observation; it has {sorted(observation.state)}")
            out["state"] = np.concatenate(
                [np.asarray(observation.state[k], dtype=np.float64).reshape(-1) for k in self.state_keys]
            )
        return out


# --- the tabletop benchmark ----------------------------------------------------------------------------

TABLETOP_LABELS = ("pick_x", "pick_y", "place_x", "place_y")


class TabletopEmbodiment(EmbodimentBase):
    """``--embodiment ivra-tabletop``: :class:`ivra.tabletop.env.TabletopEnv` (one camera ``top``)."""

    def __init__(self, resolution: int = 96):
        from ivra.tabletop.env import TabletopEnv

        self.env = TabletopEnv(resolution=int(resolution))
        res = self.env.resolution
        self.info = EmbodimentInfo(
            name="ivra-tabletop",
            action_space=Box(
                shape=(4,),
                low=np.zeros(4),
                high=np.ones(4),
                semantics=ActionSemantics(
                    control_mode="eef_abs_pose",
                    frame="camera",
                    dim_labels=TABLETOP_LABELS,
                    max_step=(1.0,) * 4,  # a pick-and-place primitive may reach anywhere on the table
                ),
            ),
            observation_space=ObservationSpace(cameras=(CameraSpec(name="top", height=res, width=res),)),
            control_hz=None,
            is_simulated=True,
            capabilities=frozenset({SEEDABLE, RESETTABLE, PRIVILEGED_SUCCESS, RENDERABLE}),
            docs=(
                "A 2D top-down tabletop: an action [pick_x, pick_y, place_x, place_y] in [0, 1] image coordinates "
                "(x right, y down) moves the topmost object under the pick point to the place point."
            ),
            environment_id="ivra-tabletop",
        )

    def reset(self, scene: Scene, *, seed: int | None = None) -> Observation:
        meta = dict(scene.metadata or {})
        split = meta.get("split", "train")
        ep_seed = meta.get("seed", scene.init_seed if scene.init_seed is not None else seed)
        obs, info = self.env.reset(seed=int(ep_seed or 0), options={"task": meta.get("task"), "split": split})
        return Observation(images={"top": obs["image"]}, instruction=obs["instruction"])

    def step(self, action: Action) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action.data, dtype=np.float64))
        reason = "success" if info["success"] else ("mistake" if info["mistake"] else None)
        return StepResult(
            observation=Observation(images={"top": obs["image"]}),
            reward=float(reward),
            terminated=bool(terminated),
            termination_reason=reason,
            truncated=bool(truncated),
            info={
                k: info[k] for k in ("success", "mistake", "task", "split", "seed", "n_done", "n_required")
            },
        )


def tabletop_task(
    split: str = "novel_object", n: int = 10, first_seed: int = 0, task: str | None = None
) -> Task:
    """``--task ivra-tabletop``: ``n`` episodes of one split, seeds ``first_seed ..``; scored by success."""
    from ivra.tabletop.tasks import check_task_split, make_episode

    check_task_split(task, split)
    n, first_seed = int(n), int(first_seed)
    if n < 1:
        raise ValueError(f"-T n={n}: expected a number of episodes >= 1")
    scenes, horizon = [], 1
    for seed in range(first_seed, first_seed + n):
        ep = make_episode(task, split, seed)
        horizon = max(horizon, int(ep.max_steps))
        scenes.append(
            Scene(
                id=f"{split}-{seed}",
                instruction=ep.instruction,
                init_seed=seed,
                metadata={"split": split, "seed": seed, "task": task},
            )
        )
    # the environment ends each episode itself (success, a mistake, or its own step budget); the horizon only
    # has to be long enough for every one of them
    return Task(
        name=f"ivra-tabletop-{split}",
        scenes=scenes,
        scorer=success_at_end(),
        max_steps=horizon,
        metadata={"split": split, "first_seed": first_seed, "n": n, "task": task},
    )


__all__ = ["IvraPolicy", "TabletopEmbodiment", "tabletop_task"]
