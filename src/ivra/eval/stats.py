"""Success-rate statistics for closed-loop evaluations.

* :func:`wilson` -- Wilson score 95 % interval of a binomial proportion (``scipy.stats.binomtest``).
* :func:`mcnemar_exact` -- exact two-sided McNemar p-value: a binomial test of the discordant pairs
  (``b`` vs ``c``, p = 0.5).
* :func:`newcombe_paired_ci` -- 95 % CI of a *paired* difference of proportions, Newcombe (1998)
  "method 10": the hybrid score interval built from the two marginal Wilson intervals and the phi
  correlation of the 2x2 table (no continuity correction). It stays inside [-1, 1], is well-behaved at
  0 and n, and is the standard recommended interval for paired binary data.
* :func:`paired_ab` -- everything above for two arms evaluated on the same units.

All intervals are at 95 % (``confidence`` can be changed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy.stats import binomtest


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
    diff_ci: tuple[float, float]  # Newcombe method 10
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
    # newcombe_paired_ci gives p1 - p2; put B first so that the CI is of rate_b - rate_a
    ci = newcombe_paired_ci(both, b_only, a_only, neither, confidence)
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
