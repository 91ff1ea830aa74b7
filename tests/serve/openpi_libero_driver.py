"""Runs in the openpi-client environment (.venv-openpi: the unmodified PyPI ``openpi-client`` plus a torch-free
LIBERO, made by scripts/setup_openpi_client.sh): openpi's LIBERO example loop against a policy server.

    python openpi_libero_driver.py --host 127.0.0.1 --port PORT --episodes 2 --max-steps 15 --out out.npz

What it does is openpi's ``examples/libero/main.py`` (Physical-Intelligence/openpi at commit
15a9616a00943ada6c20a0f158e3adb39df2ccac), step for step: ``OffScreenRenderEnv`` at 256 px seeded 7, ``reset``,
``set_init_state(initial_states[episode])``, 10 wait steps of ``[0]*6 + [-1]``, then per step the 180-degree
rotated agentview and wrist images, ``image_tools.resize_with_pad`` to 224 px and ``convert_to_uint8``, the 8-d
state (eef position, axis-angle of the eef quaternion by the example's own ``_quat2axisangle``, gripper qpos), one
``client.infer`` whenever the action plan is empty, the plan extended with ``chunk[:replan_steps]`` (default 5),
one action popped and stepped. One client connection for all episodes, as in the example. Differences, all for a
short test: ``--max-steps`` caps the policy steps (the example uses the suite's 220..520), no video, and an
exception is recorded and ends the run with exit 1 instead of being logged and counted as a failed episode.

``out.npz``: ``meta`` (JSON: server metadata, per episode the steps, queries, done flag and chunk shapes; the
error, if any) and, per query, the observation sent (``image``, ``wrist``, ``state``) and the chunk received.
"""

import argparse
import collections
import json
import math
import pathlib
import sys
import traceback

import numpy as np
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from openpi_client import image_tools
from openpi_client import websocket_client_policy as _websocket_client_policy

LIBERO_DUMMY_ACTION = [0.0] * 6 + [-1.0]
LIBERO_ENV_RESOLUTION = 256


def _quat2axisangle(quat):
    """openpi's copy of robosuite's quat2axisangle (examples/libero/main.py)."""
    if quat[3] > 1.0:
        quat[3] = 1.0
    elif quat[3] < -1.0:
        quat[3] = -1.0
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=15)
    ap.add_argument("--replan-steps", type=int, default=5)
    ap.add_argument("--wait-steps", type=int, default=10)
    ap.add_argument("--resize", type=int, default=224)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    np.random.seed(args.seed)
    task_suite = benchmark.get_benchmark_dict()[args.suite]()
    task = task_suite.get_task(args.task)
    initial_states = task_suite.get_task_init_states(args.task)
    bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(
        bddl_file_name=bddl, camera_heights=LIBERO_ENV_RESOLUTION, camera_widths=LIBERO_ENV_RESOLUTION
    )
    env.seed(args.seed)
    client = _websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    record = {"server": client.get_server_metadata(), "task": task.language, "episodes": [], "error": None}
    sent = {"image": [], "wrist": [], "state": [], "chunk": []}
    try:
        for episode_idx in range(args.episodes):
            env.reset()
            action_plan = collections.deque()
            obs = env.set_init_state(initial_states[episode_idx])
            t, steps, queries, done, shapes = 0, 0, 0, False, []
            while t < args.max_steps + args.wait_steps:
                if t < args.wait_steps:
                    obs, reward, done, info = env.step(LIBERO_DUMMY_ACTION)
                    t += 1
                    continue
                img = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])
                wrist_img = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
                img = image_tools.convert_to_uint8(image_tools.resize_with_pad(img, args.resize, args.resize))
                wrist_img = image_tools.convert_to_uint8(
                    image_tools.resize_with_pad(wrist_img, args.resize, args.resize)
                )
                if not action_plan:
                    element = {
                        "observation/image": img,
                        "observation/wrist_image": wrist_img,
                        "observation/state": np.concatenate(
                            (
                                obs["robot0_eef_pos"],
                                _quat2axisangle(obs["robot0_eef_quat"]),
                                obs["robot0_gripper_qpos"],
                            )
                        ),
                        "prompt": str(task.language),
                    }
                    action_chunk = client.infer(element)["actions"]
                    assert len(action_chunk) >= args.replan_steps, (
                        f"We want to replan every {args.replan_steps} steps, but policy only predicts "
                        f"{len(action_chunk)} steps."
                    )
                    action_plan.extend(action_chunk[: args.replan_steps])
                    queries += 1
                    shapes.append(list(np.shape(action_chunk)))
                    sent["image"].append(img)
                    sent["wrist"].append(wrist_img)
                    sent["state"].append(np.asarray(element["observation/state"], dtype=np.float64))
                    sent["chunk"].append(np.asarray(action_chunk, dtype=np.float64))
                action = action_plan.popleft()
                obs, reward, done, info = env.step(action.tolist())
                steps += 1
                if done:
                    break
                t += 1
            record["episodes"].append(
                {"steps": steps, "queries": queries, "done": bool(done), "shapes": shapes}
            )
            print(
                f"episode {episode_idx}: {steps} steps, {queries} chunks of shape {tuple(shapes[0])}, "
                f"success {bool(done)}",
                flush=True,
            )
    except Exception:  # noqa: BLE001 -- recorded: the test fails on it, naming it
        record["error"] = traceback.format_exc()
    finally:
        env.close()
    np.savez(args.out, meta=json.dumps(record, default=str), **{k: np.asarray(v) for k, v in sent.items()})
    return 1 if record["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
