"""The real ``vla-eval run`` (0.8.0, unmodified) of its LIBERO benchmark and a LIBERO-PRO suite, in process
(``render: cpu``, no ``docker.image``), two shards against ``ivra serve`` started by the test in a blind A/B: both
shards finish, the aggregates hold one row per episode keyed by (suite, task_id, episode_idx), the server
journalled the four episodes (two pairs, both arms in each) and scored them from vla-eval's ``episode_end``, and
``ivra trials --report`` unblinds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.libero, pytest.mark.slow]

ARM = {"layer": 0, "lam": 0.1}
STEPS = 3
#: (module:class, subname, params): LIBERO's libero_spatial and LIBERO-PRO's libero_spatial_swap (position swap)
BENCHMARKS = [
    ("libero.benchmark:LIBEROBenchmark", "spatial", "suite: libero_spatial"),
    ("libero_pro.benchmark:LIBEROProBenchmark", "swap", "suite: libero_spatial, perturbation: swap"),
]
SUITES = {"LIBEROBenchmark_spatial": "libero_spatial", "LIBEROProBenchmark_swap": "libero_spatial_swap"}


def _missing() -> str | None:
    missing = [
        m for m in ("vla_eval", "libero", "robosuite", "mujoco") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return f"missing {', '.join(missing)}: bash scripts/setup.sh dev && bash scripts/setup_libero.sh"
    from ivra.eval.libero.install import assets_dir

    return None if assets_dir() is not None else "LIBERO assets not installed: bash scripts/setup_libero.sh"


def test_vla_eval_runs_its_libero_benchmark_in_two_shards_against_a_blind_ivra_server(tmp_path):
    if (reason := _missing()) is not None:
        pytest.skip(reason)
    from ivra.eval.libero.install import child_env, ensure_config
    from ivra.serve.blind import BlindAB, arm_of, report
    from ivra.serve.policies import load_policy
    from ivra.serve.server import PolicyServer, ServeOptions, ServerThread

    policy, spec = load_policy("sim:fixed_ms=0,per_sample_ms=0,chunk=2,execute=2")
    blind = BlindAB(tmp_path / "ab", treatment=ARM, seed=0, policy="sim")
    st = ServerThread(PolicyServer(policy, ServeOptions(port=0), spec, blind=blind)).start()
    try:
        cfg = tmp_path / "libero.yaml"
        entries = "".join(
            f"  - benchmark: 'vla_eval.benchmarks.{module}'\n"
            f"    subname: {sub}\n"
            f"    params: {{{params}, seed: 7, num_steps_wait: 1, send_wrist_image: true, send_state: true}}\n"
            f"    episodes_per_task: 2\n    max_tasks: 1\n    max_steps: {STEPS}\n    paced: false\n"
            for module, sub, params in BENCHMARKS
        )
        cfg = tmp_path / "libero.yaml"
        cfg.write_text(
            f"server: {{url: 'ws://127.0.0.1:{st.server.port}/vla-eval', timeout: 600}}\n"
            f"output_dir: {tmp_path / 'results'}\nrender: cpu\nbenchmarks:\n{entries}"
        )
        env = child_env(LIBERO_CONFIG_PATH=str(ensure_config().parent), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        exe = str(Path(sys.executable).with_name("vla-eval"))
        shards = [
            subprocess.Popen(
                [
                    exe,
                    "run",
                    "-c",
                    str(cfg),
                    "--shard-id",
                    str(i),
                    "--num-shards",
                    "2",
                    "--eval-id",
                    "t",
                    "--yes",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            for i in range(2)
        ]
        logs = [p.communicate(timeout=600)[0] for p in shards]
        assert [p.returncode for p in shards] == [0, 0], "\n".join(log[-3000:] for log in logs)
        stats = dict(st.server.stats)
    finally:
        st.stop()
    db = tmp_path / "results" / "recording-t.sqlite"
    out = subprocess.run([exe, "export", str(db)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {}
    for name in SUITES:
        agg = json.loads((tmp_path / "results" / f"{name}_aggregate.json").read_text())
        assert agg["num_errors"] == 0 and agg["num_episodes_total"] == 2, agg
        rows.update(
            {(e["suite"], e["task_id"], e["episode_idx"]): e for t in agg["tasks"] for e in t["episodes"]}
        )
    want = {(suite, 0, idx) for suite in SUITES.values() for idx in (0, 1)}
    assert set(rows) == want and all(r["steps"] == STEPS for r in rows.values())
    assert stats["requests"] == 4 * 2 and stats["errors"] == 0  # 3 steps, chunks of 2 executed: 2 chunks each
    journal = [json.loads(x) for x in (tmp_path / "ab/episodes.jsonl").read_text().splitlines()]
    outcomes = {o["episode"]: o["success"] for o in map(json.loads, (tmp_path / "ab/outcomes.jsonl").open())}
    by_key = {e["key"]: e["episode"] for e in journal}
    assert set(by_key) == {f"vla-eval:{suite}/t00/e{idx}" for suite, _, idx in want}
    for suite, _, idx in want:  # the server's outcome is vla-eval's own verdict of that episode
        assert outcomes[by_key[f"vla-eval:{suite}/t00/e{idx}"]] == rows[(suite, 0, idx)]["metrics"]["success"]
    assert {arm_of(0, 0), arm_of(0, 1)} == {"baseline", "ivra"}  # each pair: both arms ran
    r = report(tmp_path / "ab")
    assert r["episodes_scored"] == 4 and r["paired"]["n"] == 2
