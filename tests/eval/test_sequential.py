"""The anytime-valid paired confidence sequence, the stopping rule, and the power planner against simulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from ivra.eval.power import PAPER_CLAIMS, independent_discordance, paired_pairs, plan, unpaired_per_arm
from ivra.eval.sequential import PairedCS, decide, run_sequence


def simulate_pairs(rng, n, p_a_only, p_b_only, p_both):
    """n pairs drawn from a 2x2 table: (A only, B only, both, neither)."""
    cells = rng.choice(4, size=n, p=[p_a_only, p_b_only, p_both, 1 - p_a_only - p_b_only - p_both])
    return [(c in (0, 2), c in (1, 2)) for c in cells]


def test_interval_covers_the_true_difference_at_every_time():
    """Anytime validity: over many sequences the interval, looked at every 10 pairs, misses the true
    difference in at most alpha of them (here with a margin for the simulation's own error)."""
    rng = np.random.default_rng(0)
    true = 0.10 - 0.05
    misses = 0
    runs = 200
    for _ in range(runs):
        cs = PairedCS(alpha=0.1)
        pairs = simulate_pairs(rng, 300, 0.05, 0.10, 0.4)
        for start in range(0, 300, 10):  # looked at every 10 pairs
            cs.extend(pairs[start : start + 10])
            if not cs.lower <= true <= cs.upper:
                misses += 1
                break
    assert misses / runs <= 0.1 + 0.05, misses


def test_interval_ends_are_exact_not_the_grids():
    """The ends are found by bisection between grid points: the capital at each end sits at the threshold."""
    import math

    rng = np.random.default_rng(5)
    cs = PairedCS().extend(simulate_pairs(rng, 3000, 0.03, 0.05, 0.4))
    threshold = math.log(1 / cs.alpha)
    for end in (cs.lower, cs.upper):
        m = (end + 1) / 2
        assert abs(cs._log_mix(m) - threshold) < 1e-3 or cs._log_mix(m) > threshold
        inward = m + 1e-6 if end == cs.lower else m - 1e-6
        assert cs._log_mix(inward) < threshold + 1e-3


def test_interval_shrinks_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    cs = PairedCS()
    widths = []
    for i, (a, b) in enumerate(simulate_pairs(rng, 2000, 0.05, 0.15, 0.3)):
        cs.update(a, b)
        if i in (99, 499, 1999):
            widths.append(cs.upper - cs.lower)
            assert cs.lower <= cs.estimate <= cs.upper
    assert widths[0] > widths[1] > widths[2]
    assert cs.lower > 0  # +10 pp over 2000 pairs is found


def test_zero_discordant_pairs_all_successes_all_failures():
    """Arms that always agree: the interval closes in on 0 and the rule stops for futility, never for an
    effect; the same whether every pair succeeds or every pair fails."""
    for outcome in (True, False):
        decision, cs = run_sequence(
            [(outcome, outcome)] * 3000, range(100, 3001, 100), delta=0.05, max_pairs=3000
        )
        assert cs.discordant == 0 and cs.estimate == 0
        assert decision.outcome == "futility" and decision.n < 3000, decision
        assert -0.05 < cs.lower <= 0 <= cs.upper < 0.05


def test_a_clear_effect_stops_at_the_first_round():
    pairs = [(False, True)] * 100
    decision, cs = run_sequence(pairs, [100, 200], delta=0.05, max_pairs=1000)
    assert decision.stop and decision.outcome == "effect" and decision.n == 100
    assert "ivra better than baseline" in decision.reason and cs.lower > 0
    worse, _ = run_sequence([(True, False)] * 100, [100], delta=0.05, max_pairs=1000)
    assert worse.outcome == "effect" and "ivra worse than baseline" in worse.reason


def test_inconclusive_at_the_maximum_and_continue_before_it():
    rng = np.random.default_rng(2)
    pairs = simulate_pairs(rng, 60, 0.2, 0.2, 0.3)
    decision, _ = run_sequence(pairs, [30, 60], delta=0.02, max_pairs=60)
    assert decision.outcome == "inconclusive" and decision.n == 60
    cs = PairedCS().extend(pairs[:30])
    assert decide(cs, 0.02, 60).outcome == "continue"


def test_a_resumed_run_reaches_the_same_decision_at_the_same_pair():
    """The decision is a function of the pairs in unit order and the round boundaries: replaying a prefix and
    then the rest (a resume) gives the same decision, at the same pair, as one uninterrupted run."""
    rng = np.random.default_rng(3)
    pairs = simulate_pairs(rng, 4000, 0.03, 0.09, 0.4)
    rounds = list(range(200, 4001, 200))
    once, _ = run_sequence(pairs, rounds, delta=0.02, max_pairs=4000)
    resumed, _ = run_sequence(pairs[:1000] + pairs[1000:], rounds, delta=0.02, max_pairs=4000)
    assert once == resumed and once.stop and once.n % 200 == 0


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        PairedCS(alpha=1.5)
    with pytest.raises(ValueError, match="delta"):
        decide(PairedCS(), delta=0, max_pairs=10)


def test_planner_matches_known_values_and_the_papers_claims():
    # the figures: roughly 8k per arm for FLOWER's claim, over 20k for OpenVLA's (unpaired)
    assert 7500 < unpaired_per_arm(0.963, 0.971) < 8200
    assert unpaired_per_arm(0.765, 0.776) > 20000
    # pairing with independent arms saves nothing; with agreeing arms a lot
    p = plan(0.45, 0.02)
    assert abs(p.paired_pairs - p.unpaired_per_arm) / p.unpaired_per_arm < 0.01
    assert paired_pairs(0.02, 0.06) < p.unpaired_per_arm / 5
    assert independent_discordance(0.5, 0.5) == 0.5
    assert set(PAPER_CLAIMS) == {"LLaRA on VIMA (12 % data)", "OpenVLA on LIBERO", "FLOWER on LIBERO"}
    with pytest.raises(ValueError, match="discordance"):
        paired_pairs(0.1, 0.05)


def test_planned_paired_design_has_its_power_in_simulation():
    """The planner's pair count, simulated: McNemar's exact test at alpha 0.05 rejects in about 80 % of runs
    (Connor's formula is a normal approximation; the exact test is a little conservative)."""
    rng = np.random.default_rng(4)
    delta, psi = 0.04, 0.12
    n = paired_pairs(delta, psi, 0.05, 0.8)
    p_b_only, p_a_only = (psi + delta) / 2, (psi - delta) / 2
    runs, rejected = 400, 0
    for _ in range(runs):
        cells = rng.multinomial(n, [p_a_only, p_b_only, 1 - psi])
        b, c = int(cells[0]), int(cells[1])
        if b + c and binomtest(b, b + c).pvalue < 0.05:
            rejected += 1
    assert 0.72 <= rejected / runs <= 0.88, (n, rejected / runs)


def test_futility_needs_the_whole_interval_inside_plus_minus_delta():
    """Futility says "no effect as large as delta": only an interval inside (-delta, +delta) stops for it; one that
    still reaches +delta or -delta (e.g. inside (-delta, 2 delta)) continues, or ends inconclusive at the maximum."""

    def outcome(lo, hi, n=100, max_pairs=1000):
        cs = PairedCS()
        cs.n, cs.lower, cs.upper = n, lo, hi
        return decide(cs, 0.05, max_pairs).outcome

    assert outcome(-0.04, 0.04) == "futility"
    assert outcome(-0.01, 0.08) == "continue"  # an effect of +5 pp is not ruled out
    assert outcome(-0.08, 0.01) == "continue"  # nor one of -5 pp
    assert outcome(-0.04, 0.05) == outcome(-0.05, 0.04) == "continue"  # the ends are excluded
    assert outcome(-0.01, 0.08, n=1000) == "inconclusive"
    # the same from real pairs: in every 40, 2 favour B and 1 favours A; after 400 pairs the interval lies inside
    # (-delta, 2 delta) but excludes neither 0 nor +delta
    pairs = ([(False, True)] * 2 + [(True, False)] + [(True, True)] * 18 + [(False, False)] * 19) * 10
    cs = PairedCS().extend(pairs)
    assert -0.05 < cs.lower < 0 < 0.05 < cs.upper < 0.10, (cs.lower, cs.upper)
    assert decide(cs, 0.05, 2000).outcome == "continue"
