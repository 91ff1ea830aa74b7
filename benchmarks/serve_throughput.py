"""Throughput of evaluation workers against one batched policy server vs per-worker policy copies.

    .venv/bin/python benchmarks/serve_throughput.py                      # the table in serve_throughput.md
    .venv/bin/python benchmarks/serve_throughput.py --workers 1,4 --steps 30   # quick look
    .venv/bin/python benchmarks/serve_throughput.py --chunk 50 --execute 5 --modes server --workers 1,4,8 \
        --steps 220 --episode-steps 220 --repeats 1 --image-size 224 --latency-requests 0   # chunks, replan 5

Writes runs/benchmarks/serve_throughput_cpu.json (``serve_throughput_chunk<H>_cpu.json`` with ``--chunk H``;
untracked; ``--out`` or $IVRA_BENCH_OUT_DIR to write elsewhere). ``--record`` (or IVRA_BENCH_RECORD=1) updates the
recorded result under the tracked benchmarks/results/ instead: do that only for a run you mean to publish.

Model of the hardware (all parameters are flags and are written into the result):

* **policy**: ``SimLatencyPolicy`` (ivra.policies.sim): a call on a batch of B costs ``fixed_ms + per_sample_ms * B``
  of wall time (a sleep, like a GPU kernel: no CPU used). Defaults 40 ms + 2 ms/sample. ``--chunk H --execute E``
  makes it a chunk policy (H actions per call); every worker runs its episodes with
  :class:`ivra.episodes.EpisodeRunner` at ``execute=E`` (openpi's LIBERO client at ``replan_steps=E``: one request per
  E steps, each answered with the whole chunk), a new episode (seed) every ``--episode-steps``.
* **one GPU**: in the *copies* mode every worker holds its own policy copy, and their calls are serialised by one
  cross-process lock (one device runs one call at a time; a real 7B model would not even fit N copies). In the
  *server* mode the workers are :class:`ivra.policies.remote.RemotePolicy` clients of one ``ivra serve --policy sim``
  process (one model copy), which batches their requests.
* **simulator**: ``--env sleep`` (default): an environment step costs ``--step-ms`` of wall time (20 ms = LIBERO's
  physics-only step rate measured on this machine, 49.6 steps/s, benchmarks/libero_throughput.md), with LIBERO's
  observation payload (two 256x256x3 uint8 cameras + an 8-float state) sent every step. ``--env libero`` steps the
  real LIBERO simulator without cameras (physics only; the images sent are the same fixed arrays).
* **sequential reference**: one worker with an in-process policy and no lock (N = 1, copies mode).

Reported per (mode, N): env steps/s over all workers, episodes/h at the protocol's 230 steps per episode (LIBERO's
220-step libero_spatial budget + 10 wait steps, all at the same step cost; reset time excluded), the ratio to N x
the sequential worker, policy requests, the policy calls the server made for them (its ``/stats``) and the mean
batch it formed. Also the latency the server path adds per request at batch 1 (p50/p99 over ``--latency-requests``
round trips, zero-cost policy, LIBERO payload; 0 skips it).
Every run is bounded: ``--steps`` per worker, a timeout per configuration; all traffic on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT_NAME = "serve_throughput_cpu.json"  # with --chunk H > 1: serve_throughput_chunk<H>_cpu.json
EPISODE_STEPS = 230  # libero_spatial: 10 wait + 220 policy steps


def observation(seed: int = 0, size: int = 256) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "state": rng.standard_normal(8).astype(np.float32),
    }


class SleepEnv:
    def __init__(self, step_ms: float):
        self.dt = step_ms / 1000.0

    def step(self, action) -> None:
        time.sleep(self.dt)


class LiberoPhysicsEnv:
    """libero_spatial task 0 without cameras: the real physics step, no rendering."""

    def __init__(self):
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs.env_wrapper import ControlEnv

        suite = benchmark.get_benchmark_dict()["libero_spatial"]()
        task = suite.get_task(0)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        self.env = ControlEnv(
            bddl_file_name=bddl, use_camera_obs=False, has_offscreen_renderer=False, has_renderer=False
        )
        self.env.seed(0)
        self.env.reset()
        self.env.set_init_state(suite.get_task_init_states(0)[0])

    def step(self, action) -> None:
        self.env.step(np.clip(np.asarray(action, dtype=np.float64), -1, 1).tolist())


def worker(args: dict, lock, ready, start, out) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "src"))
    from ivra.episodes import EpisodeRunner
    from ivra.policies.remote import RemotePolicy
    from ivra.policies.sim import SimLatencyPolicy

    if args["env"] == "libero":
        from ivra.eval.libero.install import import_libero

        import_libero()
        env = LiberoPhysicsEnv()
    else:
        env = SleepEnv(args["step_ms"])
    if args["url"]:
        policy = RemotePolicy(args["url"])
    else:
        policy = SimLatencyPolicy(
            args["fixed_ms"], args["per_sample_ms"], chunk=args["chunk"], execute=args["execute"]
        )
    obs = observation(args["seed"], args["image_size"])
    text = ["put the bowl on the plate"]
    runner = EpisodeRunner(policy, execute=args["execute"])
    runner.step([runner.start(-1)], [obs], text)  # connection and first call before the clock starts
    ready.put(1)
    start.wait()
    t0 = time.perf_counter()
    lat = []
    batch = []
    calls = runner.calls
    for k in range(args["steps"]):
        if k % args["episode_steps"] == 0:
            episode = runner.start(1000 * args["seed"] + k)
        t = time.perf_counter()
        if lock is not None:
            with lock:
                a = runner.step([episode], [obs], text)
        else:
            a = runner.step([episode], [obs], text)
        if runner.calls != calls:  # this step asked the policy for a chunk
            calls = runner.calls
            lat.append(time.perf_counter() - t)
            if args["url"]:
                batch.append(policy.last_timing[0].get("batch_size", 1))
        env.step(a[0][:7])
    out.put({"wall": time.perf_counter() - t0, "steps": args["steps"], "latency": lat, "batch": batch})


def run_mode(mode: str, n: int, opts, url: str | None) -> dict:
    ctx = mp.get_context("spawn")
    lock = ctx.Lock() if (mode == "copies" and n > 1) else None
    start = ctx.Event()
    ready = ctx.Queue()
    out = ctx.Queue()
    common = {
        "env": opts.env,
        "step_ms": opts.step_ms,
        "fixed_ms": opts.fixed_ms,
        "per_sample_ms": opts.per_sample_ms,
        "steps": opts.steps,
        "episode_steps": opts.episode_steps,
        "chunk": opts.chunk,
        "execute": opts.execute,
        "image_size": opts.image_size,
        "url": url if mode == "server" else None,
    }
    procs = [
        ctx.Process(target=worker, args=({**common, "seed": i}, lock, ready, start, out)) for i in range(n)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # imports, connections and a first call happen before the clock starts
        try:
            ready.get(timeout=opts.timeout_s)
        except Exception:
            for p in procs:
                p.kill()
            raise RuntimeError(f"{mode} x{n}: a worker did not start (see its traceback above)") from None
    before = server_stats(url) if mode == "server" else None
    start.set()
    results = [out.get(timeout=opts.timeout_s) for _ in procs]
    after = server_stats(url) if mode == "server" else None
    for p in procs:
        p.join(30)
    wall = max(r["wall"] for r in results)
    steps = sum(r["steps"] for r in results)
    batches = [b for r in results for b in r["batch"]]
    lat = np.concatenate([r["latency"] for r in results]) * 1000
    requests = sum(len(r["latency"]) for r in results)
    return {
        "mode": mode,
        "workers": n,
        "steps": steps,
        "wall_s": round(wall, 2),
        "steps_per_s": round(steps / wall, 2),
        "episodes_per_h": round(3600 * steps / wall / EPISODE_STEPS, 1),
        "policy_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else 1.0,
        "requests": requests,
        "policy_calls": after["batches"] - before["batches"] if after else requests,
    }


def server_stats(url: str) -> dict:
    """The server's counters (``GET /stats``: requests, batches, batch sizes)."""
    import urllib.request

    port = url.rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, policy: str, max_batch: int, max_wait_ms: float):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "ivra.cli",
            "serve",
            "--port",
            "0",
            "--policy",
            policy,
            "--max-batch",
            str(max_batch),
            "--max-wait-ms",
            str(max_wait_ms),
            "--max-payload-mb",
            "16",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.url = None
        self.lines: list[str] = []
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r" on (ws://127\.0\.0\.1:\d+)", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def server_latency(opts) -> dict:
    """Added latency of the server path at batch 1: round trip minus the in-process call, zero-cost policy."""
    sys.path.insert(0, str(ROOT / "src"))
    from ivra.policies.remote import RemotePolicy
    from ivra.policies.sim import SimLatencyPolicy

    obs = observation()
    local = SimLatencyPolicy(0, 0)
    t_local = []
    for _ in range(opts.latency_requests):
        t = time.perf_counter()
        local.act([obs], ["x"])
        t_local.append(time.perf_counter() - t)
    srv = Server("sim:fixed_ms=0,per_sample_ms=0", max_batch=1, max_wait_ms=0)
    try:
        rp = RemotePolicy(srv.url)
        for _ in range(20):
            rp.act([obs], ["x"])
        t_rt = []
        for _ in range(opts.latency_requests):
            t = time.perf_counter()
            rp.act([obs], ["x"])
            t_rt.append(time.perf_counter() - t)
        rp.close()
    finally:
        srv.stop()
    added = (np.array(t_rt) - float(np.median(t_local))) * 1000
    payload = sum(v.nbytes for v in obs.values())
    return {
        "requests": opts.latency_requests,
        "payload_bytes": payload,
        "round_trip_ms_p50": round(float(np.percentile(np.array(t_rt) * 1000, 50)), 2),
        "round_trip_ms_p99": round(float(np.percentile(np.array(t_rt) * 1000, 99)), 2),
        "in_process_ms_p50": round(float(np.median(t_local)) * 1000, 3),
        "added_ms_p50": round(float(np.percentile(added, 50)), 2),
        "added_ms_p99": round(float(np.percentile(added, 99)), 2),
    }


def _env_record() -> bool:
    return os.environ.get("IVRA_BENCH_RECORD", "") not in ("", "0")


def output_path(opts: argparse.Namespace) -> Path:
    """--out, else the tracked recorded result with --record, else runs/benchmarks/ (untracked)."""
    if opts.out:
        return Path(opts.out)
    name = RESULT_NAME if opts.chunk == 1 else f"serve_throughput_chunk{opts.chunk}_cpu.json"
    if opts.record:
        return ROOT / "benchmarks" / "results" / name
    return Path(os.environ.get("IVRA_BENCH_OUT_DIR") or ROOT / "runs" / "benchmarks") / name


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8,16", help="numbers of workers N to run, comma-separated")
    ap.add_argument(
        "--modes", default="copies,server", help="copies (one policy per worker), server, or both"
    )
    ap.add_argument(
        "--env", choices=("sleep", "libero"), default="sleep", help="simulated or real LIBERO steps"
    )
    ap.add_argument("--step-ms", type=float, default=20.0, help="wall time of one --env sleep step")
    ap.add_argument("--fixed-ms", type=float, default=40.0, help="policy call cost per batch")
    ap.add_argument("--per-sample-ms", type=float, default=2.0, help="policy call cost per sample")
    ap.add_argument("--chunk", type=int, default=1, help="actions per policy call (the sim policy's chunk)")
    ap.add_argument(
        "--execute", type=int, default=None, help="actions executed per chunk (replan steps; default: all)"
    )
    ap.add_argument("--image-size", type=int, default=256, help="camera size sent per request (two cameras)")
    ap.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    ap.add_argument("--max-wait-ms", type=float, default=25.0, help="the server's --max-wait-ms")
    ap.add_argument("--steps", type=int, default=60, help="policy steps per worker and configuration")
    ap.add_argument("--episode-steps", type=int, default=30, help="steps per episode (a reset after each)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="limit per configuration")
    ap.add_argument("--latency-requests", type=int, default=300, help="round trips for the batch-1 latency")
    ap.add_argument(
        "--out",
        default=None,
        help=f"result JSON (default runs/benchmarks/{RESULT_NAME}, untracked; $IVRA_BENCH_OUT_DIR changes the folder)",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        default=_env_record(),
        help=f"update the recorded result benchmarks/results/{RESULT_NAME} (tracked; also IVRA_BENCH_RECORD=1)",
    )
    return ap


def main() -> int:
    opts = parser().parse_args()
    opts.execute = opts.execute or opts.chunk
    if not 1 <= opts.execute <= opts.chunk:
        raise SystemExit(f"--execute must be in 1..--chunk ({opts.chunk}), got {opts.execute}")
    out = output_path(opts)
    ns = [int(x) for x in opts.workers.split(",")]
    modes = opts.modes.split(",")
    t0 = time.time()
    reps = [run_mode("copies", 1, opts, None) for _ in range(opts.repeats)]
    rows = [sorted(reps, key=lambda r: r["steps_per_s"])[len(reps) // 2]]
    rows[0]["steps_per_s_runs"] = [r["steps_per_s"] for r in reps]
    seq = rows[0]["steps_per_s"]
    rows[0]["mode"] = "sequential"
    print(json.dumps(rows[0]), flush=True)
    srv = None
    try:
        if "server" in modes:
            srv = Server(
                f"sim:fixed_ms={opts.fixed_ms},per_sample_ms={opts.per_sample_ms},chunk={opts.chunk},"
                f"execute={opts.execute}",
                opts.max_batch,
                opts.max_wait_ms,
            )
        for n in ns:
            for mode in modes:
                if mode == "copies" and n == 1:
                    continue
                reps = [run_mode(mode, n, opts, srv.url if srv else None) for _ in range(opts.repeats)]
                row = sorted(reps, key=lambda r: r["steps_per_s"])[len(reps) // 2]  # the median run
                row["steps_per_s_runs"] = [r["steps_per_s"] for r in reps]
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if srv is not None:
            srv.stop()
            if srv.proc.returncode not in (0, None, -15):
                print(
                    f"server exited with {srv.proc.returncode}:\n" + "".join(srv.lines[-40:]), file=sys.stderr
                )
    for r in rows:
        r["vs_n_sequential"] = round(r["steps_per_s"] / (r["workers"] * seq), 3)
    capacity = opts.max_batch / ((opts.fixed_ms + opts.per_sample_ms * opts.max_batch) / 1000.0)
    latency = server_latency(opts) if opts.latency_requests > 0 else None
    result = {
        "settings": {k: v for k, v in vars(opts).items() if k not in ("out", "record")},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "policy_capacity_steps_per_s_at_max_batch": round(capacity * opts.execute, 1),
        "rows": rows,
        "latency_batch1": latency,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "seconds": round(time.time() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(latency))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
