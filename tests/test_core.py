"""ivra.core: affinity, row rule, pooling - against naive float64 computations."""

from __future__ import annotations

import pytest
import torch

import ivra
from ivra import core


def _keys(n=12, d=8, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, d) if batch is None else (batch, n, d)
    return torch.randn(*shape, generator=g)


def test_affinity_is_fp32_symmetric_unit_diagonal(H):
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        k = _keys(batch=3).to(dtype)
        A = ivra.affinity(k)
        assert A.dtype == torch.float32
        assert A.shape == (3, 12, 12)
        assert torch.allclose(A, A.transpose(-1, -2), atol=1e-6)
        assert torch.allclose(torch.diagonal(A, dim1=-2, dim2=-1), torch.ones(3, 12), atol=1e-5)
        # against an independent cosine
        for b in range(3):
            ref, _ = H.naive_weights(k[b].float())
            assert torch.allclose(A[b].double(), ref, atol=1e-5)
    # (N, Dk) is accepted and treated as one block
    assert ivra.affinity(_keys()).shape == (1, 12, 12)


def test_affinity_bad_shape_names_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        ivra.affinity(torch.zeros(2, 3, 4, 5))


@pytest.mark.parametrize("mode", ["cosine", "relu", "softmax"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_pool_equals_naive_loop(H, mode, lam):
    keys = _keys(n=10, d=6, seed=1, batch=2)
    tokens = _keys(n=10, d=5, seed=2, batch=2)
    out = ivra.pool_visual_tokens(tokens, ivra.affinity(keys), lam, mode=mode)
    for b in range(2):
        ref = H.naive_pool(tokens[b], keys[b], lam, mode)
        assert torch.allclose(out[b].double(), ref, atol=1e-5), (mode, lam)
    if lam == 0.0:
        assert torch.equal(out, tokens)


def test_pool_2d_input_and_shape_errors():
    keys, tokens = _keys(n=6), _keys(n=6, d=4, seed=3)
    out = ivra.pool_visual_tokens(tokens, ivra.affinity(keys)[0], 0.5)
    assert out.shape == (6, 4)
    with pytest.raises(ValueError, match=r"token count mismatch.*6, 4\).*\(1, 5, 5\)"):
        ivra.pool_visual_tokens(tokens, ivra.affinity(_keys(n=5)), 0.5)
    with pytest.raises(ValueError, match=r"\(1, 6, 7\)"):
        ivra.pool_visual_tokens(tokens, torch.zeros(1, 6, 7), 0.5)
    for lam in (1.5, -0.1):
        with pytest.raises(ValueError, match=str(lam)):
            ivra.pool_visual_tokens(tokens, ivra.affinity(keys), lam)


@pytest.mark.parametrize("mode", ["relu", "softmax", "cosine"])
def test_rows_sum_to_one(mode):
    A = ivra.affinity(_keys(n=16, d=4, seed=5, batch=2))
    W, _ = core.row_weights(A, mode, 0.1)
    assert W.dtype == torch.float32
    assert torch.allclose(W.sum(-1), torch.ones(2, 16), atol=1e-5)
    if mode in ("relu", "softmax"):
        assert (W >= 0).all()


def _antipodal_keys():
    """Patch 0 sees three exact opposites of itself: its cosine row sums to 1 - 3 + small < floor."""
    k = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0],
            [-1.0, 0.01, 0.0],
            [-1.0, 0.0, 0.01],
            [0.0, 1.0, 0.0],
        ]
    )
    return k


def test_cosine_rows_below_floor_use_relu_rule(H):
    k = _antipodal_keys()
    A = ivra.affinity(k)[0]
    sums = A.sum(-1)
    low = sums < 1.0
    assert low.any() and (sums <= 0).any(), sums  # the case under test really occurs
    W, n_fallback = core.row_weights(A[None], "cosine")
    assert n_fallback == int(low.sum())
    W = W[0]
    Wr, _ = core.row_weights(A[None], "relu")
    for i in range(5):
        if low[i]:
            assert torch.allclose(W[i], Wr[0, i])  # the relu rule for that row
            assert (W[i] >= 0).all()
        else:
            assert torch.allclose(W[i], A[i] / A[i].sum())  # the authors' raw cosine rule
    _, Wn = H.naive_weights(k)
    assert torch.allclose(W.double(), Wn, atol=1e-6)


def test_no_sign_flip_no_blowup_for_antipodal_patches():
    k = _antipodal_keys()
    A = ivra.affinity(k)[0]
    low = A.sum(-1) < 1.0  # the rows that fall back to the relu rule
    assert low[0]
    # tokens: the keys' directions, scaled; under the raw rule row 0 (sum < 0) would flip and blow up
    tokens = k * torch.tensor([[3.0], [2.0], [2.0], [2.0], [1.0]])
    max_in = tokens.norm(dim=-1).max()
    for lam in (0.3, 1.0):
        out = ivra.pool_visual_tokens(tokens, ivra.affinity(k), lam)
        assert torch.isfinite(out).all()
        assert (out[low].norm(dim=-1) <= max_in + 1e-5).all()  # fallback rows: convex combinations
        assert torch.dot(out[0], tokens[0]) > 0  # no sign flip
        raw = (1 - lam) * tokens[0] + lam * (A[0] / A[0].sum()) @ tokens  # what the raw rule would give
        if lam == 1.0:  # ... so the construction really exercises the rule: the raw row flips and blows up
            assert torch.dot(raw, tokens[0]) < 0 and raw.norm() > max_in


def test_all_zero_keys_give_identity_rows():
    k = torch.zeros(2, 4, 8)
    k[1, 2] = torch.randn(8)  # one real patch among zeros
    A = ivra.affinity(k)
    assert torch.isfinite(A).all()
    tokens = torch.randn(2, 4, 3)
    for mode in ("cosine", "relu"):
        out = ivra.pool_visual_tokens(tokens, A, 0.7, mode=mode)
        # every row is an identity row (the real patch only sees itself): unchanged up to (1-lam)v + lam v rounding
        assert torch.allclose(out, tokens, atol=1e-6, rtol=1e-6), mode
        W, _ = core.row_weights(A, mode)
        assert torch.allclose(W, torch.eye(4).expand(2, 4, 4), atol=1e-6)


def test_bf16_tokens_pooled_in_fp32(H):
    g = torch.Generator().manual_seed(7)
    keys = torch.randn(1, 32, 16, generator=g)
    # large offset: math done in bf16 would lose precision
    tokens = (torch.randn(1, 32, 24, generator=g) * 50 + 300).to(torch.bfloat16)
    lam = 0.3
    A = ivra.affinity(keys)
    out = ivra.pool_visual_tokens(tokens, A, lam)
    assert out.dtype == torch.bfloat16
    # independent fp32 computation cast to bf16
    W = H.naive_weights(keys[0])[1].float()
    v = tokens[0].float()
    ref32 = (1 - lam) * v + lam * (W @ v)
    ref64 = H.naive_pool(tokens[0], keys[0], lam)
    diff = (out[0].float() - ref32.to(torch.bfloat16).float()).abs()
    ulp = ref32.abs() * 2.0**-7  # one bf16 ulp bound
    assert (diff <= ulp + 1e-6).all()
    assert (diff == 0).float().mean() > 0.97  # equal except for rare rounding-boundary cases
    # math done in bf16 would be measurably worse than the fp32 path
    vb, Wb = tokens[0], W.to(torch.bfloat16)
    native = ((1 - lam) * vb + lam * (Wb @ vb)).double()
    err_ivra = (out[0].double() - ref64).abs().max()
    err_native = (native - ref64).abs().max()
    assert err_ivra < err_native


def test_group_mean():
    x = torch.arange(24.0).reshape(1, 8, 3)
    m = core.group_mean(x, 4)
    assert torch.equal(m, torch.stack([x[0, :4].mean(0), x[0, 4:].mean(0)])[None])
    assert core.group_mean(x, 1) is x
    with pytest.raises(ValueError, match="8 patches in groups of 3"):
        core.group_mean(x, 3)


def test_row_weights_bad_mode_and_temperature():
    A = ivra.affinity(_keys())
    with pytest.raises(ValueError, match="'dot'"):
        core.row_weights(A, "dot")
    with pytest.raises(ValueError, match="-1"):
        core.row_weights(A, "softmax", -1.0)


def test_authors_row_rule_is_opt_in_and_reproduces_their_division():
    """affinity_mode="cosine_authors": the released FLOWER integration's rule, W = A / clamp(rowsum, 1e-6), no
    fallback; values computed by that rule in float64 (a row summing to <= 0 explodes, as documented)."""
    k = _antipodal_keys()
    A = ivra.affinity(k)[0]
    sums = A.double().sum(-1)
    assert (sums <= 0).any()  # the unsafe case occurs
    tokens = _keys(n=5, d=4, seed=9)
    lam = 0.2
    ref = (1 - lam) * tokens.double() + lam * (A.double() / sums.clamp(min=1e-6)[:, None]) @ tokens.double()
    out = ivra.pool_visual_tokens(tokens, ivra.affinity(k), lam, mode="cosine_authors")
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-5)
    W, n_fallback = core.row_weights(A[None], "cosine_authors")
    assert n_fallback == 0 and torch.allclose(
        W[0].double(), A.double() / sums.clamp(min=1e-6)[:, None], rtol=1e-5
    )
    bad = int(torch.argmin(sums))
    assert out[bad].norm() > 1e4 * tokens.norm(dim=-1).max()  # the row that sums to <= 0 blows up
    assert not torch.allclose(
        out, ivra.pool_visual_tokens(tokens, ivra.affinity(k), lam)
    )  # differs from ours
    assert ivra.IVRAConfig().affinity_mode == "cosine"  # off by default, also in the flower preset
    assert ivra.IVRAConfig.preset("flower").affinity_mode == "cosine"
    assert (
        ivra.IVRAConfig.parse("preset=flower,affinity_mode=cosine_authors").affinity_mode == "cosine_authors"
    )
