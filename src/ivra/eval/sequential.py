"""Anytime-valid paired A/B: a confidence sequence for the paired success difference, and the stopping rule.

The math is Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B 2023,
arXiv 2010.09686), the *hedged capital* confidence sequence (their section 4, Theorem 3) with the predictable
plug-in bets of their eq. (26) and the truncation c = 1/2. No maintained Python package implements it for our
versions (``confseq`` 0.0.11 is a 2023 source build; ``expectation`` is at 0.0.2 on PyPI), so it is written here.

A pair i (the same work unit under both arms) gives ``d_i = y_B - y_A`` in {-1, 0, 1}; ``x_i = (d_i + 1) / 2`` lies
in [0, 1] with mean ``(D + 1) / 2``, D the paired difference of success rates. For every candidate mean m the two
capital processes

    K+_t(m) = prod_i (1 + l+_i(m) (x_i - m)),    K-_t(m) = prod_i (1 - l-_i(m) (x_i - m)),

with predictable bets ``l+_i(m) = min(|l_i|, c / m)``, ``l-_i(m) = min(|l_i|, c / (1 - m))`` and
``l_i = sqrt(2 log(2 / alpha) / (s2_{i-1} i log(1 + i)))`` (``s2`` a running variance with a prior), are
non-negative; under mean m their mixture ``(K+ + K-) / 2`` is a martingale with expectation 1, so by Ville's
inequality the set ``{m : max(K+, K-) / 2 < 1 / alpha}`` covers the true mean at *every* t simultaneously with
probability >= 1 - alpha. Monitoring after every pair, or every round, and stopping whenever the rule says so keeps
that guarantee (a repeated McNemar test does not). The set is computed on a grid of candidate means and the
running intersection over t is kept (still valid, never wider).

The rule (:func:`decide`): stop with an **effect** when the interval for D excludes 0 (its sign says which arm);
stop for **futility** (equivalence within +-delta) when it lies inside (-delta, +delta); else continue, up to the
run's maximum, where the decision is **inconclusive**.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

GRID = 2001  # candidate means on (0, 1): the interval for D has a resolution of 0.001
C = 0.5  # truncation of the bets (the paper's c)


@dataclass
class PairedCS:
    """Confidence sequence for D = rate(B) - rate(A) from paired outcomes, updated one pair at a time."""

    alpha: float = 0.05
    n: int = 0
    discordant: int = 0
    b_only: int = 0  # pairs where only arm B succeeded
    lower: float = -1.0  # running intersection, on the D scale
    upper: float = 1.0
    _grid: np.ndarray = field(init=False, repr=False)
    _log_kp: np.ndarray = field(init=False, repr=False)
    _log_km: np.ndarray = field(init=False, repr=False)
    _sum: float = field(default=0.0, init=False, repr=False)
    _sq: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        self._grid = np.linspace(0.0, 1.0, GRID + 2)[1:-1]
        self._log_kp = np.zeros(GRID)
        self._log_km = np.zeros(GRID)

    def update(self, success_a: bool, success_b: bool) -> None:
        """Add one pair (arm A's and arm B's outcome on the same unit)."""
        d = int(bool(success_b)) - int(bool(success_a))
        x = (d + 1) / 2
        i = self.n + 1
        var_prev = (0.25 + self._sq) / i  # running variance of the past pairs, with the paper's prior 1/4
        bet = math.sqrt(2 * math.log(2 / self.alpha) / (var_prev * i * math.log(1 + i)))
        m = self._grid
        lp = np.minimum(bet, C / m)
        lm = np.minimum(bet, C / (1 - m))
        self._log_kp += np.log1p(lp * (x - m))
        self._log_km += np.log1p(-lm * (x - m))
        self.n = i
        self._sum += x
        self._sq += (x - (0.5 + self._sum) / (i + 1)) ** 2  # (x_i - mu_i)^2, mu_i including x_i (eq. 26)
        if d:
            self.discordant += 1
            self.b_only += d > 0
        log_mix = np.logaddexp(self._log_kp, self._log_km) - math.log(2)
        inside = m[log_mix < math.log(1 / self.alpha)]
        if inside.size == 0:  # the whole grid rejected: the interval collapses around the empirical mean
            lo = hi = 2 * (self._sum / self.n) - 1
        else:
            lo, hi = 2 * float(inside[0]) - 1, 2 * float(inside[-1]) - 1
        self.lower, self.upper = max(self.lower, lo), min(self.upper, hi)
        if self.lower > self.upper:  # rounding at the grid's resolution; keep a valid (point) interval
            self.lower = self.upper = (self.lower + self.upper) / 2

    def extend(self, pairs: Iterable[tuple[bool, bool]]) -> PairedCS:
        for a, b in pairs:
            self.update(a, b)
        return self

    @property
    def estimate(self) -> float:
        """The observed paired difference (b_only - a_only) / n."""
        return (2 * self.b_only - self.discordant) / self.n if self.n else 0.0


@dataclass(frozen=True)
class Decision:
    """What the rule says after ``n`` pairs."""

    stop: bool
    outcome: str  # effect | futility | continue | inconclusive
    reason: str
    n: int
    interval: tuple[float, float]
    estimate: float
    discordant: int

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    cs: PairedCS, delta: float, max_pairs: int, arm_b: str = "ivra", arm_a: str = "baseline"
) -> Decision:
    """The stopping rule on the current confidence sequence (see the module docstring)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    lo, hi = cs.lower, cs.upper
    common = dict(n=cs.n, interval=(lo, hi), estimate=cs.estimate, discordant=cs.discordant)
    ci = f"[{100 * lo:+.1f}, {100 * hi:+.1f}] pp"
    if cs.n and lo > 0:
        return Decision(
            True, "effect", f"{arm_b} better than {arm_a}: the interval {ci} excludes 0", **common
        )
    if cs.n and hi < 0:
        return Decision(True, "effect", f"{arm_b} worse than {arm_a}: the interval {ci} excludes 0", **common)
    if cs.n and -delta < lo and hi < delta:
        return Decision(
            True,
            "futility",
            f"no effect as large as {100 * delta:.1f} pp: the interval {ci} lies inside +-{100 * delta:.1f} pp",
            **common,
        )
    if cs.n >= max_pairs:
        return Decision(
            True,
            "inconclusive",
            f"the maximum of {max_pairs} pairs is reached; the interval {ci} neither excludes 0 nor lies inside "
            f"+-{100 * delta:.1f} pp",
            **common,
        )
    return Decision(False, "continue", f"the interval {ci} decides nothing yet", **common)


def run_sequence(
    pairs: Iterable[tuple[bool, bool]],
    rounds: Iterable[int],
    delta: float,
    max_pairs: int,
    alpha: float = 0.05,
) -> tuple[Decision, PairedCS]:
    """Replay pairs in their fixed order, deciding at each round boundary (cumulative pair counts): the decision
    a run reaches, and where, depends only on the pairs and the boundaries, so a resumed run reaches the same."""
    pairs = list(pairs)
    cs = PairedCS(alpha)
    decision = decide(cs, delta, max_pairs)
    done = 0
    for bound in rounds:
        bound = min(bound, len(pairs))
        cs.extend(pairs[done:bound])
        done = bound
        decision = decide(cs, delta, max_pairs)
        if decision.stop or done == len(pairs):
            break
    return decision, cs
