"""LIBERO simulator throughput on this machine: env steps/s with and without rendering, per renderer and
resolution, and the policy cost of the tiny random-weight VLA; prints a Markdown table and episodes/hour.

    .venv/bin/python benchmarks/libero_throughput.py [--steps 60] [--resolutions 128,256] [--renderers egl,osmesa]

Each configuration runs in a fresh subprocess (MUJOCO_GL is fixed per process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import numpy as np
from ivra.eval.libero.install import import_libero
import_libero()
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from libero.libero.envs.env_wrapper import ControlEnv
res, steps, render = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
suite = benchmark.get_benchmark_dict()["libero_spatial"]()
task = suite.get_task(0)
init = suite.get_task_init_states(0)
bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
t = time.perf_counter()
if render:
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=res, camera_widths=res)
else:
    env = ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_offscreen_renderer=False, has_renderer=False)
make_s = time.perf_counter() - t
env.seed(0)
t = time.perf_counter(); env.reset(); obs = env.set_init_state(init[0]); reset_s = time.perf_counter() - t
t = time.perf_counter()
for _ in range(steps):
    obs, r, done, info = env.step([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
step_s = (time.perf_counter() - t) / steps
policy_s = None
if render and os.environ.get("IVRA_BENCH_POLICY"):
    import torch
    torch.set_num_threads(1)
    from ivra.eval.libero.job import policy_observation
    from ivra.policies.vla import TinyVLAPolicy
    p = TinyVLAPolicy()
    p.set_ivra({"layer": 2, "lam": 0.3})
    o = policy_observation(obs)
    p.act([o], [task.language])
    t = time.perf_counter()
    for _ in range(20):
        p.act([o], [task.language])
    policy_s = (time.perf_counter() - t) / 20
print(json.dumps({"make_s": make_s, "reset_s": reset_s, "step_s": step_s, "policy_s": policy_s}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolutions", default="128,256")
    ap.add_argument("--renderers", default="egl,osmesa")
    args = ap.parse_args()
    from ivra.eval.libero.install import child_env

    rows = []
    configs = [("none", 0, False)] + [
        (gl, int(r), True) for gl in args.renderers.split(",") for r in args.resolutions.split(",")
    ]
    for gl, res, render in configs:
        env = child_env(MUJOCO_GL=gl if render else "egl", PYOPENGL_PLATFORM=gl if render else "egl")
        if render and res == 256:
            env["IVRA_BENCH_POLICY"] = "1"
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(res), str(args.steps), "1" if render else "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            print(f"{gl} {res}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((gl, res, m))
    print(f"cores: {os.cpu_count()}, steps timed per config: {args.steps}\n")
    print(
        "| renderer | resolution | env make s | reset s | env steps/s | tiny-VLA s/step | spatial episodes/h (230 steps, 1 worker) |"
    )
    print("|---|---|---|---|---|---|---|")
    for gl, res, m in rows:
        per_step = m["step_s"] + (m["policy_s"] or 0.0)
        episode_s = m["reset_s"] + 230 * per_step
        print(
            f"| {gl if res else 'no rendering'} | {res or '-'} | {m['make_s']:.1f} | {m['reset_s']:.1f} | "
            f"{1 / m['step_s']:.1f} | {m['policy_s'] if m['policy_s'] is None else round(m['policy_s'], 4)} | "
            f"{3600 / episode_s:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
