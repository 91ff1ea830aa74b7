"""Pick a working headless MuJoCo renderer (``MUJOCO_GL``).

A backend is only trusted after it has actually created an offscreen context and rendered a frame in
a fresh subprocess (a broken EGL can crash or hang the process that tries it). Order: egl, then osmesa.
A ``MUJOCO_GL`` set by the user is respected (and still probed by ``ivra doctor``).
"""

from __future__ import annotations

import os
import subprocess
import sys

CANDIDATES = ("egl", "osmesa")
APT_FIX = "apt-get update && apt-get install -y libegl1 libosmesa6 libgl1-mesa-dri"

_PROBE = r"""
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="0.1"/></worldbody></mujoco>')
d = mujoco.MjData(m)
r = mujoco.Renderer(m, 16, 16)
mujoco.mj_forward(m, d)
r.update_scene(d)
img = r.render()
assert img.shape == (16, 16, 3), img.shape
print("ok")
"""


def probe(backend: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Create a tiny MuJoCo offscreen context with ``backend`` in a subprocess; (ok, detail)."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f}s"
    if proc.returncode == 0 and "ok" in proc.stdout:
        return True, "ok"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return False, tail[0][:300]


def choose(force_probe: bool = False) -> tuple[str, dict[str, str]]:
    """Return (backend, probe details) and export ``MUJOCO_GL``/``PYOPENGL_PLATFORM`` for children.

    If ``MUJOCO_GL`` is already set it is used as is (probed only when ``force_probe``).
    Raises RuntimeError with the apt fix when nothing works.
    """
    details: dict[str, str] = {}
    user = os.environ.get("MUJOCO_GL")
    if user and not force_probe:
        os.environ.setdefault("PYOPENGL_PLATFORM", user if user in CANDIDATES else "")
        return user, {user: "set by the user (not probed)"}
    for backend in ([user] if user else []) + [b for b in CANDIDATES if b != user]:
        ok, detail = probe(backend)
        details[backend] = detail
        if ok:
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend, details
    raise RuntimeError(
        "no headless MuJoCo renderer works ("
        + "; ".join(f"{k}: {v}" for k, v in details.items())
        + f"). Fix: {APT_FIX}  (or bash scripts/setup_libero.sh)"
    )
