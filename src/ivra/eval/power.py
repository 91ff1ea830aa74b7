"""How many episodes an A/B needs: paired and unpaired designs for a success-rate difference.

* Paired (the same units under both arms; McNemar's test): Connor (1987), "Sample size for testing differences in
  proportions for the paired-sample design", Biometrics 43(1): with ``psi`` the probability that a pair is
  discordant and ``delta`` the difference to detect,
  ``n = (z_{1-a/2} sqrt(psi) + z_{1-b} sqrt(psi - delta^2))^2 / delta^2`` pairs.
* Unpaired (independent episodes per arm; two-proportion z test), per arm:
  ``n = (z_{1-a/2} sqrt(2 p (1 - p)) + z_{1-b} sqrt(p1 (1 - p1) + p2 (1 - p2)))^2 / delta^2``, ``p`` the mean
  of the two rates.

Pairing helps exactly as far as the arms agree: ``psi`` is small when the two arms succeed and fail on the same
units. Without a pilot, ``psi`` is taken at its value for independent arms, ``p1 (1 - p2) + p2 (1 - p1)`` (no
benefit from pairing); a pilot run's journal or results give the measured one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy.stats import norm

#: the paper's three claims (arXiv 2601.16207): baseline and IVRA success rates
PAPER_CLAIMS = {
    "LLaRA on VIMA (12 % data)": (0.539, 0.581),
    "OpenVLA on LIBERO": (0.765, 0.776),
    "FLOWER on LIBERO": (0.963, 0.971),
}


@dataclass(frozen=True)
class Plan:
    baseline: float
    treated: float
    alpha: float
    power: float
    discordance: float
    discordance_source: str
    paired_pairs: int  # pairs (each pair = one episode per arm)
    unpaired_per_arm: int

    def to_dict(self) -> dict:
        return asdict(self)


def independent_discordance(p1: float, p2: float) -> float:
    return p1 * (1 - p2) + p2 * (1 - p1)


def paired_pairs(delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs for McNemar's test to detect ``delta`` with the given discordance (Connor 1987)."""
    delta = abs(delta)
    if not 0 < delta < 1:
        raise ValueError(f"the effect must be a difference of rates in (0, 1), got {delta!r}")
    if not delta <= discordance <= 1:
        raise ValueError(
            f"discordance {discordance!r} must be in [|effect|, 1] = [{delta}, 1]: a difference of {delta} needs at "
            "least that share of discordant pairs"
        )
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((za * math.sqrt(discordance) + zb * math.sqrt(discordance - delta**2)) ** 2 / delta**2)


def detectable(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest difference ``n`` pairs detect with the given power (Connor 1987 solved for delta, by
    bisection); None when no difference in (0, discordance] is detectable (too few pairs or no discordant pair)."""
    if n < 1 or discordance <= 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def pairs(d: float) -> float:
        return (za * math.sqrt(discordance) + zb * math.sqrt(max(0.0, discordance - d * d))) ** 2 / (d * d)

    if pairs(discordance) > n:
        return None
    lo, hi = 1e-9, discordance  # pairs() falls as d grows
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pairs(mid) > n else (lo, mid)
    return hi


def power_statement(n: int, discordant: int, alpha: float = 0.05, power: float = 0.8) -> str:
    """One sentence of a report: what difference this A/B could detect (the planner's power, ``ivra plan``)."""
    if n < 1:
        return "power: no pairs"
    psi = discordant / n
    d = detectable(n, psi, alpha, power)
    head = f"power (`ivra plan`): {n} pairs, {100 * psi:.1f} % discordant"
    if d is None:
        return f"{head}: too few discordant pairs to detect any difference with {power:.0%} power at alpha {alpha}"
    return (
        f"{head}: this A/B detects a difference of +-{100 * d:.1f} pp with {power:.0%} power at alpha {alpha} "
        "(fixed design, McNemar; Connor 1987); smaller differences may go unseen"
    )


def unpaired_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Episodes per arm for a two-proportion z test."""
    delta = abs(p2 - p1)
    if delta == 0:
        raise ValueError("the two rates are equal: no sample size detects a zero effect")
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    p = (p1 + p2) / 2
    return math.ceil(
        (za * math.sqrt(2 * p * (1 - p)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / delta**2
    )


def plan(
    baseline: float,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | None = None,
    source: str | None = None,
) -> Plan:
    for name, v in (("baseline", baseline), ("alpha", alpha), ("power", power)):
        if not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    treated = baseline + effect
    if not 0 < treated < 1:
        raise ValueError(f"baseline + effect = {treated!r} must be a success rate in (0, 1)")
    if discordance is None:
        discordance, source = independent_discordance(baseline, treated), "assumed: arms independent"
    return Plan(
        baseline,
        treated,
        alpha,
        power,
        discordance,
        source or "given",
        paired_pairs(effect, discordance, alpha, power),
        unpaired_per_arm(baseline, treated, alpha, power),
    )


@dataclass(frozen=True)
class Pilot:
    """The 2x2 table of a finished paired run: pairs, baseline-only and IVRA-only successes, both succeeded."""

    n: int
    baseline_only: int
    ivra_only: int
    both: int
    source: str

    @property
    def baseline(self) -> float:
        return (self.both + self.baseline_only) / self.n

    @property
    def discordance(self) -> float:
        return (self.baseline_only + self.ivra_only) / self.n


#: a pilot smaller than this, or with fewer discordant pairs, cannot estimate the discordance (``ivra plan``)
MIN_PILOT_PAIRS = 50
MIN_PILOT_DISCORDANT = 5


def check_pilot(pilot: Pilot) -> None:
    """Refuse a pilot too small or degenerate to estimate a baseline and a discordant share from."""
    need = (
        f"a pilot needs at least {MIN_PILOT_PAIRS} pairs, {MIN_PILOT_DISCORDANT} of them discordant, and a baseline "
        "that neither always succeeds nor always fails"
    )
    if pilot.n < MIN_PILOT_PAIRS:
        raise ValueError(f"{pilot.source}: {pilot.n} pair(s) is too small to plan from; {need}")
    if not 0 < pilot.baseline < 1:
        raise ValueError(
            f"{pilot.source}: the baseline succeeded in {100 * pilot.baseline:.0f} % of {pilot.n} pairs, which says "
            f"nothing about its rate; {need}"
        )
    disc = pilot.baseline_only + pilot.ivra_only
    if disc < MIN_PILOT_DISCORDANT:
        raise ValueError(
            f"{pilot.source}: {disc} discordant pair(s) of {pilot.n} is too few to estimate the discordant share; "
            f"{need} (about {math.ceil(MIN_PILOT_DISCORDANT * pilot.n / max(disc, 1))} pairs at this rate)"
        )


@dataclass(frozen=True)
class Throughput:
    """Finished episodes and the worker time they took, from a run's journal."""

    episodes: int
    worker_s: float
    source: str

    @property
    def per_hour(self) -> float:
        return 3600 * self.episodes / self.worker_s


def read_throughput(path: str | Path) -> Throughput | None:
    """Episodes per hour per worker measured by a run's journal (each unit's ``meta.elapsed_s``; a lockstep
    batch's time counted once for its units); None when the run has no journal or no timings."""
    path = Path(path)
    journal = path / "journal.jsonl" if path.is_dir() else path.with_name("journal.jsonl")
    if not journal.exists():
        return None
    episodes, worker_s, batches = 0, 0.0, {}
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        meta = rec.get("meta") or {}
        if rec.get("status") != "ok" or meta.get("elapsed_s") is None:
            continue
        episodes += len(rec["result"].get("episodes", [rec["result"]]))
        lock = meta.get("lockstep")
        if lock:
            batches[f"{meta.get('worker')}/{lock['batch']}"] = float(meta["elapsed_s"])
        else:
            worker_s += float(meta["elapsed_s"])
    worker_s += sum(batches.values())
    if not episodes or worker_s <= 0:
        return None
    return Throughput(episodes, worker_s, str(journal))


def read_pilot(path: str | Path) -> Pilot:
    """The pooled 2x2 table of a finished paired A/B: an `ivra demo` results.json (or its folder), or the
    journal.jsonl (or run folder) of `ivra demo` or `ivra eval libero --ab`."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json" if (path / "results.json").exists() else path / "journal.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"no pilot run at {path}: expected an ivra demo results.json or a run's journal.jsonl"
        )
    if path.suffix == ".json":
        rows = json.loads(path.read_text()).get("summary", {}).get("rows", [])
        rows = [r for r in rows if r.get("split") != "all" and "ivra_only" in r]
        if not rows:
            raise ValueError(f"{path}: no paired rows (expected the results.json of `ivra demo`)")
        n = sum(r["n"] for r in rows)
        b_only = sum(r["baseline_only"] for r in rows)
        i_only = sum(r["ivra_only"] for r in rows)
        both = sum(round(r["baseline"] * r["n"]) - r["baseline_only"] for r in rows)
        return Pilot(n, b_only, i_only, both, str(path))
    outcome: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("status") != "ok":
            continue
        unit, result = rec["unit"], rec["result"]
        for ep in result.get("episodes", [result]):  # tabletop units hold many episodes, LIBERO's one
            key = json.dumps([unit.get("split"), unit.get("suite"), unit.get("task_id"), ep.get("seed")])
            outcome.setdefault(unit["arm"], {})[key] = bool(ep["success"])
    if "baseline" not in outcome or len(outcome) != 2:
        raise ValueError(
            f"{path}: expected a paired run of two arms, 'baseline' and one IVRA arm; got {sorted(outcome)}"
        )
    base, other = outcome["baseline"], next(v for k, v in outcome.items() if k != "baseline")
    keys = base.keys() & other.keys()
    if not keys:
        raise ValueError(f"{path}: the two arms share no finished unit")
    pairs = [(base[k], other[k]) for k in keys]
    return Pilot(
        len(pairs),
        sum(a and not b for a, b in pairs),
        sum(b and not a for a, b in pairs),
        sum(a and b for a, b in pairs),
        str(path),
    )
