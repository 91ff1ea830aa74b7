"""Statistics against hand-computed values."""

import math

import pytest

from ivra.eval.stats import mcnemar_exact, newcombe_paired_ci, paired_ab, tango_paired_ci, wilson


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(
    "k,n,expected",
    [
        (5, 10, (0.2366, 0.7634)),  # textbook values
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (43, 50, (0.7381, 0.9305)),
    ],
)
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)
    assert (lo, hi) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_empty():
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_mcnemar_exact_known_values():
    # b=1, c=9: p = 2 * P(X <= 1 | 10, 1/2) = 2 * 11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_newcombe_paired_ci_properties_and_hand_value():
    # a=both, b=arm1 only, c=arm2 only, d=neither
    a, b, c, d = 30, 9, 3, 8
    lo, hi = newcombe_paired_ci(a, b, c, d)
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson_by_hand(a + b, n)
    l2, u2 = _wilson_by_hand(a + c, n)
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    dl = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    du = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert (lo, hi) == pytest.approx((p1 - p2 - dl, p1 - p2 + du), abs=1e-9)
    assert lo < (b - c) / n < hi
    # swapping the arms mirrors the interval
    lo2, hi2 = newcombe_paired_ci(a, c, b, d)
    assert (lo2, hi2) == pytest.approx((-hi, -lo), abs=1e-12)
    # Bentur et al. airway data (a=1, b=1, c=7, d=12), the worked example of Fagerland, Lydersen & Laake (2014);
    # the value is the one we recall from that paper (0.036 to 0.502 for the reversed difference), not re-checked
    assert newcombe_paired_ci(1, 1, 7, 12) == pytest.approx((-0.5017, -0.0361), abs=1e-4)


def _tango_z_by_hand(b, c, n, d):
    # restricted MLE of p01 given p10 - p01 = d: root of 2n q^2 + (d(2n - b + c) - b - c) q - c d (1 - d) = 0
    A, B, C = 2 * n, d * (2 * n - b + c) - b - c, -c * d * (1 - d)
    q = (-B + math.sqrt(B * B - 4 * A * C)) / (2 * A)
    return (b - c - n * d) / math.sqrt(n * (2 * q + d * (1 - d)))


@pytest.mark.parametrize("b,c,n", [(9, 3, 50), (7, 1, 21), (1, 7, 21), (2, 0, 10), (5, 5, 40)])
def test_tango_interval_solves_the_score_equation(b, c, n):
    lo, hi = tango_paired_ci(b, c, n)
    z = 1.959963984540054
    assert lo < (b - c) / n < hi
    assert _tango_z_by_hand(b, c, n, lo) == pytest.approx(z, abs=1e-6)
    assert _tango_z_by_hand(b, c, n, hi) == pytest.approx(-z, abs=1e-6)
    assert tango_paired_ci(c, b, n) == pytest.approx((-hi, -lo), abs=1e-9)


def test_tango_no_discordant_pairs_and_boundaries():
    # 0 discordant of 20: Z(d) = -20 d / sqrt(20 d (1 - d)) = -z  ->  d = z^2 / (20 + z^2)
    z2 = 1.959963984540054**2
    lo, hi = tango_paired_ci(0, 0, 20)
    assert hi == pytest.approx(z2 / (20 + z2), abs=1e-9) and lo == pytest.approx(-hi, abs=1e-9)
    lo, hi = tango_paired_ci(10, 0, 10)  # all discordant one way: upper bound reaches 1
    assert hi == 1.0 and 0 < lo < 1


def test_paired_ab_counts_and_direction():
    base = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    ivra = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    r = paired_ab([bool(x) for x in base], [bool(x) for x in ivra])
    assert (r.n, r.k_a, r.k_b, r.both, r.a_only, r.b_only, r.neither) == (10, 3, 9, 2, 1, 7, 0)
    assert r.diff == pytest.approx(0.6)
    assert r.diff_ci == pytest.approx(tango_paired_ci(7, 1, 10))
    assert r.p_mcnemar == pytest.approx(mcnemar_exact(1, 7)) and r.p_mcnemar == pytest.approx(18 / 256)
    with pytest.raises(ValueError):
        paired_ab([True], [True, False])
