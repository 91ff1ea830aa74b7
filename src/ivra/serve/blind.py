"""Blind real-robot A/B through the policy server: ``ivra serve --ab blind`` + ``ivra trials``.

Discipline (after RoboArena, arXiv 2506.18123, for one lab's IVRA-on/off comparison):

* **Assignment per episode, balanced and seeded.** Episodes come in pairs; pair k runs both arms in an order drawn
  from ``numpy.random.default_rng([seed, k])``. The operator sets up the *same initial condition* for the two
  episodes of a pair. The arm of episode i is a pure function of (seed, i) (:func:`arm_of`).
* **Blind.** The server journals each episode as it starts (``episodes.jsonl``: index, pair, episode key, start
  time; no arm) and never shows or sends the arm (metadata says only ``ab: blind``; requests may not set
  ``ivra``). ``config.json`` holds the seed and the treatment; do not read it before unblinding.
* **Episodes.** Episodes are the server's sessions (:mod:`ivra.serve.sessions`): a request's ``episode_id`` (any
  string or integer) names its episode, and a new value starts a new episode and takes the next slot of the
  schedule; without ``episode_id``, one websocket connection is one episode until the client sends
  ``reset: true``. ivra's own client names each request's episode (:class:`ivra.episodes.EpisodeRunner` hands it
  the keys).
* **Outcomes.** A harness that judges success itself (vla-eval's ``episode_end``, :mod:`ivra.serve.vlaeval`) writes
  it to ``outcomes.jsonl`` as the episode ends; otherwise ``ivra trials DIR`` asks the operator, episode by episode in start order, for success / failure
  (``outcomes.jsonl``), showing only index, pair and start time.
* **Report.** ``ivra trials DIR --report`` unblinds: success per arm with Wilson 95 % intervals over all scored
  episodes (unpaired: difference with Newcombe's interval, Fisher's exact p) and over complete pairs (paired:
  difference with Tango's interval, exact McNemar p).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import threading
from pathlib import Path
from typing import IO

import numpy as np

from ivra.eval import runfolder

ARMS = ("baseline", "ivra")
#: where `ivra serve --ab blind` writes and `ivra trials` reads when no folder is given
DEFAULT_DIR = "runs/blind"
#: what a blind A/B folder is fixed to (config.json), and the option that sets each
FIXED = ("seed", "treatment", "policy")
OPTIONS = {"seed": "--ab-seed", "treatment": "--ivra", "policy": "--policy"}
#: the stop rule `ivra trials` checks (trials.json): fixed before the first outcome is looked at
RULE_OPTIONS = {"delta": "--delta", "max_pairs": "--max-pairs"}


def arm_of(seed: int, episode: int) -> str:
    """The arm of episode ``episode`` (0-based) of a blind A/B with ``seed``: balanced in every pair."""
    pair, pos = divmod(int(episode), 2)
    order = np.random.default_rng([int(seed), pair]).permutation(2)
    return ARMS[int(order[pos])]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not a JSON line") from None
    return out


class BlindAB:
    """Server side: assigns arms to episodes as they start (resumes from ``episodes.jsonl``)."""

    def __init__(self, folder: str | os.PathLike, treatment: dict, seed: int = 0, policy: str = ""):
        from ivra.config import IVRAConfig

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.treatment = IVRAConfig(**treatment).to_dict()
        self.seed = int(seed)
        cfg_path = self.folder / "config.json"
        config = {"seed": self.seed, "treatment": self.treatment, "policy": policy, "arms": list(ARMS)}
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            runfolder.refuse_changed(  # the check every verb's run folder gets
                self.folder,
                {k: old.get(k) for k in FIXED},
                {k: config[k] for k in FIXED},
                describe=lambda a, b: runfolder.changes(a, b, OPTIONS),
                todo="to resume that A/B, rerun with its original options; for a new one, pass another --ab-dir",
            )
        else:
            cfg_path.write_text(json.dumps({**config, "created": _now()}, indent=2) + "\n")
        self.episodes_path = self.folder / "episodes.jsonl"
        self._by_key = {e["key"]: e["episode"] for e in _read(self.episodes_path)}
        self._next = len(self._by_key)
        self._lock = threading.Lock()

    def arm_for(self, key: str) -> tuple[str, dict | None]:
        with self._lock:
            if key not in self._by_key:
                i = self._next
                self._next += 1
                self._by_key[key] = i
                _append(self.episodes_path, {"episode": i, "pair": i // 2, "key": key, "started": _now()})
                print(f"blind A/B: episode {i} started (pair {i // 2}, slot {i % 2 + 1} of 2)", flush=True)
            i = self._by_key[key]
        arm = arm_of(self.seed, i)
        return arm, (self.treatment if arm == "ivra" else None)

    def record_outcome(self, key: str, success: bool, note: str = "") -> None:
        """Score a started episode from the client's own verdict (a simulator harness such as vla-eval reports
        success at the end of each episode): appended to ``outcomes.jsonl`` as ``ivra trials`` would."""
        with self._lock:
            if key not in self._by_key:
                raise KeyError(f"no blind A/B episode {key!r} started")
            _append(
                self.folder / "outcomes.jsonl",
                {"episode": self._by_key[key], "success": bool(success), "note": note, "recorded": _now()},
            )


def _require_ab_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a blind A/B folder (no config.json): give `ivra trials` the folder that "
            f"`ivra serve --ab blind --ab-dir DIR` wrote (default {DEFAULT_DIR})"
        )


def record_outcomes(
    folder: str | os.PathLike,
    stdin: IO[str],
    stdout: IO[str],
    delta: float | None = None,
    max_pairs: int | None = None,
) -> int:
    """Operator loop: success / failure for every started episode without an outcome, in start order. With
    ``delta``, the sequential rule is checked as pairs complete and the operator is told to stop once it decides
    (only *that* it decided: which way stays blind until ``--report``)."""
    if delta is not None:
        fix_rule(folder, delta, max_pairs)
    code = _record(folder, stdin, stdout)
    if delta is not None:
        d = sequential_decision(folder, delta, max_pairs)
        if d.stop:
            print(
                f"sequential rule: the A/B is decided after {d.n} complete pairs ({d.outcome if d.outcome != 'effect' else 'an effect'}"
                f"); stop and unblind with `ivra trials {folder} --report`",
                file=stdout,
            )
        else:
            print(f"sequential rule: not decided after {d.n} complete pairs; run more pairs", file=stdout)
    return code


def fix_rule(folder: str | os.PathLike, delta: float, max_pairs: int | None) -> None:
    """The sequential stop rule of a blind A/B is fixed by the first `ivra trials` in its folder (``trials.json``):
    a later one with another ``--delta`` or ``--max-pairs`` is refused (a rule changed after outcomes were seen
    loses its 95 % guarantee)."""
    _require_ab_folder(Path(folder))
    runfolder.claim(
        folder,
        "trials",
        {"delta": float(delta), "max_pairs": max_pairs},
        file="trials.json",
        options=RULE_OPTIONS,
        todo="the stop rule is fixed by the first `ivra trials` of an A/B: rerun with its --delta and --max-pairs",
    )


def _record(folder: str | os.PathLike, stdin: IO[str], stdout: IO[str]) -> int:
    folder = Path(folder)
    episodes_path = folder / "episodes.jsonl"
    _require_ab_folder(folder)
    outcomes_path = folder / "outcomes.jsonl"
    scored = {o["episode"] for o in _read(outcomes_path)}
    waiting = [e for e in _read(episodes_path) if e["episode"] not in scored]
    if not waiting:
        print(
            f"no episode is waiting for an outcome ({len(scored)} scored); run episodes, then `ivra trials` again",
            file=stdout,
        )
        return 0
    print(
        f"{len(waiting)} episode(s) waiting for an outcome; answer y (success), n (failure), s (skip), q (quit)",
        file=stdout,
    )
    for ep in waiting:
        while True:
            print(
                f"episode {ep['episode']} (pair {ep['pair']}, started {ep['started']}): success? [y/n/s/q] ",
                end="",
                file=stdout,
                flush=True,
            )
            line = stdin.readline()
            if not line:
                print("", file=stdout)
                return 0
            answer = line.strip().lower()
            if answer in ("y", "yes", "n", "no"):
                note = ""
                _append(
                    outcomes_path,
                    {
                        "episode": ep["episode"],
                        "success": answer.startswith("y"),
                        "note": note,
                        "recorded": _now(),
                    },
                )
                break
            if answer in ("s", "skip"):
                break
            if answer in ("q", "quit"):
                return 0
            print(f"expected y, n, s or q, got {line.strip()!r}", file=stdout)
    return 0


def _pairs_in_order(seed: int, outcomes: dict[int, bool]) -> list[tuple[bool, bool]]:
    """(baseline, IVRA) outcomes of the complete pairs, in pair order (the order the robot ran them)."""
    out = []
    for p in sorted({i // 2 for i in outcomes if (i ^ 1) in outcomes}):
        a, b = 2 * p, 2 * p + 1
        base, treat = (a, b) if arm_of(seed, a) == "baseline" else (b, a)
        out.append((outcomes[base], outcomes[treat]))
    return out


def sequential_decision(folder: str | os.PathLike, delta: float, max_pairs: int | None = None):
    """The anytime-valid stop rule (:mod:`ivra.eval.sequential`) over the complete pairs so far; checking it after
    every pair keeps its 95 % guarantee."""
    from ivra.eval.sequential import PairedCS, decide

    folder = Path(folder)
    seed = int(json.loads((folder / "config.json").read_text())["seed"])
    outcomes = {o["episode"]: bool(o["success"]) for o in _read(folder / "outcomes.jsonl")}
    cs = PairedCS().extend(_pairs_in_order(seed, outcomes))
    return decide(cs, delta, max_pairs or 10**9)


def _newcombe_unpaired(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """CI of p2 - p1 from the two Wilson intervals (Newcombe 1998, method 10)."""
    from ivra.eval.stats import wilson

    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p2 - p1
    return (d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2))


def report(folder: str | os.PathLike, delta: float | None = None, max_pairs: int | None = None) -> dict:
    """Unblind and compute the statistics; writes ``report.json`` and ``report.md`` into the folder."""
    from scipy.stats import fisher_exact

    from ivra.eval.stats import paired_ab, wilson

    folder = Path(folder)
    _require_ab_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    seed = int(config["seed"])
    episodes = {e["episode"]: e for e in _read(folder / "episodes.jsonl")}
    outcomes = {o["episode"]: bool(o["success"]) for o in _read(folder / "outcomes.jsonl")}
    unknown = sorted(set(outcomes) - set(episodes))
    if unknown:
        raise ValueError(f"outcomes for episodes that never started: {unknown[:5]}")
    by_arm = {a: [outcomes[i] for i in sorted(outcomes) if arm_of(seed, i) == a] for a in ARMS}
    rows = {}
    for a in ARMS:
        k, n = sum(by_arm[a]), len(by_arm[a])
        rows[a] = {"n": n, "successes": k, "rate": k / n if n else None, "ci": wilson(k, n) if n else None}
    result: dict = {
        "config": config,
        "episodes_started": len(episodes),
        "episodes_scored": len(outcomes),
        "arms": rows,
    }
    nb, ni = rows["baseline"]["n"], rows["ivra"]["n"]
    if nb and ni:
        kb, ki = rows["baseline"]["successes"], rows["ivra"]["successes"]
        result["unpaired"] = {
            "diff": ki / ni - kb / nb,
            "diff_ci": _newcombe_unpaired(kb, nb, ki, ni),
            "p_fisher": float(fisher_exact([[ki, ni - ki], [kb, nb - kb]])[1]),
        }
    pairs = sorted({i // 2 for i in outcomes if (i ^ 1) in outcomes})
    if pairs:
        base, ivra_ = [], []
        for p in pairs:
            for i in (2 * p, 2 * p + 1):
                (base if arm_of(seed, i) == "baseline" else ivra_).append(outcomes[i])
        result["paired"] = paired_ab(base, ivra_).as_dict()
    if delta is not None:
        fix_rule(folder, delta, max_pairs)
        result["sequential"] = sequential_decision(folder, delta, max_pairs).to_dict()
        result["sequential"]["delta"] = delta
    result["markdown"] = _markdown(result)
    (folder / "report.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, default=float) + "\n"
    )
    (folder / "report.md").write_text(result["markdown"] + "\n")
    return result


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _markdown(r: dict) -> str:
    from ivra.config import describe_setting

    cfg = r["config"]
    lines = [
        f"# Blind A/B (unblinded): policy {cfg.get('policy') or '?'}; treatment IVRA "
        f"{describe_setting(cfg['treatment'])}; seed {cfg['seed']}",
        "",
        f"{r['episodes_started']} episodes started, {r['episodes_scored']} scored.",
        "",
        "| arm | n | success % [95% CI] |",
        "|---|---:|---|",
    ]
    for a, row in r["arms"].items():
        ci = row["ci"]
        lines.append(
            f"| {a} | {row['n']} | {_pct(row['rate'])}"
            + (f" [{_pct(ci[0])}, {_pct(ci[1])}] |" if ci else " |")
        )
    if "unpaired" in r:
        u = r["unpaired"]
        lines += [
            "",
            f"Unpaired: IVRA - baseline = {100 * u['diff']:+.1f} pp [{100 * u['diff_ci'][0]:+.1f}, "
            f"{100 * u['diff_ci'][1]:+.1f}] (Newcombe), Fisher exact p = {u['p_fisher']:.3g}",
        ]
    if "paired" in r:
        from ivra.eval.power import power_statement

        p = r["paired"]
        lines += [
            f"Paired ({p['n']} complete pairs): IVRA - baseline = {100 * p['diff']:+.1f} pp "
            f"[{100 * p['diff_ci'][0]:+.1f}, {100 * p['diff_ci'][1]:+.1f}] (Tango; a fixed-design interval), "
            f"IVRA-only {p['b_only']}, baseline-only {p['a_only']}, exact McNemar p = {p['p_mcnemar']:.3g}",
            "",
            power_statement(p["n"], p["a_only"] + p["b_only"]),
        ]
    if "sequential" in r:  # the decision comes last
        d = r["sequential"]
        lo, hi = d["interval"]
        lines += [
            "",
            f"Sequential rule (anytime-valid, as an operator may look at any moment; checked after each complete "
            f"pair; delta {100 * d['delta']:.1f} pp): **{d['outcome']}** after {d['n']} pairs: {d['reason']} "
            f"(anytime-valid 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] pp)",
        ]
    return "\n".join(lines)
