"""``ivra eval libero``: build the units, write the manifest, execute (resumably), then report and videos.

Run directory layout (``--out``)::

    manifest.json     config, versions, renderer, git revision, protocol deviations, timing, random_weights
                      (why the policy runs random weights, or null)
    journal.jsonl     one line per attempt (see ivra.eval.executor)
    episodes/         one small video per episode (only with --videos K > 0)
    videos/           side-by-side A/B videos, failures first
    summary.json report.md report.html success.png
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from ivra.cliargs import UsageError
from ivra.eval import runfolder
from ivra.eval.executor import execute
from ivra.eval.libero import protocol
from ivra.eval.libero.install import LiberoMissing, ensure_config, versions
from ivra.eval.libero.job import LiberoConfig, LiberoJob, make_units


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def _fingerprint(config: dict, units: list[dict]) -> str:
    blob = json.dumps({"config": config, "units": [u["key"] for u in units]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: config fields that do not decide the episodes (not in the fingerprint)
# how the run computes, not what it computes: a resume may change them (render: results identical, tested)
NOT_FINGERPRINTED = ("mujoco_gl", "libero_config_path", "torch_threads", "video_dir", "render")
#: the option that sets each fingerprinted config field
OPTIONS = {
    "suite": "--suite",
    "policy": "--policy",
    "max_steps": "--max-steps",
    "effective_max_steps": "max steps per episode",
    "wait_steps": "--wait-steps",
    "resolution": "--resolution",
    "execute_steps": "--execute-steps",
    "video_fps": "video fps",
    "tasks": "--tasks",
    "init_states": "--init-states",
    "seed": "--seed",
    "suites": "--perturbations",
    "protocol": "--protocol",
    "env_seeding": "--protocol (env seeding)",
    "env_seed": "--protocol (env seed)",
}


def config_changes(old: dict, new: dict) -> list[str]:
    """What differs between two runs' settings (each ``{"config", "tasks", "init_states", "seed"}`` as the
    manifest stores them), one ``"option: old -> new"`` per difference, e.g. ``"ivra arm: layer 8 -> 2"``."""
    old_cfg = {k: v for k, v in (old.get("config") or {}).items() if k not in NOT_FINGERPRINTED}
    new_cfg = {k: v for k, v in (new.get("config") or {}).items() if k not in NOT_FINGERPRINTED}
    old_cfg.update({k: old.get(k) for k in ("tasks", "init_states", "seed")})
    new_cfg.update({k: new.get(k) for k in ("tasks", "init_states", "seed")})
    changes: list[str] = []
    for key in dict.fromkeys([*new_cfg, *old_cfg]):
        a, b = old_cfg.get(key), new_cfg.get(key)
        if a == b:
            continue
        if key == "arms":
            a, b = a or {}, b or {}
            if list(a) != list(b):
                changes.append(f"arms: {', '.join(a) or 'none'} -> {', '.join(b) or 'none'} (--ab / --ivra)")
            for arm in (x for x in b if x in a and a[x] != b[x]):
                if not a[arm] or not b[arm]:
                    changes.append(
                        f"{arm} arm: IVRA {runfolder.show(a[arm])} -> {runfolder.show(b[arm])} (--ivra)"
                    )
                else:
                    changes += runfolder.dict_changes(f"{arm} arm", a[arm], b[arm])
        elif key == "policy_kwargs":
            changes += runfolder.dict_changes("--policy-kwargs", a or {}, b or {})
        elif key == "effective_max_steps" and old_cfg.get("max_steps") != new_cfg.get("max_steps"):
            continue  # said by --max-steps
        else:
            changes.append(f"{OPTIONS.get(key, key)}: {runfolder.show(a)} -> {runfolder.show(b)}")
    return changes


def run_libero(
    suite: str,
    policy: str = "zero",
    policy_kwargs: dict | None = None,
    arms: dict | None = None,
    tasks: list[int] | None = None,
    init_states: list[int] | None = None,
    max_steps: int | None = None,
    wait_steps: int | None = None,
    resolution: int | None = None,
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    executor: str = "local",
    workers: int = 1,
    retries: int = 1,
    videos: int = 0,
    ray_address: str | None = None,
    ray_resources: dict | None = None,
    torch_threads: int | None = None,
    progress: bool = True,
    policy_instance=None,
    rerun_errors: bool = False,
    random_weights: str | None = None,
    stand_in: str | None = None,
    sequential: dict | None = None,
    lockstep: int = 1,
    execute_steps: int | None = None,
    chunk: tuple[int, int] | None = None,
    perturbations: list[str] | None = None,
    protocol_name: str = "ivra",
    render_mode: str = "demand",
) -> dict:
    """Run (or resume) a LIBERO evaluation; returns ``{"out", "records", "summary", "manifest", "report"}``.

    ``policy_instance``: an already-built policy (e.g. a model loaded in this process) used instead of
    building ``policy`` by name; needs ``executor="inline"``. ``policy`` then only names it in the records.
    ``random_weights``: why the policy runs random weights (default: ``policy_instance.random_weights``), written
    into the manifest (``random_weights``, and a line of ``deviations``, which the report shows). ``stand_in``: what
    the policy stands in for when it is no policy (``sim``), likewise (default: the policy's ``stand_in``). A served
    policy's come from its server's metadata (recorded as ``policy_server``).
    ``sequential``: ``{"round": K, "delta": d, "design": "group" | "anytime"}`` for a paired A/B in rounds of K
    initial states (every task), stopped by the group-sequential test of :mod:`ivra.eval.groupseq` or the
    anytime-valid rule of :mod:`ivra.eval.sequential` (default anytime); the decision goes into the manifest and the
    report. The units are the fixed run's, so a rerun replays the journal to the same decision.
    ``render_mode``: ``demand`` renders the cameras only for the observations a policy or a video reads
    (:mod:`ivra.eval.libero.render`; the results are those of ``every``, so a resumed run may change it).
    ``lockstep``: episodes each worker steps together (one batched policy call per step; the results are those of
    ``lockstep=1``, so a resumed run may change it). ``execute_steps``: actions executed per predicted chunk (None:
    the policy's default). ``chunk``: the policy's ``(chunk_length, execute_steps)`` when the caller knows it
    (recorded in the manifest).
    ``perturbations``: LIBERO-PRO families (``swap``, ``object``, ``lan``, ``task``) of ``suite`` run beside it on
    the same tasks, initial states, seeds and arms (the report pairs the arms per suite and adds a robustness table).
    ``protocol_name``: a preset of :data:`protocol.PRESETS`; it sets max steps, wait steps, resolution, env seeding,
    seed base and execute steps, except those given here (not None), which are listed as deviations from it.
    """
    if policy_instance is not None and executor != "inline":
        raise ValueError("policy_instance (a live policy object) needs executor='inline'")
    if suite not in protocol.SUITES:
        raise ValueError(f"unknown suite {suite!r}; one of {protocol.SUITES}")
    preset = protocol.preset(protocol_name)
    suites = protocol.perturbed_suites(suite, perturbations) if perturbations else [suite]
    if sequential and len(suites) > 1:
        raise ValueError("a sequential A/B runs one suite; drop --perturbations or --sequential")
    wait_steps = preset.wait_steps if wait_steps is None else int(wait_steps)
    resolution = preset.resolution if resolution is None else int(resolution)
    seed_given = seed
    seed = preset.seed if seed is None else int(seed)
    execute_given = execute_steps
    if execute_steps is None:
        execute_steps = preset.execute_steps
    from ivra.eval.libero import render

    render.check_mode(render_mode)
    if int(lockstep) < 1:
        raise ValueError(f"lockstep must be >= 1 (episodes per worker at a time), got {lockstep}")
    if execute_steps is not None and int(execute_steps) < 1:
        raise ValueError(f"execute_steps must be >= 1 (actions executed per chunk), got {execute_steps}")
    if chunk is None and policy_instance is not None:
        from ivra.policies.base import chunk_spec

        chunk = chunk_spec(policy_instance)
    if chunk is not None and execute_steps is not None and not 1 <= int(execute_steps) <= chunk[0]:
        raise ValueError(
            f"execute_steps {execute_steps} must be in 1..{chunk[0]} (the policy's chunk length)"
        )
    from ivra.eval.libero import renderer

    ensure_config()  # raises LiberoMissing naming the fix
    backend, probe_details = renderer.choose()
    arms = arms or {"baseline": None}
    tasks = list(range(protocol.N_TASKS[suite])) if tasks is None else list(tasks)
    init_states = list(range(protocol.NUM_INIT_STATES)) if init_states is None else list(init_states)
    bad = [t for t in tasks if not 0 <= t < protocol.N_TASKS[suite]]
    if bad:
        raise ValueError(f"{suite} has tasks 0-{protocol.N_TASKS[suite] - 1}; got {bad}")
    bad = [s for s in init_states if not 0 <= s < protocol.NUM_INIT_STATES]
    if bad:
        raise ValueError(f"init states are 0-{protocol.NUM_INIT_STATES - 1}; got {bad}")

    out = Path(out or f"runs/libero/{suite}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', policy)}_{'-'.join(arms)}")
    out.mkdir(parents=True, exist_ok=True)
    if torch_threads is None:
        torch_threads = 1 if executor != "inline" else 0  # one worker too: torch's default is slower there
    config = LiberoConfig(
        suite=suite,
        policy=policy,
        policy_kwargs=dict(policy_kwargs or {}),
        execute_steps=None if execute_steps is None else int(execute_steps),
        arms=dict(arms),
        max_steps=max_steps,
        wait_steps=wait_steps,
        resolution=resolution,
        video_dir=str((out / "episodes").resolve()) if videos > 0 else None,
        mujoco_gl=backend,
        libero_config_path=os.environ.get("LIBERO_CONFIG_PATH"),
        torch_threads=torch_threads,
        suites=suites if len(suites) > 1 else None,
        protocol=preset.name,
        env_seeding=preset.env_seeding,
        env_seed=seed if preset.env_seeding == "task" else 0,
        render=render_mode,
    )
    units = [u for s in suites for u in make_units(s, tasks, init_states, list(arms), seed=seed)]
    fingerprint_cfg = {k: v for k, v in config.to_dict().items() if k not in NOT_FINGERPRINTED}
    fingerprint = _fingerprint(fingerprint_cfg, units)

    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    current = {"config": config.to_dict(), "tasks": tasks, "init_states": init_states, "seed": seed}
    runfolder.refuse_changed(  # the check every verb's run folder gets
        out,
        previous,
        current,
        fingerprints=((previous or {}).get("fingerprint"), fingerprint),
        describe=lambda old, new: config_changes(old, new) if old.get("config") else [],
    )
    served = None
    if policy.startswith(("ws://", "wss://")):  # served by `ivra serve`: record what answers there
        if isinstance(getattr(policy_instance, "metadata", None), dict):
            served = policy_instance.metadata
        else:
            from ivra.policies.remote import RemotePolicy

            remote = RemotePolicy(policy, **(policy_kwargs or {}))
            served = remote.metadata
            remote.close()
    if sequential and previous:
        from ivra.eval.sequential import resume_conflict

        why = resume_conflict(previous.get("sequential"), {"design": "anytime", **sequential})
        if why:
            raise UsageError(f"{out}: {why}")
    if random_weights is None and policy_instance is not None:
        random_weights = getattr(policy_instance, "random_weights", None)
    if stand_in is None and policy_instance is not None:
        stand_in = getattr(policy_instance, "stand_in", None)
    if served and random_weights is None and served.get("random_weights"):
        random_weights = f"served by {policy}: {served['random_weights']}"
    if served and stand_in is None and served.get("stand_in"):
        stand_in = f"served by {policy}: {served['stand_in']}"
    manifest = {
        "benchmark": "LIBERO",
        "created": (previous or {}).get("created")
        or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "suites": suites,
        "base_suite": protocol.base_suite(suite),
        "perturbations": [protocol.perturbation(s) for s in suites if protocol.perturbation(s)],
        "preset": preset.to_dict(),
        "protocol": {
            "name": preset.name,
            "source": preset.source,
            "base_suite": protocol.base_suite(suite),
            "perturbation": protocol.perturbation(suite),
            "instruction_source": {s: protocol.instruction_source(s) for s in suites},
            "max_steps": preset.steps(suite),
            "num_init_states": protocol.NUM_INIT_STATES,
            "wait_steps": preset.wait_steps,
            "resolution": preset.resolution,
            "env_seeding": preset.env_seeding,
            "image_flip": "agentview and wrist images rotated 180 degrees (img[::-1, ::-1]), as OpenVLA's eval",
        },
        "deviations": protocol.deviations(
            suite,
            tasks,
            init_states,
            config.steps,
            wait_steps,
            resolution,
            preset=preset,
            execute_steps=execute_given,
            seed=seed_given,
        ),
        "tasks": tasks,
        "init_states": init_states,
        "seed": seed,
        "n_units": len(units),
        "executor": executor,
        "workers": workers,
        "lockstep": int(lockstep),
        "chunk": None
        if chunk is None
        else {
            "chunk_length": int(chunk[0]),
            "policy_execute_steps": int(chunk[1]),
            "execute_steps": int(execute_steps or chunk[1]),
        },
        "ray_address": ray_address,
        "renderer": backend,
        "renderer_probe": probe_details,
        "libero_config": os.environ.get("LIBERO_CONFIG_PATH"),
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "command": sys.argv,
        "random_weights": random_weights,
        "stand_in": stand_in,
    }
    if random_weights:
        manifest["deviations"].insert(
            0, f"RANDOM WEIGHTS: {random_weights}; the success rates say nothing about a trained policy"
        )
    if stand_in:
        manifest["deviations"].insert(
            0, f"STAND-IN: {stand_in}; the success rates say nothing about a policy"
        )
    if served is not None:
        manifest["policy_server"] = served
    if policy == "zero" and any(arms.values()):
        manifest["deviations"].append(
            "note: the zero policy ignores IVRA; its arms are identical by construction"
        )
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str))

    job = LiberoJob(config, policy=policy_instance)
    t0 = time.perf_counter()
    journal = out / "journal.jsonl"
    n_before = len({r["key"] for r in _final_lines(journal)})

    def run_units(batch: list[dict], desc: str) -> list[dict]:
        return execute(
            job,
            batch,
            journal,
            executor=executor,
            workers=workers,
            retries=retries,
            desc=desc,
            progress=progress,
            rerun_errors=rerun_errors,
            ray_address=ray_address,
            ray_resources=ray_resources,
            lockstep=lockstep,
        )

    if sequential:
        records, manifest["sequential"] = _sequential_rounds(
            run_units, units, init_states, arms, suite, **sequential
        )
    else:
        records = run_units(units, f"LIBERO {'+'.join(suites)}")
    wall = time.perf_counter() - t0
    ran = [r for r in records if r.get("status") == "ok" and (r.get("meta") or {}).get("job")]
    n_new = len(records) - n_before
    manifest["timing"] = {
        "episodes_this_invocation": n_new,
        "wall_s_this_invocation": round(wall, 1),
        "episodes_per_hour_this_invocation": round(3600 * n_new / wall, 1) if wall > 0 and n_new else None,
        **timing(ran),
    }

    ab_videos = []
    if videos > 0:
        from ivra.eval.report import make_ab_videos

        ab_videos = make_ab_videos(records, out / "episodes", out / "videos", videos)
    manifest["videos"] = [v["path"] for v in ab_videos]
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str))

    from ivra.eval.report import summarize, write_report

    report = write_report(records, out, manifest=manifest, videos=ab_videos)
    return {
        "out": out,
        "records": records,
        "summary": summarize(records),
        "manifest": manifest,
        "report": report,
    }


def timing(ran: list[dict]) -> dict:
    """Per-worker rates of finished episodes: env steps per second of worker time (a lockstep batch's time counts
    once for all its episodes), of simulator time alone, and the policy's time per episode step (a batched call's
    time shared among the episodes in it)."""
    env_steps = sum(r["result"]["env_steps"] for r in ran)
    batches: dict[str, float] = {}
    worker_s = 0.0
    for r in ran:
        lock = r["meta"].get("lockstep")
        if lock and r["meta"].get("elapsed_s") is not None:
            batches[f"{r['meta'].get('worker')}/{lock['batch']}"] = float(r["meta"]["elapsed_s"])
        else:
            worker_s += r["meta"]["job"]["wall_s"]
    worker_s += sum(batches.values())
    sim_s = sum(r["meta"]["job"]["sim_s"] for r in ran)
    steps = sum(r["result"]["steps"] for r in ran)
    return {
        "env_steps_per_s_per_worker": round(env_steps / worker_s, 2) if worker_s else None,
        "sim_only_env_steps_per_s": round(env_steps / sim_s, 2) if sim_s else None,
        "policy_s_per_step": round(sum(r["meta"]["job"]["policy_s"] for r in ran) / max(1, steps), 4),
    }


def paired_outcomes(records: list[dict], arms: dict, init_states: list[int]) -> list[tuple[bool, bool]]:
    """(baseline, IVRA) success of every unit both arms finished, by initial state, then task."""
    base_arm, ivra_arm = list(arms)
    by_arm: dict[str, dict] = {}
    for r in records:
        if r.get("status") == "ok":
            u = r["unit"]
            by_arm.setdefault(u["arm"], {})[(u["init_state"], u["task_id"])] = bool(r["result"]["success"])
    base, treat = by_arm.get(base_arm, {}), by_arm.get(ivra_arm, {})
    order = {s: i for i, s in enumerate(init_states)}
    keys = sorted((k for k in base if k in treat), key=lambda k: (order[k[0]], k[1]))
    return [(base[k], treat[k]) for k in keys]


def _sequential_rounds(
    run_units, units, init_states, arms, suite, round: int, delta: float, design: str = "anytime"
):
    """Rounds of ``round`` initial states (every task, both arms) until the ``design``'s rule decides."""
    from ivra.eval.sequential import make_rounds

    if list(arms) != ["baseline", "ivra"]:
        raise ValueError(f"a sequential run is a paired A/B of arms baseline and ivra, got {list(arms)}")
    groups = [init_states[i : i + round] for i in range(0, len(init_states), round)]
    seq, records = make_rounds(design, len(units) // 2, delta, len(groups)), []
    for r, group in enumerate(groups, 1):
        chosen = set(group)
        records += run_units(
            [u for u in units if u["init_state"] in chosen], f"LIBERO {suite} round {r}/{len(groups)}"
        )
        seq.add(paired_outcomes(records, arms, init_states), last=r == len(groups))
        print(seq.line(), file=sys.stderr)
        if seq.decision.stop:
            break
    spent = sum(1 for rec in records if rec.get("status") == "ok")
    record = seq.record(f"{round} initial states x every task", "the whole run", spent, len(units))
    record["settings"] = {"design": design, "round": round, "delta": delta}
    return records, record


def _final_lines(journal: Path) -> list[dict]:
    from ivra.eval.journal import Journal

    return list(Journal(journal).final_records().values())


__all__ = ["LiberoMissing", "run_libero"]
