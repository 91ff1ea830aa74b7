"""Success-rate statistics for closed-loop evaluations.

* :func:`wilson` -- Wilson score 95 % interval of a binomial proportion (``scipy.stats.binomtest``).
* :func:`mcnemar_exact` -- exact two-sided McNemar p-value: a binomial test of the discordant pairs
  (``b`` vs ``c``, p = 0.5).
* :func:`tango_paired_ci` -- 95 % CI of a *paired* difference of proportions by Tango's (1998) asymptotic
  score method: the set of differences D for which the score statistic
  ``Z(D) = (b - c - n D) / sqrt(n (2 q(D) + D (1 - D)))`` satisfies ``|Z| <= z``, where ``q(D)`` is the
  maximum-likelihood estimate of the "arm-2-only" cell under the constraint ``p10 - p01 = D`` (root of
  ``2n q^2 + (D (2n - b + c) - b - c) q - c D (1 - D) = 0``). It stays inside [-1, 1], has good coverage for
  small n, and -- unlike Newcombe's method 10 -- does not collapse to a zero-width interval when there are
  no discordant pairs. This is the interval :func:`paired_ab` reports.
* :func:`newcombe_paired_ci` -- Newcombe (1998) "method 10" hybrid score interval, for comparison.
* :func:`paired_ab` -- everything above for two arms evaluated on the same units.

All intervals are at 95 % (``confidence`` can be changed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy.optimize import brentq
from scipy.stats import binomtest, norm


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n``; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return (math.nan, math.nan)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when there are none)."""
    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def newcombe_paired_ci(a: int, b: int, c: int, d: int, confidence: float = 0.95) -> tuple[float, float]:
    """CI of ``p1 - p2`` for a paired 2x2 table (Newcombe 1998, method 10).

    ``a``: both arms succeed, ``b``: arm 1 succeeds and arm 2 fails, ``c``: arm 1 fails and arm 2
    succeeds, ``d``: both fail. ``p1 = (a+b)/n``, ``p2 = (a+c)/n``, difference ``(b-c)/n``.
    """
    n = a + b + c + d
    if n == 0:
        return (math.nan, math.nan)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, diff - dl), min(1.0, diff + du))


def tango_score(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: p10 - p01 = ``delta`` (b = arm-1-only, c = arm-2-only pairs)."""
    num = b - c - n * delta
    if num == 0:
        return 0.0
    A = 2 * n  # noqa: N806 -- the quadratic's coefficients
    B = delta * (2 * n - b + c) - b - c  # noqa: N806
    C = -c * delta * (1 - delta)  # noqa: N806
    q = (-B + math.sqrt(max(0.0, B * B - 4 * A * C))) / (2 * A)
    var = n * (2 * q + delta * (1 - delta))
    if var <= 0:
        return math.copysign(math.inf, num)
    return num / math.sqrt(var)


def tango_paired_ci(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Tango (1998) score CI of ``p1 - p2 = (b - c) / n`` from the discordant counts of ``n`` pairs."""
    if n <= 0:
        return (math.nan, math.nan)
    z = float(norm.ppf(0.5 + confidence / 2))
    est = (b - c) / n
    eps = 1e-12

    def solve(target: float, lo: float, hi: float) -> float:
        f = lambda d: tango_score(b, c, n, d) - target  # noqa: E731
        flo, fhi = f(lo), f(hi)
        if flo * fhi > 0:  # no crossing inside: the interval reaches the boundary
            return lo if target > 0 else hi
        return float(brentq(f, lo, hi, xtol=1e-12))

    lower = solve(z, -1 + eps, est) if est > -1 + eps else -1.0
    upper = solve(-z, est, 1 - eps) if est < 1 - eps else 1.0
    return (max(-1.0, lower), min(1.0, upper))


@dataclass
class PairedAB:
    """Paired comparison of arm B (treatment, e.g. IVRA) against arm A (baseline) on the same units."""

    n: int
    k_a: int
    k_b: int
    both: int  # both succeed
    a_only: int  # A succeeds, B fails
    b_only: int  # B succeeds, A fails
    neither: int
    rate_a: float
    rate_b: float
    diff: float  # rate_b - rate_a
    diff_ci: tuple[float, float]  # Tango's score interval
    p_mcnemar: float  # exact, two-sided

    def as_dict(self) -> dict:
        return asdict(self)


def paired_ab(success_a: Sequence[bool], success_b: Sequence[bool], confidence: float = 0.95) -> PairedAB:
    """Compare two arms unit by unit (``success_a[i]`` and ``success_b[i]`` are the same unit)."""
    if len(success_a) != len(success_b):
        raise ValueError("paired arms need the same units")
    n = len(success_a)
    both = sum(1 for x, y in zip(success_a, success_b) if x and y)
    a_only = sum(1 for x, y in zip(success_a, success_b) if x and not y)
    b_only = sum(1 for x, y in zip(success_a, success_b) if y and not x)
    neither = n - both - a_only - b_only
    k_a, k_b = both + a_only, both + b_only
    rate_a = k_a / n if n else math.nan
    rate_b = k_b / n if n else math.nan
    # the CI is of p1 - p2 with arm 1 = B, so that it is the CI of rate_b - rate_a
    ci = tango_paired_ci(b_only, a_only, n, confidence)
    return PairedAB(
        n=n,
        k_a=k_a,
        k_b=k_b,
        both=both,
        a_only=a_only,
        b_only=b_only,
        neither=neither,
        rate_a=rate_a,
        rate_b=rate_b,
        diff=(rate_b - rate_a) if n else math.nan,
        diff_ci=ci,
        p_mcnemar=mcnemar_exact(a_only, b_only),
    )
