"""LIBERO throughput per worker on this machine.

    .venv/bin/python benchmarks/libero_throughput.py [--ks 1,4,8] [--max-steps 30] [--resolution 128] [--record]
    .venv/bin/python benchmarks/libero_throughput.py --part renderers [--steps 60] [--resolutions 128,256]

``--part lockstep`` (the default): episodes per hour of one worker stepping K episodes in lockstep
(``ivra eval libero --lockstep K``: K simulators, one batched policy call per step) for K = 1, 4, 8, for the
tiny random-weight VLA (this CPU) and the ``sim`` latency policy (``sim:fixed_ms=40,per_sample_ms=2``, a stand-in
for a GPU policy: its cost is a sleep). Short paired A/B episodes (libero_spatial task 0, 10 wait steps as the
protocol, ``--max-steps`` policy steps); the K simulators are created once before the clock starts (a worker reuses
them for a task's 50 initial states). Prints a Markdown table and writes the measurements as JSON: episodes/hour
measured, the per-step split (simulator, policy), and a projection -- computed, not measured -- to libero_spatial's
220-step budget from the measured reset and per-step times. The JSON goes to runs/benchmarks/libero_throughput_cpu.json
(untracked; ``--out`` or $IVRA_BENCH_OUT_DIR elsewhere); ``--record`` (or IVRA_BENCH_RECORD=1) updates the recorded
result under the tracked benchmarks/results/ instead.

``--part render``: render on demand (``ivra eval libero --render``) against rendering every step, in one run, on
full-length libero_spatial episodes (220 policy steps after 10 wait steps, task 0, 128 px; ``--max-steps`` to
shorten), for the single-step tiny VLA and the ``sim`` chunk policy (chunks of 50, no latency) executing 5, 10 and 50
actions per chunk, K = 1 and 4 episodes in lockstep: episodes per hour per worker, and where the time goes (reset and
wait steps, physics, rendering, policy). The episodes of both modes are checked to be identical.

``--part renderers``: env steps/s with and without rendering per renderer and resolution, and the tiny VLA's cost
per step; each configuration in a fresh subprocess (MUJOCO_GL is fixed per process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

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


def renderers(args) -> int:
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


BUDGET = 220  # libero_spatial's policy steps per episode (the protocol)
POLICIES = ("tiny-vla", "sim:fixed_ms=40,per_sample_ms=2")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _row(
    policy: str, k: int, batches: list[tuple[float, list[dict]]], max_steps: int, calls: int | None
) -> dict:
    """One (policy, K) measurement from its batches: (wall seconds, results with _meta) each."""
    results = [r for _, rs in batches for r in rs]
    meta = [r["_meta"] for r in results]
    wall = sum(w for w, _ in batches)
    n = len(results)
    start = sum(m["start_s"] for m in meta)  # resets, initial states, wait steps: one lane after another
    lock_steps = sum(max(r["steps"] for r in rs) for _, rs in batches)  # control steps of the batches
    sim_step = sum(m["sim_s"] - m["start_s"] for m in meta) / sum(r["steps"] for r in results)
    policy_per_lock_step = sum(m["policy_s"] for m in meta) / lock_steps
    step_wall = (wall - start) / lock_steps  # one control step of every lane of a batch
    start_per_episode = start / n
    projected_batch = k * start_per_episode + BUDGET * step_wall
    return {
        "policy": policy,
        "lockstep": k,
        "episodes": n,
        "max_steps": max_steps,
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(3600 * n / wall, 1),
        "start_s_per_episode": round(start_per_episode, 3),
        "sim_s_per_env_step": round(sim_step, 4),
        "policy_s_per_control_step": round(policy_per_lock_step, 4),
        "policy_s_per_episode_step": round(policy_per_lock_step / k, 4),
        "wall_s_per_control_step": round(step_wall, 4),
        "policy_calls_per_control_step": None if calls is None else round(calls / lock_steps, 2),
        "projected_episodes_per_hour_220": round(3600 * k / projected_batch, 1),
    }


def lockstep(args) -> int:
    from dataclasses import replace

    from ivra.eval.libero import renderer
    from ivra.eval.libero.install import ensure_config, versions
    from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units
    from ivra.policies.registry import build_policy

    ks = [int(k) for k in args.ks.split(",")]
    ensure_config()
    backend, _ = renderer.choose()
    arms = {"baseline": None, "ivra": {"layer": 2, "lam": 0.3}}
    n_units = max(max(ks), 2)
    units = make_units("libero_spatial", [0], list(range((n_units + 1) // 2)), list(arms))[:n_units]
    base = LiberoConfig(
        policy="zero",
        arms=arms,
        max_steps=args.max_steps,
        wait_steps=10,
        resolution=args.resolution,
        mujoco_gl=backend,
        torch_threads=1,
    )
    t0 = time.perf_counter()
    shared = LiberoJob(replace(base, max_steps=1, wait_steps=0), policy=build_policy("zero"))
    shared.setup()
    t = time.perf_counter()
    warm = shared.run_lockstep(units[: max(ks)])  # creates the simulators, every lane of the largest batch
    warm_s = time.perf_counter() - t
    assert all(isinstance(r, dict) for r in warm), warm
    creation = (warm_s - sum(r["_meta"]["start_s"] for r in warm)) / len(warm)  # about: 1 step not taken off
    rows = []
    for name in POLICIES:
        policy = build_policy(name)
        for k in ks:
            job = LiberoJob(replace(base, policy=name), policy=policy, simulators_from=shared)
            shared = job
            calls0 = len(getattr(policy, "batch_sizes", []))
            batches = []
            for i in range(0, max(k, 2), k):
                t = time.perf_counter()
                results = job.run_lockstep(units[i : i + k])
                batches.append((time.perf_counter() - t, results))
                bad = [r for r in results if not isinstance(r, dict)]
                if bad:
                    raise bad[0]
            calls = len(policy.batch_sizes) - calls0 if hasattr(policy, "batch_sizes") else None
            rows.append(_row(name, k, batches, args.max_steps, calls))
            print(json.dumps(rows[-1]), file=sys.stderr)
    shared.teardown()
    total = time.perf_counter() - t0
    record = {
        "benchmark": "LIBERO episodes per hour per worker, K episodes in lockstep",
        "command": " ".join(
            ["flock /tmp/ivra-cpu.lock .venv/bin/python benchmarks/libero_throughput.py", *sys.argv[1:]]
        ),
        "machine": machine(),
        "versions": versions(),
        "renderer": backend,
        "settings": {
            "suite": "libero_spatial",
            "task": 0,
            "arms": arms,
            "resolution": args.resolution,
            "wait_steps": 10,
            "max_steps": args.max_steps,
            "torch_threads": 1,
            "units": [u["key"] for u in units],
        },
        "simulator_creation_s": round(creation, 2),
        "rows": rows,
        "total_s": round(total, 1),
        "projection": f"episodes/h at {BUDGET} steps = 3600 K / (K x start_s_per_episode + {BUDGET} x "
        "wall_s_per_control_step): the measured reset/wait and per-step times extrapolated, not measured",
    }
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


RENDER_POLICIES = (  # (name, kwargs, execute): single-step, then chunks of 50 executing 5, 10, 50
    ("tiny-vla", {}, None),
    ("sim", {"chunk": 50, "fixed_ms": 0, "per_sample_ms": 0}, 5),
    ("sim", {"chunk": 50, "fixed_ms": 0, "per_sample_ms": 0}, 10),
    ("sim", {"chunk": 50, "fixed_ms": 0, "per_sample_ms": 0}, 50),
)


def render_part(args) -> int:
    from dataclasses import replace

    from ivra.eval.libero import render, renderer
    from ivra.eval.libero.install import ensure_config, versions
    from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units
    from ivra.policies.registry import build_policy

    ks = [int(k) for k in args.ks.split(",")]
    max_steps = args.max_steps or BUDGET
    ensure_config()
    backend, _ = renderer.choose()
    arms = {"baseline": None, "ivra": {"layer": 2, "lam": 0.3}}
    units = make_units("libero_spatial", [0], list(range((max(ks) + 1) // 2)), list(arms))[: max(ks)]
    base = LiberoConfig(arms=arms, max_steps=max_steps, wait_steps=10, resolution=args.resolution,
                        mujoco_gl=backend, torch_threads=1)  # fmt: skip
    t0 = time.perf_counter()
    shared = LiberoJob(replace(base, policy="zero", max_steps=1, wait_steps=0), policy=build_policy("zero"))
    shared.setup()
    render.install()
    assert all(isinstance(r, dict) for r in shared.run_lockstep(units))  # the simulators, before the clock
    rows = []
    for name, kwargs, execute in RENDER_POLICIES:
        policy = build_policy(name, kwargs)
        for k in ks:
            got = {}
            for mode in ("every", "demand"):
                cfg = replace(base, policy=name, policy_kwargs=kwargs, execute_steps=execute, render=mode)
                job = LiberoJob(cfg, policy=policy, simulators_from=shared)
                shared = job
                before = render.counts()
                t = time.perf_counter()
                results = job.run_lockstep(units[:k])
                wall = time.perf_counter() - t
                after = render.counts()
                bad = [r for r in results if not isinstance(r, dict)]
                if bad:
                    raise bad[0]
                meta = [r.pop("_meta") for r in results]
                got[mode] = results
                start, pol = (sum(m[f] for m in meta) for f in ("start_s", "policy_s"))
                rend = after["render_s"] - before["render_s"]
                rows.append({
                    "policy": name if execute is None else f"{name}:chunk=50,execute={execute}",
                    "execute": execute or 1,
                    "lockstep": k,
                    "render": mode,
                    "episodes": len(results),
                    "steps": sum(r["steps"] for r in results),
                    "wall_s": round(wall, 2),
                    "episodes_per_hour": round(3600 * len(results) / wall, 1),
                    "reset_and_wait_s": round(start, 2),  # resets, initial states, wait steps (their renders too)
                    "render_s": round(rend, 2),  # every camera image rendered, resets included
                    "other_s": round(wall - rend - pol, 2),  # physics, model reloads at resets, Python
                    "policy_s": round(pol, 2),
                    "images_rendered": after["rendered"] - before["rendered"],
                    "images_skipped": after["skipped"] - before["skipped"],
                })  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
            if got["every"] != got["demand"]:
                raise AssertionError(
                    f"{name} execute={execute} K={k}: the episodes differ between render modes"
                )
    shared.teardown()
    record = {
        "benchmark": "LIBERO episodes per hour per worker: cameras rendered every step vs on demand",
        "command": " ".join(["flock /tmp/ivra-cpu.lock .venv/bin/python benchmarks/libero_throughput.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "renderer": backend,
        "settings": {"suite": "libero_spatial", "task": 0, "arms": arms, "resolution": args.resolution,
                     "wait_steps": 10, "max_steps": max_steps, "torch_threads": 1,
                     "units": [u["key"] for u in units]},
        "rows": rows,
        "identical_episodes": True,  # checked above for every (policy, K): every recorded field
        "total_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    out = output_path(args, RENDER_RESULT_NAME)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(render_table(record))
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


def render_table(record: dict) -> str:
    lines = [
        "| policy | executed per chunk | K | render | episodes/h | speed-up | wall s | rendering s (images) | policy s "
        "| physics, resets, rest s |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    every = {
        (r["policy"], r["lockstep"]): r["episodes_per_hour"] for r in record["rows"] if r["render"] == "every"
    }
    for r in record["rows"]:
        up = r["episodes_per_hour"] / every[(r["policy"], r["lockstep"])]
        lines.append(
            f"| {r['policy']} | {r['execute']} | {r['lockstep']} | {r['render']} | {r['episodes_per_hour']:.0f} | "
            f"{up:.2f}x | {r['wall_s']:.1f} | {r['render_s']:.1f} ({r['images_rendered']}) | {r['policy_s']:.1f} | "
            f"{r['other_s']:.1f} |"
        )
    return "\n".join(lines)


def table(record: dict) -> str:
    lines = [
        "| policy | K | episodes | measured episodes/h | simulator s per control step (per env step) | policy s per "
        "control step (calls) | wall s per control step | projected episodes/h at 220 steps | vs K=1 |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    one = {r["policy"]: r["projected_episodes_per_hour_220"] for r in record["rows"] if r["lockstep"] == 1}
    for r in record["rows"]:
        calls = r["policy_calls_per_control_step"]
        ratio = r["projected_episodes_per_hour_220"] / one[r["policy"]] if r["policy"] in one else None
        lines.append(
            f"| {r['policy']} | {r['lockstep']} | {r['episodes']} | {r['episodes_per_hour']:.0f} | "
            f"{r['sim_s_per_env_step'] * r['lockstep']:.3f} ({r['sim_s_per_env_step']:.3f}) | "
            f"{r['policy_s_per_control_step']:.3f}{'' if calls is None else f' ({calls:g})'} | "
            f"{r['wall_s_per_control_step']:.3f} | {r['projected_episodes_per_hour_220']:.0f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines)


RESULT_NAME = "libero_throughput_cpu.json"
RENDER_RESULT_NAME = "libero_render_cpu.json"
ROOT = Path(__file__).resolve().parents[1]


def output_path(args, name: str = RESULT_NAME) -> Path:
    """--out, else the tracked recorded result with --record, else runs/benchmarks/ (untracked)."""
    if args.out:
        return Path(args.out)
    if args.record:
        return ROOT / "benchmarks" / "results" / name
    return Path(os.environ.get("IVRA_BENCH_OUT_DIR") or ROOT / "runs" / "benchmarks") / name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("lockstep", "render", "renderers"), default="lockstep")
    ap.add_argument(
        "--ks",
        default=None,
        help="lockstep, render: episodes per worker stepped together (default 1,4,8; render 1,4)",
    )
    ap.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="lockstep, render: policy steps per episode (default 30; render 220)",
    )
    ap.add_argument("--resolution", type=int, default=128, help="lockstep: camera resolution")
    ap.add_argument(
        "--out", default=None, help=f"lockstep: result JSON (default runs/benchmarks/{RESULT_NAME})"
    )
    ap.add_argument(
        "--record",
        action="store_true",
        default=os.environ.get("IVRA_BENCH_RECORD", "") not in ("", "0"),
        help=f"lockstep: update the recorded result benchmarks/results/{RESULT_NAME} (tracked; IVRA_BENCH_RECORD=1)",
    )
    ap.add_argument("--steps", type=int, default=60, help="renderers: steps timed per configuration")
    ap.add_argument("--resolutions", default="128,256", help="renderers")
    ap.add_argument("--renderers", default="egl,osmesa", help="renderers")
    args = ap.parse_args()
    if args.part == "render":
        args.ks = args.ks or "1,4"
        return render_part(args)
    args.ks, args.max_steps = args.ks or "1,4,8", args.max_steps or 30
    return lockstep(args) if args.part == "lockstep" else renderers(args)


if __name__ == "__main__":
    sys.exit(main())
