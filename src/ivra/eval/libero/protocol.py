"""The community LIBERO evaluation protocol (as in OpenVLA's ``run_libero_eval.py``) and its deviations.

* 50 fixed initial states per task (``task_suite.get_task_init_states(task_id)``), each episode:
  ``env.reset()``, ``env.set_init_state(init_states[idx])``, then 10 "wait" steps of the no-op action
  ``[0, 0, 0, 0, 0, 0, -1]`` (gripper open) while the objects settle; then the policy acts.
* per-suite step budgets after the wait: libero_spatial 220, libero_object 280, libero_goal 300,
  libero_10 520, libero_90 400; an episode succeeds when the env reports ``done`` (the BDDL goal holds).
* cameras rendered at 256x256 (agentview + robot0_eye_in_hand).
* image orientation: LIBERO/robosuite images come out upside down (OpenGL's bottom-up rows); as OpenVLA's
  eval does, both images are rotated by 180 degrees (``img[::-1, ::-1]``) before the policy sees them.

Any other setting is a *deviation*; :func:`deviations` lists them for the manifest and the report.
"""

from __future__ import annotations

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
N_TASKS = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
NUM_INIT_STATES = 50
WAIT_STEPS = 10
RESOLUTION = 256
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
CONTROL_HZ = 20


def deviations(
    suite: str,
    tasks: list[int],
    init_states: list[int],
    max_steps: int,
    wait_steps: int,
    resolution: int,
) -> list[str]:
    """Human-readable list of every way a run differs from the community protocol (empty = none)."""
    out = []
    n_tasks = N_TASKS[suite]
    if sorted(tasks) != list(range(n_tasks)):
        out.append(f"tasks: {len(tasks)} of {n_tasks} ({_ranges(tasks)}) instead of all {n_tasks}")
    if sorted(init_states) != list(range(NUM_INIT_STATES)):
        out.append(
            f"initial states: {len(init_states)} per task ({_ranges(init_states)}) instead of 0-{NUM_INIT_STATES - 1}"
        )
    if max_steps != MAX_STEPS[suite]:
        out.append(f"max steps: {max_steps} instead of {MAX_STEPS[suite]} for {suite}")
    if wait_steps != WAIT_STEPS:
        out.append(f"wait steps: {wait_steps} instead of {WAIT_STEPS}")
    if resolution != RESOLUTION:
        out.append(f"render resolution: {resolution}x{resolution} instead of {RESOLUTION}x{RESOLUTION}")
    return out


def _ranges(xs: list[int]) -> str:
    xs = sorted(set(xs))
    if not xs:
        return "none"
    parts, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(parts)


def parse_index_list(spec: str | None, default: list[int]) -> list[int]:
    """``"0,2,5-9"`` -> [0, 2, 5, 6, 7, 8, 9]; None/"all" -> ``default``."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(default)
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"bad range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return list(dict.fromkeys(out))
