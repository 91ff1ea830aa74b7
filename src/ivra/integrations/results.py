"""Per-episode outcomes of a finished run, keyed by episode identity, from the result files of the tools that run
IVRA A/Bs: ``ivra compare`` pairs two runs on these keys.

==============================  =============================================  ====================================
format (how it is recognised)   one episode                                    identity (the key)
==============================  =============================================  ====================================
``ivra``: ``journal.jsonl``     a tabletop episode of a unit's ``episodes``    ``tabletop``, split, seed
of ``ivra demo`` / ``ivra eval``  or one LIBERO unit                           ``libero``, suite, task id, init
(JSON lines with ``unit``,                                                     state, seed
``result``, ``status``)
``vla-eval``: aggregate JSON    a row of ``tasks[].episodes``                  benchmark, task, suite, task id,
(``benchmark``, ``tasks``,                                                     episode index, the run's seed
``harness_version``)
``inspect-robots``: EvalLog     one epoch of a ``samples[]`` scene             task, the run's seed, scene id,
JSON (``version`` 1, ``eval``,                                                 epoch (a blind run of ``--policy
``samples``)                                                                   ivra``: the blind pair)
``lerobot``: ``eval_info.json``  entry i of a ``per_task[].metrics.successes``  task group, task id, episode index
(``per_task``, ``overall``)
==============================  =============================================  ====================================

A file that holds several IVRA arms (an ivra journal; an inspect-robots log of a blind run) gives the episodes of
one arm, chosen by name. Episodes that ended in an error (an ivra unit whose final status is not ``ok``, a
vla-eval row with a ``failure_reason``, an inspect-robots trial with no score) are not outcomes: they are counted
apart, as ``ivra eval``'s report does.

Facts of the formats, each from the tool's own code:

* vla-eval 0.8.0, ``vla_eval/results/export.py`` ``_build_aggregate`` and ``collector.py`` ``_build_task_result``:
  ``{"benchmark", "mode", "harness_version", "created_at", "tasks": [{"task", "episodes": [{"episode_id",
  "metrics": {"success": ...}, "steps", "elapsed_sec", "failure_reason"?, ...task context}], ...}], "config",
  "eval_id", "seed"? (config params), "partial"?}``; the task context (``orchestrator.py``) is the task dict's
  scalar fields (``name``, ``suite``, ``task_id``, ``episode_idx``) and ``task_idx``. Which simulator an episode
  runs in, and after which episodes, depends on vla-eval's work order (shards take items from a shared queue), and
  a LIBERO initial state gives a different first image in a fresh simulator than in a reused one: two vla-eval
  runs see the same episodes only with the same work order, which the file cannot show (a warning says so).
* inspect-robots 0.60.0, ``inspect_robots/log.py`` (``EvalLog`` schema version 1: ``eval.task``, ``eval.seed``,
  ``samples[].scene_id``, ``samples[].epochs[e]`` a dict of scorer values, ``{}`` for an errored trial,
  ``samples[].trial_metadata[e]``) and ``rollout.py`` (trial seed ``derive_seed(eval.seed, scene.init_seed,
  epoch)``, so task, run seed, scene and epoch fix the seed).
* lerobot 0.6.1, ``lerobot/scripts/lerobot_eval.py``: ``eval_main`` writes ``eval_info.json`` =
  ``eval_policy_all(...)`` = ``{"per_task": [{"task_group", "task_id", "metrics": {"sum_rewards", "max_rewards",
  "successes", "video_paths", "predicted_video_paths"}}], "per_group", "overall"}`` (``successes``: one bool per
  episode, in episode order); ``eval_policy`` seeds the episodes of batch ``b`` with ``range(start_seed + b *
  num_envs, ...)``, ``start_seed = cfg.seed``, so episode i of a task has seed ``--seed`` + i, and the file does not
  record the seed (a warning says so). (Its per-episode ``per_episode`` rows belong to ``eval_policy``'s return
  value, which ``eval_main`` does not write.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("ivra", "vla-eval", "inspect-robots", "lerobot")


class UnknownFormat(ValueError):
    """A file that is none of :data:`FORMATS`."""


@dataclass
class Run:
    """The outcomes of one arm of one run: identity -> success."""

    path: str
    format: str
    arm: str
    outcomes: dict[tuple, bool]
    identity: str  # what the key is made of, for the reader
    errors: int = 0  # episodes that ended in an error (not outcomes)
    warnings: list[str] = field(default_factory=list)
    arms: tuple[str, ...] = ()  # every arm the file holds

    @property
    def label(self) -> str:
        return f"{self.path} ({self.format}, arm {self.arm})"


def _load_json(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    rows = []
    for line in text.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                return None
    return rows


def sniff(data: Any) -> str | None:
    """The format of a parsed file, or None."""
    if isinstance(data, list) and data and all(isinstance(r, dict) and "unit" in r for r in data):
        return "ivra"
    if isinstance(data, dict):
        if isinstance(data.get("tasks"), list) and "benchmark" in data and "harness_version" in data:
            return "vla-eval"
        if (
            data.get("version") == 1
            and isinstance(data.get("eval"), dict)
            and isinstance(data.get("samples"), list)
        ):
            return "inspect-robots"
        if isinstance(data.get("per_task"), list) and "overall" in data:
            return "lerobot"
    return None


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for name in ("journal.jsonl",):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no journal.jsonl in the folder {path}: give a result file")
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def _pick_arm(path: Path, arms: list[str], arm: str | None, default: str | None) -> str:
    if arm is not None:
        if arm not in arms:
            raise ValueError(f"{path} holds no arm {arm!r}; its arms: {', '.join(arms) or 'none'}")
        return arm
    if len(arms) == 1:
        return arms[0]
    if default in arms:
        return default
    raise ValueError(f"{path} holds the arms {', '.join(arms)}: name one (--arm-a / --arm-b)")


def read_run(
    path: str | Path, arm: str | None = None, default_arm: str | None = None, metric: str | None = None
) -> Run:
    """The outcomes of ``arm`` (or the file's only arm, else ``default_arm``) in the result file ``path``."""
    p = _resolve(Path(path))
    data = _load_json(p)
    fmt = sniff(data)
    if fmt is None:
        raise UnknownFormat(
            f"{p} is not a result file ivra compare reads: expected an ivra journal.jsonl, a vla-eval aggregate "
            "JSON, an inspect-robots EvalLog JSON or a lerobot-eval eval_info.json"
        )
    reader = {"ivra": _ivra, "vla-eval": _vla_eval, "inspect-robots": _inspect_robots, "lerobot": _lerobot}[
        fmt
    ]
    return reader(p, data, arm, default_arm, metric)


# --- ivra ------------------------------------------------------------------------------------------------


def _ivra(p: Path, records: list, arm, default_arm, metric) -> Run:
    final: dict[str, dict] = {}
    for rec in records:  # the last record of a key is its final state (journal.Journal.final_records)
        final[rec.get("key", json.dumps(rec["unit"], sort_keys=True))] = rec
    arms = list(dict.fromkeys(str(r["unit"].get("arm", "default")) for r in final.values()))
    chosen = _pick_arm(p, arms, arm, default_arm)
    out, errors, kinds = {}, 0, set()
    for rec in final.values():
        unit = rec["unit"]
        if str(unit.get("arm", "default")) != chosen:
            continue
        if rec.get("status") != "ok":
            errors += len(unit.get("seeds", [None]))
            continue
        result = rec["result"]
        if "episodes" in result:  # tabletop: a unit of many episodes
            kinds.add("tabletop: split, seed")
            for ep in result["episodes"]:
                out[("tabletop", ep.get("split", unit.get("split")), int(ep["seed"]))] = bool(ep["success"])
        else:  # LIBERO: one episode per unit
            kinds.add("libero: suite, task id, init state, seed")
            key = ("libero", unit.get("suite"), unit.get("task_id"), unit.get("init_state"), unit.get("seed"))
            out[key] = bool(result["success"])
    return Run(str(p), "ivra", chosen, out, "; ".join(sorted(kinds)) or "none", errors, [], tuple(arms))


# --- vla-eval --------------------------------------------------------------------------------------------


def _vla_eval(p: Path, data: dict, arm, default_arm, metric) -> Run:
    metric = metric or "success"
    served = (data.get("server_info") or {}).get("ivra") or {}  # ivra serve's hello (vlaeval.py)
    served_arm = None if "arm" not in served else ("baseline" if served["arm"] is None else "ivra")
    label = str(arm or served_arm or p.stem)
    seed = data.get("seed", ((data.get("config") or {}).get("params") or {}).get("seed"))
    out, errors = {}, 0
    for task in data["tasks"]:
        for ep in task.get("episodes", []):
            if ep.get("failure_reason"):
                errors += 1
                continue
            idx = ep.get("episode_idx", ep.get("episode_id"))
            key = (
                "vla-eval",
                data.get("benchmark"),
                str(task.get("task")),
                ep.get("suite"),
                ep.get("task_id"),
                idx,
                seed,
            )
            value = (ep.get("metrics") or {}).get(metric)
            if value is None:
                raise ValueError(f"{p}: an episode of task {task.get('task')!r} has no metric {metric!r}")
            out[key] = bool(value)
    warnings = [
        f"{p}: vla-eval cannot guarantee that paired episodes were identical: an episode's scene depends on its "
        "work order (which simulator ran it, after which episodes), which its results do not record; run both arms "
        "with the same benchmark config, shards and seed"
    ]
    if data.get("partial"):
        warnings.append(f"{p}: vla-eval marks this run partial (work items never finished)")
    return Run(
        str(p), "vla-eval", label, out, "benchmark, task, suite, task id, episode index, seed", errors, warnings,
        (label,),
    )  # fmt: skip


# --- inspect-robots --------------------------------------------------------------------------------------


def _trial_ivra(meta: Any) -> dict:
    ivra = meta.get("ivra") if isinstance(meta, dict) else None
    return ivra if isinstance(ivra, dict) else {}


def _inspect_robots(p: Path, data: dict, arm, default_arm, metric) -> Run:
    spec = data["eval"]
    trials = []
    for sample in data["samples"]:
        metas = list(sample.get("trial_metadata") or [])
        for e, scores in enumerate(sample.get("epochs") or []):
            trials.append((sample, e, scores, _trial_ivra(metas[e] if e < len(metas) else {})))
    ivra_arms = list(dict.fromkeys(m["arm"] for *_x, m in trials if m.get("arm") is not None))
    if ivra_arms:
        chosen = _pick_arm(p, ivra_arms, arm, default_arm)
    else:  # not run with --policy ivra: the run is one arm, named by its policy
        chosen = str(arm or spec.get("policy"))
    blind = any("blind" in m for *_x, m in trials)
    out, errors, metric_used = {}, 0, metric
    for sample, e, scores, m in trials:
        if ivra_arms and m.get("arm") != chosen:
            continue
        if not scores:  # an errored trial is recorded but never scored
            errors += 1
            continue
        if metric_used is None:
            metric_used = "success_at_end" if "success_at_end" in scores else next(iter(scores))
        if metric_used not in scores:
            raise ValueError(
                f"{p}: scene {sample['scene_id']!r} has no score {metric_used!r}; it has {sorted(scores)}"
            )
        value = float(scores[metric_used])
        if not (value in (0.0, 1.0) or math.isnan(value)):
            raise ValueError(f"{p}: score {metric_used!r} = {value} is not a success (0 or 1); pass --metric")
        if (
            blind
        ):  # the two arms of blind pair k are trials 2k and 2k+1 of the run: paired on the pair and scene
            key = (
                "inspect-robots",
                spec.get("task"),
                spec.get("seed"),
                sample["scene_id"],
                "blind pair",
                m["blind"]["pair"],
            )
        else:
            key = ("inspect-robots", spec.get("task"), spec.get("seed"), sample["scene_id"], e)
        out[key] = value == 1.0
    warnings = []
    if blind:
        warnings.append(
            f"{p}: a blind run: the two trials of a pair (consecutive trials of one scene) are paired; they are the "
            "same episode only as far as the embodiment (or the operator) resets the same initial state (their "
            "inspect-robots trial seeds differ)"
        )
    if not (spec.get("embodiment_info") or {}).get("is_simulated", False):
        warnings.append(
            f"{p}: a real embodiment: paired trials share the scene id and epoch, and their initial states are as "
            "alike as the operator set them up"
        )
    identity = "task, seed, scene id, blind pair" if blind else "task, seed, scene id, epoch"
    return Run(
        str(p), "inspect-robots", chosen, out, identity, errors, warnings, tuple(ivra_arms) or (chosen,)
    )


# --- lerobot-eval ----------------------------------------------------------------------------------------


def _lerobot(p: Path, data: dict, arm, default_arm, metric) -> Run:
    label = str(arm or p.parent.name or p.stem)
    out = {}
    for task in data["per_task"]:
        successes = (task.get("metrics") or {}).get("successes")
        if not isinstance(successes, list):
            raise ValueError(
                f"{p}: task {task.get('task_group')}/{task.get('task_id')} has no metrics.successes list"
            )
        for i, ok in enumerate(successes):
            out[("lerobot", task.get("task_group"), task.get("task_id"), i)] = bool(ok)
    warnings = [
        f"{p}: lerobot-eval does not record its seed: episode i of a task is paired on its index, and has the same "
        "scene in both runs only if both ran with the same --seed (lerobot seeds it --seed + i)"
    ]
    return Run(str(p), "lerobot", label, out, "task group, task id, episode index", 0, warnings, (label,))
