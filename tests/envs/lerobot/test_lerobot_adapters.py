"""IVRA on lerobot 0.6.1's real SmolVLA, pi0 and pi0.5 policies (tiny random weights, two cameras).

Expected values are computed independently of ivra's adapters: our own hooks record the vision layer's keys
(camera-major, as lerobot calls the tower) and the layer-L hidden states; the visual positions come from the
prefix layout written out here; the pooling is the naive float64 formula of tests/conftest.py.
"""

from __future__ import annotations

import pytest
import torch

import ivra
from ivra import IVRAError
from ivra.tiny import lerobot as tl

BUILDERS = {
    "smolvla": lambda: tl.smolvla_policy(),
    "smolvla_special": lambda: tl.smolvla_policy(special_tokens=True),
    "pi0": lambda: tl.pi0_policy(),
    "pi05": lambda: tl.pi05_policy(),
}
_CACHE: dict = {}


def policy(kind: str):
    """One tiny policy per kind for the whole module (building takes a few seconds)."""
    if kind not in _CACHE:
        _CACHE[kind] = BUILDERS[kind]()
    return _CACHE[kind]


KINDS = ("smolvla", "smolvla_special", "pi0", "pi05")
LAYER = 1


def is_smolvla(kind):
    return kind.startswith("smolvla")


def vlm_parts(kind, pol):
    """(text layers, vision layers, connector or None) read off the policy by hand."""
    if is_smolvla(kind):
        vlm = pol.model.vlm_with_expert.vlm.model
        return vlm.text_model.layers, vlm.vision_model.encoder.layers, vlm.connector
    pg = pol.model.paligemma_with_expert.paligemma.model
    return pg.language_model.layers, pg.vision_tower.vision_model.encoder.layers, None


def edit_module(kind, pol, layer=LAYER):
    """The module whose input is layer L's input hidden state (SmolVLA's loop: input_layernorm)."""
    layers = vlm_parts(kind, pol)[0]
    return layers[layer].input_layernorm if is_smolvla(kind) else layers[layer]


def run(pol, b, nz):
    return pol.predict_action_chunk({k: v.clone() for k, v in b.items()}, noise=nz.clone())


class Inputs:
    """Our own pre-hook recording (a clone of) the first argument of a module, per call."""

    def __init__(self, module):
        self.seen = []
        self.h = module.register_forward_pre_hook(
            lambda m, a, kw: self.seen.append((a[0] if a else kw["hidden_states"]).detach().clone()),
            with_kwargs=True,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.h.remove()


def block_means(keys, scale):
    """(B, g*g, D) patch keys -> (B, (g/s)^2, D): the mean of each s x s spatial block, raster order."""
    b, n, d = keys.shape
    g = int(round(n**0.5))
    x = keys.reshape(b, g // scale, scale, g // scale, scale, d)
    return x.mean((2, 4)).reshape(b, -1, d)


def independent(kind, pol, b, nz, layer=LAYER):
    """Baseline layer-L input, visual mask and per-image keys (sample-major, camera order) from our own hooks."""
    _, vision, connector = vlm_parts(kind, pol)
    keys = []
    hk = vision[-1].self_attn.k_proj.register_forward_hook(
        lambda m, a, out: keys.append(out.detach().clone())
    )
    try:
        with Inputs(edit_module(kind, pol, layer)) as rec:
            run(pol, b, nz)
    finally:
        hk.remove()
    (h0,) = rec.seen  # the prefix prefill is the only call of this VLM layer
    if connector is not None:
        keys = [block_means(k, connector.scale_factor) for k in keys]
    n_batch, seq = h0.shape[:2]
    before, after = (2, 1) if kind == "smolvla_special" else (0, 0)
    vis = torch.zeros(n_batch, seq, dtype=torch.bool)
    off = 0
    for k in keys:
        vis[:, off + before : off + before + k.shape[1]] = True
        off += before + k.shape[1] + after
    lang = b["observation.language.tokens"].shape[1]
    assert seq == off + lang + (1 if is_smolvla(kind) else 0)  # the layout we wrote out is the real one
    blocks = [(k[s], 0) for s in range(n_batch) for k in keys]
    return h0, vis, blocks


@pytest.mark.parametrize("kind", KINDS)
def test_detected_on_policy_and_inner_models(kind):
    pol = policy(kind)
    name = "smolvla" if is_smolvla(kind) else "pi0"
    inner = [pol.model] + ([] if is_smolvla(kind) else [pol.model.paligemma_with_expert])
    for root in [pol, *inner]:
        with ivra.attach(root, layer=LAYER, lam=0.3) as h:
            assert h.adapter.name == name
            run(pol, tl.batch(pol), tl.noise(pol))
        assert h.stats.calls == 1, type(root).__name__


def test_smolvla_with_expert_alone_is_refused_with_a_reason():
    pol = policy("smolvla")
    with pytest.raises(IVRAError, match="attach IVRA to the SmolVLAPolicy"):
        ivra.attach(pol.model.vlm_with_expert, layer=LAYER)


@pytest.mark.parametrize("kind", KINDS)
def test_lam0_bit_identical_and_once_per_chunk(kind):
    pol = policy(kind)
    b, nz = tl.batch(pol), tl.noise(pol)
    base = run(pol, b, nz)
    calls = []
    counter = edit_module(kind, pol).register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with ivra.attach(pol, layer=LAYER, lam=0.0) as h:
            out = run(pol, b, nz)
    finally:
        counter.remove()
    assert torch.equal(out, base)
    # two cameras x two samples, edited once: the prefix prefill; the 3 denoising steps reuse the cache
    assert (h.stats.calls, h.stats.images, h.stats.vision_captures) == (1, 4, 2)
    assert len(calls) == 1
    with ivra.attach(pol, layer=LAYER, lam=0.5) as h:
        changed = run(pol, b, nz)
    assert not torch.allclose(changed, base, atol=1e-6) and torch.isfinite(changed).all()


@pytest.mark.parametrize("kind", KINDS)
def test_pooled_prefix_equals_independent_formula(H, kind):
    pol = policy(kind)
    b, nz = tl.batch(pol), tl.noise(pol)
    h0, vis, blocks = independent(kind, pol, b, nz)
    with ivra.attach(pol, layer=LAYER, lam=0.4) as h, Inputs(edit_module(kind, pol)) as rec:
        run(pol, b, nz)
    (h1,) = rec.seen
    expected = H.expected_layer_input(h0, vis, blocks, 0.4)
    assert torch.allclose(h1.double(), expected, atol=1e-5, rtol=1e-4), (h1.double() - expected).abs().max()
    assert torch.equal(h1[~vis], h0[~vis])  # special, language, state and padding tokens untouched
    assert h.stats.tokens == int(vis.sum())


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_two_with_two_cameras_equals_each_sample_alone(kind):
    pol = policy(kind)
    b, nz = tl.batch(pol, batch_size=3, seed=1), tl.noise(pol, batch_size=3, seed=1)
    with ivra.attach(pol, layer=LAYER, lam=0.6):
        together = run(pol, b, nz)
        for i in range(3):
            alone = run(pol, {k: v[i : i + 1] for k, v in b.items()}, nz[i : i + 1])
            assert torch.allclose(alone[0], together[i], atol=1e-5), (i, (alone[0] - together[i]).abs().max())
    base = run(pol, b, nz)
    assert not torch.allclose(base, together, atol=1e-6)


@pytest.mark.parametrize("position", ["pre", "post_attn", "post"])
@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_positions(H, kind, position):
    """pre: layer L's input; post_attn: the residual stream after L's attention; post: L's output."""
    pol = policy(kind)
    b, nz = tl.batch(pol), tl.noise(pol)
    layers = vlm_parts(kind, pol)[0]
    layer = 0  # pi0's tiny language model has 2 layers; after the last one's attention nothing can change
    if position == "post_attn":  # the residual after attention is what the post-attention norm receives
        probe = layers[layer].post_attention_layernorm
    elif position == "post":
        probe = edit_module(kind, pol, layer + 1)
    else:
        probe = edit_module(kind, pol, layer)
    _, vis, blocks = independent(kind, pol, b, nz)
    with Inputs(probe) as rec0:
        base = run(pol, b, nz)
    with ivra.attach(pol, layer=layer, lam=0.0, position=position):
        assert torch.equal(run(pol, b, nz), base)
    with ivra.attach(pol, layer=layer, lam=0.5, position=position) as h, Inputs(probe) as rec1:
        out = run(pol, b, nz)
    assert h.stats.calls == 1 and not torch.allclose(out, base, atol=1e-6)
    expected = H.expected_layer_input(rec0.seen[0], vis, blocks, 0.5)
    got = rec1.seen[0].double()
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("position", ["post_attn", "post"])
@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_edits_after_the_last_layers_attention_are_refused(kind, position):
    pol = policy(kind)
    last = len(vlm_parts(kind, pol)[0]) - 1
    with pytest.raises(
        IVRAError, match=rf"position='{position}' at the last language-model layer \({last}\)"
    ):
        ivra.attach(pol, layer=last, position=position)


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_empty_camera_tokens_are_counted_not_pooled(kind):
    extra = {"empty_cameras": 1} if is_smolvla(kind) else {}
    pol = tl.smolvla_policy(**extra) if is_smolvla(kind) else tl.pi0_policy()
    b = tl.batch(pol, cameras=tl.CAMERAS[:1])  # no wrist camera: lerobot pads it with an image of -1
    nz = tl.noise(pol)
    with ivra.attach(pol, layer=LAYER, lam=0.5) as h:
        out = run(pol, b, nz)
    assert (
        h.stats.vision_captures == 2 and h.stats.images == 2
    )  # both cameras seen, the padding one not pooled
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_select_action_edits_once_per_chunk(kind):
    pol = policy(kind)
    b = tl.batch(pol, batch_size=1)
    pol.reset()
    with ivra.attach(pol, layer=LAYER, lam=0.3) as h:
        for _ in range(2 * pol.config.n_action_steps):
            pol.select_action({k: v.clone() for k, v in b.items()})
    assert h.stats.calls == 2
    pol.reset()


@pytest.mark.parametrize("kind", KINDS)
def test_detach_restores_the_policy(H, kind):
    pol = policy(kind)
    b, nz = tl.batch(pol), tl.noise(pol)
    before = H.hook_count(pol)
    base = run(pol, b, nz)
    h = ivra.attach(pol, layer=LAYER, lam=0.5)
    assert H.hook_count(pol) == before + len(h._hooks)
    run(pol, b, nz)
    h.detach()
    assert H.hook_count(pol) == before
    assert torch.equal(run(pol, b, nz), base)


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_active_samples_edit_only_their_rows(kind):
    pol = policy(kind)
    b, nz = tl.batch(pol, batch_size=3), tl.noise(pol, batch_size=3)
    base = run(pol, b, nz)
    with ivra.attach(pol, layer=LAYER, lam=0.5) as full:
        edited = run(pol, b, nz)
    with ivra.attach(pol, layer=LAYER, lam=0.5) as h:
        h.set_active_samples([True, False, True])
        mixed = run(pol, b, nz)
    assert torch.equal(mixed[1], base[1])
    assert torch.allclose(mixed[[0, 2]], edited[[0, 2]], atol=1e-6)
    assert h.stats.images == 4 and full.stats.images == 6


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_nan_key_names_the_image_and_layer(kind):
    pol = policy(kind)
    b, nz = tl.batch(pol), tl.noise(pol)
    b[tl.CAMERAS[1]][1, :, 0, 0] = float("nan")
    with ivra.attach(pol, layer=LAYER, lam=0.5):
        with pytest.raises(IVRAError, match=r"non-finite keys .* image 1 of sample 1 from vision layer 1"):
            run(pol, b, nz)


def test_smolvlm_adapter_inside_smolvla_never_edits_and_strict_raises():
    """Attached to the VLM inside SmolVLA, a decoder-layer hook never fires (lerobot's own loop): strict mode
    raises instead of letting the keys pile up in silence."""
    pol = policy("smolvla")
    b, nz = tl.batch(pol), tl.noise(pol)
    with ivra.attach(pol.model.vlm_with_expert.vlm, layer=LAYER, lam=0.5) as h:
        with pytest.raises(IVRAError, match="never reached language-model layer 1"):
            for _ in range(20):
                run(pol, b, nz)
    assert h.stats.calls == 0


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_a_camera_image_with_black_pixels_is_pooled_not_taken_for_an_empty_camera(kind):
    """lerobot pads a missing camera with -1 everywhere; a real image with black pixels (also -1 after lerobot's
    normalisation to [-1, 1]) must still be pooled: only an image that is -1 everywhere is empty."""
    pol = policy(kind)
    b, nz = tl.batch(pol, batch_size=1), tl.noise(pol, batch_size=1)
    with ivra.attach(pol, layer=LAYER, lam=0.5) as h:
        run(pol, b, nz)
    full = h.stats.tokens
    dark = {k: v.clone() for k, v in b.items()}
    dark[tl.CAMERAS[0]][..., : dark[tl.CAMERAS[0]].shape[-1] // 2] = 0.0  # the left half black
    with ivra.attach(pol, layer=LAYER, lam=0.5) as h:
        run(pol, dark, nz)
    assert full > 0 and h.stats.tokens == full  # every camera pooled, the half-black one included
