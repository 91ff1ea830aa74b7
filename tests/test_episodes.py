"""The chunk contract and the episode runner: queues, per-episode seeds, lockstep batches equal to one by one."""

import numpy as np
import pytest

from ivra.episodes import EpisodeRunner, chunk_seed
from ivra.policies.base import SingleStep, predict_with_arms
from ivra.policies.registry import build_policy, describe
from ivra.policies.sim import SimLatencyPolicy


def _obs(k):
    return {"image": np.full((8, 8, 3), 10 * k, np.uint8)}


def test_chunk_seed_is_a_function_of_episode_and_index():
    seeds = {chunk_seed(e, k) for e in range(50) for k in range(20)}
    assert len(seeds) == 1000  # distinct pairs, distinct seeds
    assert chunk_seed(7, 3) == chunk_seed(7, 3) and 0 <= chunk_seed(-1, 0) < 2**63
    with pytest.raises(ValueError, match="chunk index"):
        chunk_seed(0, -1)


def test_runner_executes_the_chunk_prefix_and_batches_only_empty_queues():
    pol = SimLatencyPolicy(0, 0, chunk=5, execute=2)
    runner = EpisodeRunner(pol)
    assert (runner.chunk_length, runner.execute) == (5, 2)
    eps = [runner.start(seed=s) for s in (0, 1)]
    obs, text = [_obs(1), _obs(2)], ["a", "b"]
    got = [runner.step(eps, obs, text) for _ in range(4)]
    assert pol.batch_sizes == [2, 2]  # a call at steps 0 and 2 only, both episodes in it
    for i, ep in enumerate(eps):
        want0 = SimLatencyPolicy.expected_chunk(obs[i], text[i], seed=chunk_seed(ep.seed, 0), chunk=5)
        want1 = SimLatencyPolicy.expected_chunk(obs[i], text[i], seed=chunk_seed(ep.seed, 1), chunk=5)
        np.testing.assert_array_equal([g[i] for g in got], [want0[0], want0[1], want1[0], want1[1]])
        assert (ep.chunks, ep.steps) == (2, 4)
    # an episode that started later joins the batch only when its own queue is empty
    late = runner.start(seed=9)
    runner.step([eps[0], late], obs, text)
    assert pol.batch_sizes[-1] == 2 and late.chunks == 1
    runner.step([eps[0], late], obs, text)
    assert pol.batch_sizes[-1] == 2  # unchanged: both queues still held an action
    with pytest.raises(ValueError, match="execute must be in 1..5"):
        EpisodeRunner(pol, execute=6)


def test_lockstep_episodes_equal_one_at_a_time_with_mixed_arms():
    arm = {"layer": 1, "lam": 0.5}
    pol = SimLatencyPolicy(0, 0, chunk=4, execute=3)

    def run(groups):
        runner, out = EpisodeRunner(pol), {}
        for group in groups:
            eps = [runner.start(seed=s, ivra=arm if s % 2 else None) for s in group]
            acts = [runner.step(eps, [_obs(s) for s in group], [f"t{s}" for s in group]) for _ in range(7)]
            for j, s in enumerate(group):
                out[s] = np.stack([a[j] for a in acts])
        return out

    together, alone = run([[0, 1, 2, 3]]), run([[0], [1], [2], [3]])
    for s in range(4):
        np.testing.assert_array_equal(together[s], alone[s])
    assert not np.array_equal(together[0], together[2])  # the seeds reach the policy
    assert together[1][0, 0] - together[0][0, 0] != 0  # so do the arms


class _Stateless(SingleStep):
    name = "no-arms"

    def act(self, observations, instructions):
        return np.zeros((len(observations), 3))


def test_predict_with_arms_checks_shapes_and_settings():
    with pytest.raises(ValueError, match="cannot take IVRA settings"):
        predict_with_arms(_Stateless(), [_obs(0)], ["a"], [0], [{"layer": 0, "lam": 0.1}])
    assert predict_with_arms(_Stateless(), [_obs(0)] * 2, ["a"] * 2, None, [None, None]).shape == (2, 1, 3)

    class Bad(_Stateless):
        def predict(self, observations, instructions, seeds=None, ivra=None):
            return np.zeros((len(observations), 3))  # (B, D): not a chunk

    with pytest.raises(ValueError, match=r"expected \(1, 1, action_dim\)"):
        predict_with_arms(Bad(), [_obs(0)], ["a"])
    with pytest.raises(ValueError, match="seeds has 1 entries for a batch of 2"):
        predict_with_arms(_Stateless(), [_obs(0)] * 2, ["a"] * 2, [0])


def test_grouped_arms_come_back_in_row_order():
    """A policy without per-row arms gets one sub-batch per setting (first-seen order: arm rows 0 and 2, then the
    baseline's row 1); each row's answer goes back to its own row, as if the row had been predicted alone."""
    arm = {"layer": 1, "lam": 0.5}

    class Grouped(SimLatencyPolicy):
        per_sample_ivra = False  # the sub-batch path of predict_with_arms

    pol = Grouped(0, 0, chunk=3)
    obs, text, seeds, arms = [_obs(k) for k in (1, 2, 3)], ["a", "bb", "ccc"], [4, 5, 6], [arm, None, arm]
    got = predict_with_arms(pol, obs, text, seeds, arms)
    assert pol.batch_sizes == [2, 1]  # two sub-batches: the arm's rows, then the baseline's
    for i in range(3):
        want = SimLatencyPolicy.expected_chunk(obs[i], text[i], ivra=arms[i], seed=seeds[i], chunk=3)
        np.testing.assert_array_equal(got[i], want, err_msg=f"row {i}")


def test_registry_names():
    assert describe(build_policy("zero")) == {"policy": "zero", "chunk_length": 1, "execute_steps": 1}
    assert describe(build_policy("sim:chunk=50,execute=5,fixed_ms=0")) == {
        "policy": "sim",
        "chunk_length": 50,
        "execute_steps": 5,
    }
    assert type(build_policy("ivra.policies.zero:ZeroPolicy")).__name__ == "ZeroPolicy"
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        build_policy("nope")


def test_grouped_arms_restore_the_policys_own_setting():
    """A policy without per-row arms runs one sub-batch per setting through set_ivra; afterwards its own setting
    (the last set_ivra) is back, so a caller that set an arm for its episodes keeps it."""
    from ivra.policies.zero import ZeroPolicy

    pol = ZeroPolicy()
    pol.set_ivra({"layer": 0, "lam": 0.2})
    predict_with_arms(pol, [_obs(0)] * 2, ["a"] * 2, [0, 1], [None, {"layer": 1, "lam": 0.5}])
    assert pol.ivra_config == {"layer": 0, "lam": 0.2}


def test_runner_hands_episodes_only_to_policies_that_take_them():
    """A policy declaring ``takes_episodes`` gets each row's episode (seed and a key unique per episode, even for
    one seed), on the grouped path too (rows [arm, None, arm]); a policy that does not declare it never sees the
    keyword (its predict has no such parameter)."""
    arm = {"layer": 1, "lam": 0.5}
    seen: list[list] = []

    class Keyed(SimLatencyPolicy):
        per_sample_ivra = False  # the sub-batch path of predict_with_arms
        takes_episodes = True

        def predict(self, observations, instructions, seeds=None, ivra=None, episodes=None):
            seen.append(episodes)
            return super().predict(observations, instructions, seeds, ivra)

    runner = EpisodeRunner(Keyed(0, 0, chunk=2))
    eps = [runner.start(seed=3, ivra=arm), runner.start(seed=3), runner.start(seed=4, ivra=arm, key="mine")]
    runner.step(eps, [_obs(1)] * 3, ["a"] * 3)
    assert [[e.seed for e in call] for call in seen] == [[3, 4], [3]]  # the arm's rows 0 and 2, then row 1
    assert [e.key for e in seen[0]] == [eps[0].key, "mine"] and seen[1][0].key == eps[1].key
    assert len({e.key for e in eps}) == 3  # one seed, two episodes, two keys
    plain = EpisodeRunner(_Stateless())  # predict(observations, instructions, seeds=None, ivra=None)
    ep = plain.start(seed=1)
    assert plain.step([ep], [_obs(0)], ["a"]).shape == (1, 3)
