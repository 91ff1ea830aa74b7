"""The group-sequential paired design (ivra.eval.groupseq): exact type-I error at the planned looks, the futility
boundary, resumes, and the verbs' factory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from ivra.eval.groupseq import (
    GroupRounds,
    GroupSequential,
    Look,
    boundaries,
    expected,
    plan_group,
    psi_upper,
)
from ivra.eval.power import paired_pairs
from ivra.eval.sequential import PairedCS, decide, make_rounds, run_sequence


def test_type_one_error_is_exact_by_enumeration():
    """Every one of the 2^20 equally likely B-only/A-only sequences of 20 discordant pairs (H0), checked against the
    boundaries at looks with 6, 12 and 20 discordant pairs: the share that crosses an efficacy boundary equals the
    alpha the design says it spent, and is at most alpha. Independent of the recursion: brute force."""
    design = GroupSequential(max_pairs=300, delta=0.05, alpha=0.2)
    looks = boundaries(design, [(100, 6), (200, 12), (300, 20)])
    bits = (np.arange(2**20)[:, None] >> np.arange(20)[None, :]) & 1
    crossed = np.zeros(len(bits), bool)
    for lk in looks:
        s = bits[:, : lk.m].sum(1)
        crossed |= (s >= lk.upper) | (s <= lk.lower)
    share = crossed.mean()
    g = GroupSequential(300, 0.05, alpha=0.2)
    for k, (n, m) in enumerate([(100, 6), (200, 12), (300, 20)]):
        g.look(n, m, m // 2, last=k == 2)
        g.looks[-1] = Look(*list(vars(g.looks[-1]).values())[:-1], "continue")
    assert share <= 0.2
    assert share == pytest.approx(g.alpha_spent, abs=1e-12)
    assert share > 0.1  # the exact boundaries spend most of alpha (not a trivially conservative test)


def test_type_one_error_with_random_discordance_is_controlled():
    """Under H0 with the discordant counts random (2000 simulated runs of 10 looks), the design rejects in at most
    alpha of the runs, up to the simulation's error."""
    from ivra.eval.groupseq import simulate

    rng = np.random.default_rng(0)
    design = GroupSequential(max_pairs=2000, delta=0.03)
    out, _ = simulate(design, [0.04, 0.04, 0.5, 0.42], list(range(200, 2001, 200)), rng, 2000)
    rate = np.mean(np.abs(out) == 1)
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 2000), rate


def test_futility_boundary_at_a_single_look_is_the_binomial_quantile():
    """One look (t = 1) with 1000 pairs, 100 discordant: under a gain of 2 pp a discordant pair is B-only with
    p1 = 0.5 + 0.02 / (2 psi), psi the Wilson 90 % upper bound of 100 / 1000 (0.1127), and the futility boundary
    is the largest f with P(Bin(100, p1) <= f) <= beta = 0.2; the efficacy boundary the smallest u with
    P(Bin(100, 1/2) >= u) <= 0.025."""
    psi = psi_upper(100, 1000)
    z = 1.2816  # the Wilson bound solves (p_hat - p)^2 = z^2 p (1 - p) / n, above p_hat
    assert (0.1 - psi) ** 2 == pytest.approx(z * z * psi * (1 - psi) / 1000) and psi > 0.1
    g = GroupSequential(max_pairs=1000, delta=0.02)
    lk = g.look(1000, 100, 50, last=True)
    f = max(k for k in range(101) if binom.cdf(k, 100, 0.5 + 0.02 / (2 * psi)) <= 0.2)
    u = min(k for k in range(51, 101) if binom.sf(k - 1, 100, 0.5) <= 0.025)
    assert (lk.futility, lk.upper, lk.lower) == (f, u, 100 - u)
    assert lk.outcome == "futility"  # 50 of 100 <= f


def test_futility_never_when_the_data_are_consistent_with_a_gain_of_delta():
    """Over every B-only count at a look, futility is declared only where the observed gain is below delta; and
    the counts the alternative makes likely (its median) never stop for futility."""
    for n, m, delta in ((400, 40, 0.03), (1000, 60, 0.02), (2000, 150, 0.05)):
        for s in range(m + 1):
            g = GroupSequential(max_pairs=4 * n, delta=delta)
            lk = g.look(n, m, s)
            if lk.outcome == "futility":
                assert (2 * s - m) / n < delta, (n, m, s, lk)
            assert (lk.outcome == "futility") == (lk.lower < s <= lk.futility), (n, m, s, lk)
            assert (lk.outcome == "better") == (s >= lk.upper) and (lk.outcome == "worse") == (s <= lk.lower)
        p1 = 0.5 + delta * n / (2 * m)
        median = int(binom.median(m, min(p1, 1)))
        assert GroupSequential(4 * n, delta).look(n, m, median).outcome != "futility"


def test_anytime_futility_needs_the_interval_inside_plus_minus_delta():
    """The anytime rule: futility only when the whole interval lies inside (-delta, +delta); an interval that
    reaches above +delta (or below -delta) is not futility."""
    cs = PairedCS()
    cs.n = 500
    for lo, hi, expect in ((-0.01, 0.03, "continue"), (-0.03, 0.01, "continue"), (-0.015, 0.015, "futility")):
        cs.lower, cs.upper = lo, hi
        assert decide(cs, 0.02, 1000).outcome == expect, (lo, hi)


def test_a_clear_effect_stops_and_a_harm_stops_too():
    g = GroupSequential(1000, 0.02)
    assert g.look(100, 30, 28).outcome == "better"
    assert GroupSequential(1000, 0.02).look(100, 30, 2).outcome == "worse"
    assert GroupSequential(1000, 0.02).look(100, 30, 16).outcome == "continue"
    with pytest.raises(ValueError, match="stopped"):
        g.look(200, 40, 30)


def test_group_rounds_resume_to_the_same_decision_and_record_the_looks():
    """The verbs' rounds: replaying the same pairs through the same planned rounds (a resume) gives the same
    decision at the same look, and the record holds the design and every look's boundaries."""
    rng = np.random.default_rng(3)
    idx = rng.choice(4, size=3000, p=[0.02, 0.06, 0.5, 0.42])
    pairs = [(i in (0, 2), i in (1, 2)) for i in idx]

    def run(pairs):
        seq = make_rounds("group", 3000, 0.02, n_rounds=10)
        for bound in range(300, 3001, 300):
            seq.add(pairs[:bound], last=bound == 3000)
            if seq.decision.stop:
                break
        return seq

    once, resumed = run(pairs), run(pairs[:900] + pairs[900:])
    assert once.decision == resumed.decision and once.decision.stop
    rec = once.record("300 pairs", "3000 pairs", 2 * once.cs.n, 6000)
    assert rec["design"] == "group" and len(rec["looks"]) == once.rounds
    assert rec["looks"][-1]["outcome"] != "continue"
    assert all(lk["outcome"] == "continue" for lk in rec["looks"][:-1])
    assert "anytime-valid" in once.line() and "group-sequential" in once.line()


def test_factory_refuses_a_bad_design_and_a_single_round():
    with pytest.raises(ValueError, match="bogus"):
        make_rounds("bogus", 100, 0.02, 2)
    with pytest.raises(ValueError, match="at least 2 planned rounds"):
        make_rounds("group", 100, 0.02, 1)
    assert make_rounds("anytime", 100, 0.02, 1).design == "anytime"
    assert isinstance(make_rounds("group", 100, 0.02, 2), GroupRounds)


def test_planned_design_has_its_power_and_saves_pairs():
    """The sized group design reaches the fixed design's power at its effect with a maximum at most 1.25x the
    fixed size, and expects fewer pairs than the fixed design under the effect and under the null."""
    n_fixed = paired_pairs(0.04, 0.12)
    plan = plan_group(n_fixed, 0.04, 0.12)
    assert plan.power >= 0.8 and plan.max_pairs <= 1.25 * n_fixed
    assert plan.mean_pairs_alternative < 0.8 * n_fixed and plan.mean_pairs_null < 0.7 * n_fixed
    # and expected() agrees with a simulation of the same design at fixed discordant counts
    res = expected(plan.max_pairs, plan.looks, 0.04, 0.12, 0.04)
    assert res["power"] == pytest.approx(plan.power)


def test_run_sequence_anytime_unchanged():
    decision, _ = run_sequence([(False, True)] * 100, [100], delta=0.05, max_pairs=1000)
    assert decision.outcome == "effect"


@pytest.mark.parametrize("n_rounds", [2, 5])
def test_zero_discordant_pairs_stop_for_futility_not_effect(n_rounds):
    seq = make_rounds("group", 1000, 0.05, n_rounds)
    step = 1000 // n_rounds
    for bound, _ in zip(itertools.count(step, step), range(n_rounds)):
        seq.add([(True, True)] * bound, last=bound >= 1000)
        if seq.decision.stop:
            break
    assert seq.decision.outcome == "futility", seq.decision  # no gain of 5 pp without a single B-only pair
    assert seq.decision.n < 1000
