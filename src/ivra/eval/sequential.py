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
``l_i = sqrt(2 log(2 / alpha) / (s2_{i-1} i log(1 + i)))`` (``s2`` a running variance with a prior) or, tuned
for a planned number of pairs n (the paper's fixed-n tuning, ``horizon=n``), ``l_i = sqrt(2 log(2 / alpha) /
(s2_{i-1} n))`` (any bets fixed before pair i is seen keep the guarantee; the tuned ones make the interval
narrowest around n, which is what a run with a maximum needs: benchmarks/sequential_ab.md), are non-negative; under mean m their mixture ``(K+ + K-) / 2`` is a martingale with expectation 1, so by Ville's
inequality the set ``{m : max(K+, K-) / 2 < 1 / alpha}`` covers the true mean at *every* t simultaneously with
probability >= 1 - alpha. Monitoring after every pair, or every round, and stopping whenever the rule says so keeps
that guarantee (a repeated McNemar test does not). The set is computed on a grid of candidate means and the
running intersection over t is kept (still valid, never wider).

The rule (:func:`decide`): stop with an **effect** when the interval for D excludes 0 (its sign says which arm);
stop for **futility** (equivalence within +-delta) when it lies inside (-delta, +delta); else continue, up to the
run's maximum, where the decision is **inconclusive**.

This is ``--design anytime`` of the A/B verbs and the rule of ``ivra trials`` (an operator may look at any moment);
the verbs' default, ``--design group`` (:mod:`ivra.eval.groupseq`), is valid at planned rounds only and spends
fewer episodes (benchmarks/sequential_ab.md); :func:`make_rounds` builds either.
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
    horizon: int | None = (
        None  # tune the bets for this many pairs (the paper's fixed-n tuning); None: eq. (26)
    )
    n: int = 0
    discordant: int = 0
    b_only: int = 0  # pairs where only arm B succeeded
    lower: float = -1.0  # running intersection, on the D scale
    upper: float = 1.0
    _grid: np.ndarray = field(init=False, repr=False)
    _log_kp: np.ndarray = field(init=False, repr=False)
    _log_km: np.ndarray = field(init=False, repr=False)
    _sum: float = field(default=0.0, init=False, repr=False)
    _history: list = field(
        default_factory=list, init=False, repr=False
    )  # (x, bet) chunks: exact interval ends
    _sq: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.horizon is not None and self.horizon < 1:
            raise ValueError(f"horizon must be a number of pairs >= 1, got {self.horizon!r}")
        self._grid = np.linspace(0.0, 1.0, GRID + 2)[1:-1]
        self._log_kp = np.zeros(GRID)
        self._log_km = np.zeros(GRID)

    def update(self, success_a: bool, success_b: bool) -> None:
        """Add one pair (arm A's and arm B's outcome on the same unit) and intersect the interval."""
        self.extend([(success_a, success_b)])

    def extend(self, pairs: Iterable[tuple[bool, bool]], block: int = 512) -> PairedCS:
        """Add pairs in order (the bets are the same as one at a time) and intersect the interval once, at the
        end: a decision point. Intersecting at fewer times keeps the guarantee."""
        d = np.array([int(bool(b)) - int(bool(a)) for a, b in pairs], dtype=np.int64)
        for start in range(0, len(d), block):
            self._add(d[start : start + block])
        if len(d):
            self._intersect()
        return self

    def _add(self, d: np.ndarray) -> None:
        x = (d + 1) / 2
        i = self.n + 1 + np.arange(len(x))  # 1-based index of each pair
        sums = self._sum + np.cumsum(x)  # including pair i
        mu = (0.5 + sums) / (i + 1)  # the paper's running mean, including x_i
        sq = self._sq + np.concatenate([[0.0], np.cumsum((x - mu) ** 2)])
        var_prev = (0.25 + sq[:-1]) / i  # running variance of the pairs before i, prior 1/4 (predictable)
        scale = i * np.log1p(i) if self.horizon is None else np.full(len(x), float(self.horizon))
        bet = np.sqrt(2 * math.log(2 / self.alpha) / (var_prev * scale))[:, None]
        self._history.append((x, bet[:, 0]))
        m = self._grid[None, :]
        dx = x[:, None] - m
        self._log_kp += np.log1p(np.minimum(bet, C / m) * dx).sum(0)
        self._log_km += np.log1p(-np.minimum(bet, C / (1 - m)) * dx).sum(0)
        self.n += len(x)
        self._sum = float(sums[-1])
        self._sq = float(sq[-1])
        self.discordant += int(np.count_nonzero(d))
        self.b_only += int(np.count_nonzero(d > 0))

    def _intersect(self) -> None:
        m = self._grid
        log_mix = np.logaddexp(self._log_kp, self._log_km) - math.log(2)
        inside = m[log_mix < math.log(1 / self.alpha)]
        if inside.size == 0:  # the whole grid rejected: the interval collapses around the empirical mean
            lo = hi = 2 * (self._sum / self.n) - 1
        else:  # the exact ends, between the last grid point inside and the first outside, by bisection
            i, j = int(np.searchsorted(m, inside[0])), int(np.searchsorted(m, inside[-1]))
            low_m = self._boundary(m[i - 1] if i > 0 else 0.0, m[i])
            high_m = self._boundary(m[j + 1] if j + 1 < len(m) else 1.0, m[j])
            lo, hi = 2 * low_m - 1, 2 * high_m - 1
        self.lower, self.upper = max(self.lower, lo), min(self.upper, hi)
        if self.lower > self.upper:  # rounding at the grid's resolution; keep a valid (point) interval
            self.lower = self.upper = (self.lower + self.upper) / 2

    def _log_mix(self, m: float) -> float:
        """log of the hedged capital at one candidate mean, from the recorded pairs and bets."""
        if m <= 0.0 or m >= 1.0:
            return math.inf
        x = np.concatenate([h[0] for h in self._history])
        bet = np.concatenate([h[1] for h in self._history])
        if len(self._history) > 1:
            self._history = [(x, bet)]
        dx = x - m
        kp = np.log1p(np.minimum(bet, C / m) * dx).sum()
        km = np.log1p(-np.minimum(bet, C / (1 - m)) * dx).sum()
        return float(np.logaddexp(kp, km) - math.log(2))

    def _boundary(self, outside: float, inside: float, steps: int = 30) -> float:
        """The end of the confidence set between a candidate mean outside it and one inside (bisection); the
        returned end is on the outside of the true one, so the interval is never narrower than the math."""
        threshold = math.log(1 / self.alpha)
        for _ in range(steps):
            mid = (outside + inside) / 2
            if self._log_mix(mid) < threshold:
                inside = mid
            else:
                outside = mid
        return outside

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


#: the A/B verbs tune the bets for this share of their maximum (the design simulated in benchmarks/sequential_ab.py)
HORIZON_SHARE = 2 / 3


def for_maximum(max_pairs: int, alpha: float = 0.05) -> PairedCS:
    """The confidence sequence an A/B verb uses for a run of at most ``max_pairs`` pairs."""
    return PairedCS(alpha, horizon=max(1, round(HORIZON_SHARE * max_pairs)))


RULE = (
    "anytime-valid 95 % confidence sequence for the paired difference (Waudby-Smith & Ramdas 2023, hedged "
    "capital), checked after every round of {round}; stop when it excludes 0 (effect) or lies inside +-{delta:.1f} "
    "pp (futility), at most {most}"
)


class Rounds:
    """An anytime-valid sequential A/B as the verbs run it: after each round, the pairs so far (in their fixed order, earlier
    rounds first) extend the confidence sequence and the rule decides; the last round may end inconclusive."""

    design = "anytime"

    def __init__(self, max_pairs: int, delta: float, alpha: float = 0.05):
        self.cs = for_maximum(max_pairs, alpha)
        self.delta, self.max_pairs, self.rounds = delta, max_pairs, 0
        self.decision = decide(self.cs, delta, max_pairs)

    def add(self, pairs: list[tuple[bool, bool]], last: bool = False) -> Decision:
        """``pairs``: every pair finished so far; ``last``: no round follows (an undecided run is inconclusive)."""
        self.cs.extend(pairs[self.cs.n :])
        self.rounds += 1
        self.decision = decide(self.cs, self.delta, self.cs.n if last else self.max_pairs)
        return self.decision

    def line(self) -> str:
        cs = self.cs
        return (
            f"round {self.rounds}: {cs.n} pairs, paired difference {100 * cs.estimate:+.1f} pp, anytime-valid 95 % "
            f"interval [{100 * cs.lower:+.1f}, {100 * cs.upper:+.1f}] pp: {self.decision.outcome}"
        )

    def record(self, round: str, most: str, spent: int, fixed: int) -> dict:
        """What a run's results keep: the rule, the decision, rounds, episodes spent and the fixed design's."""
        return {
            "design": "anytime",
            "rule": RULE.format(round=round, delta=100 * self.delta, most=most),
            "decision": self.decision.to_dict(),
            "rounds": self.rounds,
            "episodes_spent": spent,
            "fixed_design_episodes": fixed,
        }


#: the A/B verbs' designs; the default chosen from benchmarks/sequential_ab.md
DESIGNS = ("group", "anytime")
DEFAULT_DESIGN = "group"


def make_rounds(design: str, max_pairs: int, delta: float, n_rounds: int, alpha: float = 0.05):
    """The sequential A/B of ``design`` (``group``: :class:`ivra.eval.groupseq.GroupRounds` at ``n_rounds`` planned
    looks; ``anytime``: :class:`Rounds`), with ``add``, ``line``, ``record`` and ``decision``."""
    if design == "anytime":
        return Rounds(max_pairs, delta, alpha)
    if design == "group":
        from ivra.eval.groupseq import GroupRounds

        return GroupRounds(max_pairs, delta, n_rounds, alpha)
    raise ValueError(f"unknown design {design!r}; expected one of: {', '.join(DESIGNS)}")


def resume_conflict(previous: dict | None, settings: dict) -> str | None:
    """Why a run folder whose last sequential record is ``previous`` cannot be resumed with ``settings``
    (``{"design", "round", "delta"}``): its journaled rounds would be judged by another rule. None when it can."""
    if not previous:
        return None
    before = previous.get("settings") or {"design": previous.get("design", "anytime")}
    changed = [
        f"--{k} {before[k]} -> {settings[k]}" for k in before if k in settings and before[k] != settings[k]
    ]
    if not changed:
        return None
    return (
        f"it holds a sequential A/B run with other settings ({', '.join(changed)}); rerun with the original "
        "options to resume it (it reaches the same decision), or pass another --out"
    )


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
    seq = Rounds(max_pairs, delta, alpha)
    for bound in rounds:
        bound = min(bound, len(pairs))
        seq.add(pairs[:bound], last=bound >= max_pairs)
        if seq.decision.stop or bound == len(pairs):
            break
    return seq.decision, seq.cs
