"""Group-sequential paired A/B: an alpha-spending efficacy boundary and a non-binding beta-spending futility
boundary at looks planned before the run, exact for paired binary outcomes.

Sources: Jennison & Turnbull, *Group Sequential Methods with Applications to Clinical Trials* (Chapman & Hall
2000): ch. 7 (error-spending tests, Lan & DeMets 1983, Biometrika 70: 659-663; the power family
``f(t) = t ** rho`` of Kim & DeMets 1987, rho = 3 close to O'Brien-Fleming, rho = 1 close to Pocock) and ch. 12
(exact calculations for binary responses by recursion over the binomial counts at the looks); the futility
boundary spends the type-II error (Pampallona, Tsiatis & Kim 2001, Stat. Med. 20: 1353-1364) and is
*non-binding*: the efficacy boundary is computed as if futility never stopped a run, so ignoring a futility stop
keeps the type-I error.

Why exact, and conditional on the discordant pairs: a pair (the same unit under arms A and B) is concordant or
discordant; only discordant pairs carry information about D = rate(B) - rate(A) (McNemar). Under H0 (D = 0) each
discordant pair is B-only with probability 1/2, independently of how many pairs are discordant. So given the
discordant counts ``m_1 <= ... <= m_K`` at the looks, the B-only counts ``S_k`` are a random walk with
Binomial(m_k - m_{k-1}, 1/2) increments, and the probability that it crosses a boundary is computed exactly by
convolving the distribution of ``S`` among the paths still running (the recursion of J&T 12.1). At look k the
upper boundary ``u_k`` is the smallest count with

    P_H0(S_j >= u_j for some j <= k, no earlier crossing | m_1..m_k) <= alpha / 2 * f(t_k),

``t_k = n_k / N`` the planned information fraction (pairs so far over the planned maximum; ``t = 1`` at the last
look), and the lower boundary is its mirror ``m_k - u_k`` (two-sided: D > 0 and D < 0 are both effects, each side
spending alpha / 2, as the fixed design's two-sided McNemar test at alpha does; an IVRA that hurts stops the run
too). Whatever the discordant counts, the conditional type-I error is at most alpha, hence so is the unconditional
one, at the planned looks. Looking at other times, or more often, voids it: that is what the anytime-valid design
(:mod:`ivra.eval.sequential`) is for.

Futility is for the sign of interest: under the alternative D = delta a discordant pair is B-only with probability
``p1 = 1/2 + delta / (2 psi)``, psi the discordant share, taken at its Wilson upper bound (one-sided 90 %) from
m_k / n_k at the current look: a share low by chance would make the alternative look extreme and the boundary
aggressive (simulated: power 0.60 instead of 0.82 for the LLaRA claim with the plain estimate); the futility
boundary ``f_k`` is the largest count with ``b_{k-1} + P_p1(S_k <= f_k, no earlier stop) <= beta * f(t_k)`` (the
same recursion, with the earlier looks' boundaries as they were; ``b_{k-1}`` the beta spent as recorded at the
earlier looks, so re-estimating p1 never frees budget already spent), and below ``u_k``. When few pairs are discordant
(arms that always agree give none, and then the conditional test has nothing to go on), a gain of delta still
needs B-only pairs at a rate of at least delta: the boundary is raised to the largest ``g`` with
``P(Binomial(n_k, delta) <= g) <= beta * (f(t_k) - f(t_{k-1}))`` where that is higher (by the union bound this
adds at most beta to the chance of a futility stop under the alternative; it is left out of :func:`expected`).
A run stops for futility when ``S_k <= f_k``: a gain of delta would rarely give counts this low. At the last look a run that crossed neither
boundary is inconclusive.

Every boundary is a function of the looks' (pairs, discordant, B-only) counts only, so replaying a journal's
pairs through the same looks reaches the same decision at the same look.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy.stats import binom

#: efficacy and futility spending exponents (Kim & DeMets power family), chosen in benchmarks/sequential_ab.md
RHO_EFFICACY = 1.25
RHO_FUTILITY = 1.5
BETA = 0.2
#: planned looks (rounds) the planner sizes a group design for (benchmarks/sequential_ab.md: 30 looks save 29-31 %
#: under the alternative; 20 looks saved 28-29 % in the same simulation, recorded at commit 61c3ebc)
LOOKS = 30


@lru_cache(maxsize=4096)
def _pmf(n: int, p: float) -> np.ndarray:
    return binom.pmf(np.arange(n + 1), n, p)


def spent(t: float, total: float, rho: float) -> float:
    """Error spent by information fraction ``t`` (power family ``total * t ** rho``)."""
    return total * min(1.0, max(0.0, t)) ** rho


#: the futility boundary's alternative takes the discordant share at this upper confidence bound (one-sided z)
PSI_Z = 1.2816


def psi_upper(m: int, n: int, z: float = PSI_Z) -> float:
    """Wilson upper bound of the discordant share m / n: a cautious alternative for the futility boundary (a low
    share, by chance, would make a gain of delta look extreme and the boundary aggressive)."""
    p = m / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


@dataclass(frozen=True)
class Look:
    """One planned look as it happened: counts and the boundaries on the B-only count ``s``."""

    n: int  # pairs so far
    m: int  # discordant pairs so far
    s: int  # B-only pairs so far
    t: float  # information fraction
    upper: int  # s >= upper: B better
    lower: int  # s <= lower: B worse
    futility: int  # s <= futility (and above lower): no gain as large as delta; -1: none possible
    outcome: str


@dataclass
class GroupSequential:
    """A group-sequential two-sided paired test with a non-binding futility boundary; :meth:`look` at each
    planned look with the counts so far."""

    max_pairs: int
    delta: float
    alpha: float = 0.05
    beta: float = BETA
    rho: float = RHO_EFFICACY
    rho_futility: float = RHO_FUTILITY
    looks: list[Look] = field(default_factory=list)
    _h0: np.ndarray = field(default=None, init=False, repr=False)  # running paths under H0 (efficacy removed)
    _spent: float = field(default=0.0, init=False, repr=False)  # upper-side alpha actually spent
    _beta_spent: float = field(default=0.0, init=False, repr=False)  # beta spent, as recorded per look
    _beta_pending: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs!r}")
        for name, v in (("delta", self.delta), ("alpha", self.alpha), ("beta", self.beta)):
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        self._h0 = np.ones(1)

    @property
    def done(self) -> bool:
        return bool(self.looks) and self.looks[-1].outcome != "continue"

    def look(self, n: int, m: int, s: int, last: bool = False) -> Look:
        """The decision at a look with ``n`` pairs, ``m`` discordant, ``s`` of them B-only (cumulative)."""
        if self.done:
            raise ValueError("the run already stopped")
        prev = self.looks[-1] if self.looks else Look(0, 0, 0, 0.0, 1, -1, -1, "continue")
        if n < prev.n or m < prev.m or not 0 <= s - prev.s <= m - prev.m or m - prev.m > n - prev.n:
            raise ValueError(f"counts must grow consistently: had {prev}, got n={n}, m={m}, s={s}")
        last = last or n >= self.max_pairs
        t = 1.0 if last else n / self.max_pairs
        # efficacy, under H0 (p = 1/2), futility ignored (non-binding)
        h0 = np.convolve(self._h0, _pmf(m - prev.m, 0.5))
        tail = np.concatenate([np.cumsum(h0[::-1])[::-1], [0.0]])  # tail[u] = P(S >= u, running)
        budget = spent(t, self.alpha / 2, self.rho) * (1 + 1e-12)
        lo_u = m // 2 + 1  # the upper region stays above the middle (never overlaps the lower one)
        ok = np.nonzero(self._spent + tail[lo_u:] <= budget)[0]
        upper = lo_u + int(ok[0]) if ok.size else m + 1
        lower = m - upper
        # futility, under the alternative D = delta given the discordant share so far
        futility = self._futility(n, m, upper, lower, t, last)
        # and without conditioning: a gain of delta needs B-only pairs at a rate >= delta, whatever the discordance
        t_prev = 0.0 if not self.looks else self.looks[-1].t
        increment = spent(t, self.beta, self.rho_futility) - spent(t_prev, self.beta, self.rho_futility)
        if n and increment > 0:
            g = int(binom.ppf(increment, n, self.delta))  # smallest g with cdf(g) >= increment
            g = g if binom.cdf(g, n, self.delta) <= increment else g - 1
            futility = max(futility, min(g, upper - 1))
        if s >= upper:
            outcome = "better"
        elif s <= lower:
            outcome = "worse"
        elif s <= futility:
            outcome = "futility"
        elif last:
            outcome = "inconclusive"
        else:
            outcome = "continue"
        self._spent += float(tail[upper])
        self._beta_spent += self._beta_pending
        h0[upper:] = 0.0
        h0[: max(0, lower + 1)] = 0.0
        self._h0 = h0
        look = Look(n, m, s, t, upper, lower, futility, outcome)
        self.looks.append(look)
        return look

    def _futility(self, n: int, m: int, upper: int, lower: int, t: float, last: bool) -> int:
        if m == 0 or n == 0:
            return -1
        p1 = min(1 - 1e-9, 0.5 + self.delta / (2 * psi_upper(m, n)))
        # the running paths under p1: the earlier looks replayed with their boundaries as they were
        dist, m_prev = np.ones(1), 0
        for lk in self.looks:
            dist = np.convolve(dist, _pmf(lk.m - m_prev, p1))
            dist[lk.upper :] = 0.0
            dist[: max(0, max(lk.lower, lk.futility) + 1)] = 0.0
            m_prev = lk.m
        dist = np.convolve(dist, _pmf(m - m_prev, p1))
        cum = np.cumsum(dist)  # cum[f] = P(S <= f, running)
        # the beta spent is what each earlier look recorded (re-estimating p1 never frees budget already spent)
        budget = spent(t, self.beta, self.rho_futility) * (1 + 1e-12) - self._beta_spent
        ok = np.nonzero(cum[:upper] <= budget)[0]
        f = int(ok[-1]) if ok.size else -1
        self._beta_pending = float(cum[f]) if f >= 0 else 0.0
        return f

    @property
    def alpha_spent(self) -> float:
        """Two-sided type-I error spent so far, exactly (given the discordant counts)."""
        return 2 * self._spent


def simulate(
    design: GroupSequential, cells, looks: list[int], rng: np.random.Generator, runs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``runs`` A/Bs with pairs drawn from ``cells`` = P(A only, B only, both, neither), looked at after
    ``looks`` (cumulative pairs): outcome codes (1 better, -1 worse, 0 futility, 2 inconclusive) and pairs spent.
    The counts are drawn vectorised; the boundaries are computed per run (they depend on its discordant counts)."""
    p_disc = cells[0] + cells[1]
    p_b = cells[1] / p_disc if p_disc else 0.5
    steps = np.diff(np.concatenate([[0], looks]))
    dm = rng.binomial(steps[None, :].repeat(runs, 0), p_disc)
    ds = rng.binomial(dm, p_b)
    m, s = np.cumsum(dm, 1), np.cumsum(ds, 1)
    codes = {"better": 1, "worse": -1, "futility": 0, "inconclusive": 2}
    outcome, pairs = np.empty(runs, int), np.empty(runs, int)
    for r in range(runs):
        g = GroupSequential(
            design.max_pairs, design.delta, design.alpha, design.beta, design.rho, design.rho_futility
        )
        for k, n in enumerate(looks):
            lk = g.look(int(n), int(m[r, k]), int(s[r, k]), last=k == len(looks) - 1)
            if lk.outcome != "continue":
                outcome[r], pairs[r] = codes[lk.outcome], n
                break
    return outcome, pairs


def boundaries(design: GroupSequential, looks: list[tuple[int, int]]) -> list[Look]:
    """The boundaries the design sets at looks of (pairs, discordant) counts, whatever the B-only counts (they
    depend on the discordant counts only; the futility ones on the earlier looks' boundaries)."""
    g = GroupSequential(
        design.max_pairs, design.delta, design.alpha, design.beta, design.rho, design.rho_futility
    )
    for k, (n, m) in enumerate(looks):
        lk = g.look(int(n), int(m), int(m) // 2, last=k == len(looks) - 1)
        g.looks[-1] = Look(lk.n, lk.m, lk.s, lk.t, lk.upper, lk.lower, lk.futility, "continue")
    return g.looks


def expected(
    max_pairs: int,
    looks: list[int],
    delta: float,
    discordance: float,
    effect: float,
    alpha: float = 0.05,
    beta: float = BETA,
    rho: float = RHO_EFFICACY,
    rho_futility: float = RHO_FUTILITY,
) -> dict:
    """Power and expected pairs of the design when the discordant counts are their expectations
    (``discordance * n``) and the true difference is ``effect``: exact over the B-only counts."""
    design = GroupSequential(max_pairs, delta, alpha, beta, rho, rho_futility)
    bounds = boundaries(design, [(n, int(round(discordance * n))) for n in looks])
    p = min(1.0, max(0.0, 0.5 + effect / (2 * discordance)))
    dist, m_prev = np.ones(1), 0
    power = harm = fut = mean = 0.0
    for k, lk in enumerate(bounds):
        dist = np.convolve(dist, _pmf(lk.m - m_prev, p))
        up, low = float(dist[lk.upper :].sum()), float(dist[: max(0, lk.lower + 1)].sum())
        f = float(dist[max(0, lk.lower + 1) : lk.futility + 1].sum()) if lk.futility > lk.lower else 0.0
        power, harm, fut = power + up, harm + low, fut + f
        stop = up + low + f if k < len(bounds) - 1 else float(dist.sum())
        mean += lk.n * stop
        dist[lk.upper :] = 0.0
        dist[: max(0, max(lk.lower, lk.futility) + 1)] = 0.0
        m_prev = lk.m
    return {"power": power, "worse": harm, "futility": fut, "mean_pairs": mean, "max_pairs": int(looks[-1])}


@dataclass(frozen=True)
class GroupPlan:
    """A group design sized for equal power with the fixed design: its maximum and its expected pairs."""

    max_pairs: int
    looks: list[int]
    power: float
    mean_pairs_alternative: float
    mean_pairs_null: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_group(
    n_fixed: int,
    effect: float,
    discordance: float,
    alpha: float = 0.05,
    power: float = 0.8,
    n_looks: int = LOOKS,
) -> GroupPlan:
    """The smallest maximum (in steps of 2.5 % of the fixed size, up to 2x) whose design, with ``n_looks`` equal
    looks and futility margin ``effect``, has the given power at ``effect``; the expected pairs under it and 0."""
    beta = 1 - power
    res = None
    for k in range(40, 81):
        n_max = max(n_looks, math.ceil(n_fixed * k / 40))
        looks = [math.ceil(n_max * (i + 1) / n_looks) for i in range(n_looks)]
        res = expected(n_max, looks, abs(effect), discordance, abs(effect), alpha, beta)
        if res["power"] >= power:
            break
    null = expected(n_max, looks, abs(effect), discordance, 0.0, alpha, beta)
    return GroupPlan(n_max, looks, res["power"], res["mean_pairs"], null["mean_pairs"])


RULE = (
    "group-sequential two-sided test at alpha {alpha} (exact, conditional on the discordant pairs; alpha-spending "
    "{rho_eff:g}, Jennison & Turnbull ch. 7 and 12) at {looks} planned looks of {round}, with a non-binding futility "
    "boundary for a gain of {delta:.1f} pp (beta-spending {beta} x t^{rho_fut:g}), at most {most}"
)


class GroupRounds:
    """A group-sequential A/B as the verbs run it (the interface of :class:`ivra.eval.sequential.Rounds`): after
    each planned round the pairs so far (in their fixed order) are one look. The anytime-valid confidence sequence
    is kept beside it and shown, labelled, with every decision."""

    design = "group"

    def __init__(self, max_pairs: int, delta: float, n_rounds: int, alpha: float = 0.05):
        from ivra.eval.sequential import for_maximum

        if n_rounds < 2:
            raise ValueError(
                f"a group design needs at least 2 planned rounds (looks), got {n_rounds}: lower the round size "
                "or raise the maximum"
            )
        self.test = GroupSequential(max_pairs, delta, alpha)
        self.cs = for_maximum(max_pairs, alpha)
        self.delta, self.max_pairs, self.n_rounds, self.rounds = delta, max_pairs, n_rounds, 0
        self.decision = self._decision(None)

    def add(self, pairs: list[tuple[bool, bool]], last: bool = False):
        self.cs.extend(pairs[self.cs.n :])
        self.rounds += 1
        lk = self.test.look(self.cs.n, self.cs.discordant, self.cs.b_only, last=last)
        self.decision = self._decision(lk)
        return self.decision

    def _decision(self, lk: Look | None):
        from ivra.eval.sequential import Decision

        cs = self.cs
        common = dict(n=cs.n, interval=(cs.lower, cs.upper), estimate=cs.estimate, discordant=cs.discordant)
        if lk is None:
            return Decision(False, "continue", "no look yet", **common)
        counts = f"{lk.s} of {lk.m} discordant pairs favour ivra"
        if lk.upper > lk.m:
            bounds = "(too few discordant pairs for an effect at this look"
        else:
            bounds = f"(boundaries at this look: effect if >= {lk.upper} or <= {lk.lower}"
        bounds += f", futility if <= {lk.futility})" if lk.futility >= 0 else ", no futility boundary yet)"
        d = 100 * self.delta
        if lk.outcome == "better":
            return Decision(True, "effect", f"ivra better than baseline: {counts} {bounds}", **common)
        if lk.outcome == "worse":
            return Decision(True, "effect", f"ivra worse than baseline: {counts} {bounds}", **common)
        if lk.outcome == "futility":
            return Decision(True, "futility", f"no gain as large as {d:.1f} pp: {counts} {bounds}", **common)
        if lk.outcome == "inconclusive":
            return Decision(
                True,
                "inconclusive",
                f"the last planned look ({cs.n} pairs) crossed no boundary: {counts} {bounds}",
                **common,
            )
        return Decision(False, "continue", f"{counts} {bounds}", **common)

    def line(self) -> str:
        cs = self.cs
        return (
            f"round {self.rounds}/{self.n_rounds}: {cs.n} pairs, paired difference {100 * cs.estimate:+.1f} pp "
            f"(anytime-valid 95 % interval [{100 * cs.lower:+.1f}, {100 * cs.upper:+.1f}] pp); group-sequential "
            f"test: {self.decision.outcome}"
        )

    def record(self, round: str, most: str, spent: int, fixed: int) -> dict:
        t = self.test
        return {
            "design": "group",
            "rule": RULE.format(
                alpha=t.alpha,
                rho_eff=t.rho,
                looks=self.n_rounds,
                round=round,
                delta=100 * self.delta,
                beta=t.beta,
                rho_fut=t.rho_futility,
                most=most,
            ),
            "decision": self.decision.to_dict(),
            "rounds": self.rounds,
            "planned_rounds": self.n_rounds,
            "looks": [asdict(lk) for lk in t.looks],
            "alpha_spent": t.alpha_spent,
            "episodes_spent": spent,
            "fixed_design_episodes": fixed,
        }
