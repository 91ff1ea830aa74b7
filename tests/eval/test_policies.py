"""The zero policy and the random-weight tiny VLA (real LLaVA class, OpenVLA-style action tokens, IVRA)."""

import numpy as np
import pytest

from ivra.policies.base import Policy
from ivra.policies.vla import N_BINS, TinyVLAPolicy, bin_centres
from ivra.policies.zero import ZeroPolicy


def _obs(seed, size=96):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}


def test_zero_policy():
    p = ZeroPolicy()
    assert isinstance(p, Policy)
    a = p.act([_obs(0), _obs(1)], ["a", "b"])
    assert a.shape == (2, 7)
    assert p.predict([_obs(0)], ["a"], [3]).shape == (1, 1, 7)  # the chunk contract: (B, H=1, D)
    assert (a[:, :6] == 0).all() and (a[:, 6] == -1).all()


def test_bin_centres():
    c = bin_centres()
    assert len(c) == N_BINS and c[0] == pytest.approx(-1 + 1 / 256) and c[-1] == pytest.approx(1 - 1 / 256)
    assert np.allclose(np.diff(c), 2 / 256)


@pytest.fixture(scope="module")
def vla():
    return TinyVLAPolicy(model_seed=0)


def test_tiny_vla_actions_are_deterministic_bin_centres(vla):
    assert isinstance(vla, Policy)
    assert type(vla.model).__name__ == "LlavaForConditionalGeneration"
    assert vla.vocab - N_BINS == 260  # action tokens are the last 256 ids
    obs, instr = [_obs(0), _obs(1)], ["pick up the bowl", "open the drawer"]
    a = vla.act(obs, instr)
    assert a.shape == (2, 7)
    centres = set(np.round(bin_centres(), 8))
    assert all(round(x, 8) in centres for x in a[:, :6].ravel())
    assert set(a[:, 6]) <= {-1.0, 1.0}
    assert np.array_equal(a, vla.act(obs, instr))
    # batched == one by one (left padding is handled)
    assert np.array_equal(a[1:], vla.act(obs[1:], instr[1:]))
    # a second instance with the same seed has identical weights (both arms of an A/B)
    other = TinyVLAPolicy(model_seed=0)
    assert np.array_equal(other.act(obs, instr), a)


def test_tiny_vla_ivra_attach_detach(vla):
    obs, instr = [_obs(2)], ["put the bowl on the plate"]
    base_logits = vla.action_logits(obs, instr)
    base_act = vla.act(obs, instr)
    vla.set_ivra({"layer": 2, "lam": 0.5})
    assert vla.ivra_config == {"layer": 2, "lam": 0.5}
    ivra_logits = vla.action_logits(obs, instr)
    assert not np.allclose(ivra_logits, base_logits)  # IVRA really acts on the visual tokens
    before = vla.ivra_counters()
    assert vla.act(obs, instr).shape == (1, 7)
    after = vla.ivra_counters()
    assert after["calls"] > before["calls"] and after["tokens"] - before["tokens"] >= vla.n_image_tokens
    ov = vla.overlay()
    assert ov.shape == (8, 8) and np.isfinite(ov).all()  # 64 px / 8 px patches
    vla.set_ivra({"layer": 2, "lam": 0.0})  # lam = 0 is bit-identical to no IVRA
    assert np.array_equal(vla.action_logits(obs, instr), base_logits)
    vla.set_ivra(None)
    assert vla.ivra_config is None and vla.overlay() is None and vla.ivra_counters() is None
    assert np.array_equal(vla.action_logits(obs, instr), base_logits)
    assert np.array_equal(vla.act(obs, instr), base_act)


def test_tiny_vla_sampling_noise_is_per_row_seed():
    """temperature > 0: a row's sample depends on its own seed only -- alone or in a batch, in any position."""
    vla = TinyVLAPolicy(model_seed=0, temperature=5.0)
    obs, instr = [_obs(0), _obs(1), _obs(0)], ["pick up the bowl", "open the drawer", "pick up the bowl"]
    batch = vla.predict(obs, instr, seeds=[11, 12, 13])
    assert batch.shape == (3, 1, 7)
    assert np.array_equal(batch[1], vla.predict(obs[1:2], instr[1:2], seeds=[12])[0])
    assert np.array_equal(batch[0], vla.predict(obs[:1], instr[:1], seeds=[11])[0])
    # same observation, other seed: another sample (at temperature 5 over 256 bins, 7 equal draws are ~impossible)
    assert not np.array_equal(batch[0], batch[2])
    assert np.array_equal(vla.predict(obs[:1], instr[:1], seeds=[13])[0], batch[2])
