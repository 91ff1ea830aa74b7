"""IVRA on OpenVLA / OpenVLA-OFT: the rebuilt Prismatic structure (real timm ViTs + a real transformers Llama).

Every expectation is computed independently of ivra's engine: keys straight from the timm towers' own blocks,
the pooling formula as a float64 python loop.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

import ivra
from ivra.adapters import IVRAError, detect
from ivra.adapters.openvla import OpenVLAAdapter
from ivra.rebuilt.openvla import SIGLIP_ID, build_tiny

LAYER = 2
N = 256  # 16 x 16 patches per image at 224 px


@cache
def model_for(**kw):
    return build_tiny(**kw)


def get(**kw):
    model = model_for(**kw)
    assert hooks(model) == 0, "a previous test leaked hooks"
    return model


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def inputs(batch=1, images=1, seed=0, proprio=False, prompt_len=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (batch, prompt_len), generator=g)
    ids[:, 0] = 1  # BOS
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 6 * images, 224, 224, generator=g),
    }
    if proprio:
        out["proprio"] = torch.randn(batch, 8, generator=g)
    return out


def layer_inputs(model, run, layer=LAYER):
    """Run ``run()`` and return every input of LM layer ``layer`` (after any IVRA pre-hook, registered first)."""
    seen = []
    h = model.language_model.model.layers[layer].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).clone()), with_kwargs=True
    )
    try:
        run()
    finally:
        h.remove()
    return seen


def before_after(model, run, config, adapter=None, layer=LAYER):
    """Inputs of LM layer ``layer`` per call, before and after IVRA's pre-hook (spies registered around it)."""
    before, after = [], []
    target = model.language_model.model.layers[layer]

    def spy(store):
        return lambda m, a, kw: store.append((a[0] if a else kw["hidden_states"]).clone())

    h1 = target.register_forward_pre_hook(spy(before), with_kwargs=True)
    handle = ivra.attach(model, config, adapter=adapter)
    h2 = target.register_forward_pre_hook(spy(after), with_kwargs=True)
    try:
        run()
    finally:
        h1.remove(), h2.remove(), handle.detach()
    return before, after, handle


def tower_keys(tower, pixels, block=-1):
    """Keys of ``tower.blocks[block]`` (fused qkv, middle third) on the patch tokens, computed by hand."""
    x = tower.norm_pre(tower.patch_drop(tower._pos_embed(tower.patch_embed(pixels))))
    index = block % len(tower.blocks)
    for blk in list(tower.blocks)[:index]:
        x = blk(x)
    blk = tower.blocks[index]
    qkv = blk.attn.qkv(blk.norm1(x))
    d = qkv.shape[-1] // 3
    return qkv[:, tower.num_prefix_tokens :, d : 2 * d]


def naive_pool(tokens, keys, lam):
    """(1 - lam) v_i + lam sum_j W_ij v_j with the documented cosine rule (row floor 1.0 -> relu), float64."""
    k = keys.double()
    k = k / k.norm(dim=-1, keepdim=True)
    A = k @ k.T
    out = torch.empty_like(tokens, dtype=torch.float64)
    v = tokens.double()
    for i in range(A.shape[0]):
        row = A[i]
        if float(row.sum()) < 1.0:
            row = row.clamp(min=0)
        out[i] = (1 - lam) * v[i] + lam * (row[:, None] * v).sum(0) / row.sum()
    return out


def test_detected_with_documented_default():
    model = get()
    adapter = detect(model)
    assert adapter.name == "openvla" and adapter.tower == "dinov2"
    towers = adapter.towers(model)
    assert towers["dinov2"] is model.vision_backbone.featurizer
    assert towers["siglip"] is model.vision_backbone.fused_featurizer
    assert towers["dinov2"].num_prefix_tokens == 5 and towers["siglip"].num_prefix_tokens == 0
    with ivra.attach(model, layer=LAYER) as h:
        assert h.affinity_layer == len(model.vision_backbone.featurizer.blocks) - 1


def test_edits_exactly_the_visual_tokens_once_per_prefill_with_independent_values():
    model = get()
    x = inputs()
    gen = dict(max_new_tokens=7, min_new_tokens=7, do_sample=False)
    base, got, h = before_after(
        model, lambda: model.generate(**x, **gen), ivra.IVRAConfig(layer=LAYER, lam=0.5)
    )
    assert len(got) == len(base) == 7  # one prefill + 6 cached decode steps of one token
    assert h.stats.calls == 1 and h.stats.tokens == N and h.stats.vision_captures == 1
    assert got[0].shape[1] == 1 + N + x["input_ids"].shape[1] - 1
    changed = (got[0] != base[0]).any(-1)[0]
    assert changed[1 : 1 + N].all() and not changed[0] and not changed[1 + N :].any()
    for a, b in zip(got[1:], base[1:]):  # decode steps untouched
        assert a.shape[1] == 1 and torch.equal(a, b)
    keys = tower_keys(model.vision_backbone.featurizer, x["pixel_values"][:, :3])[0]
    expected = naive_pool(base[0][0, 1 : 1 + N], keys, 0.5)
    assert torch.allclose(got[0][0, 1 : 1 + N].double(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tower", ["siglip", "both"])
def test_tower_choice(tower):
    model = get()
    x = inputs(seed=1)
    base = layer_inputs(model, lambda: model(**x))[0]
    with ivra.attach(model, ivra.IVRAConfig(layer=LAYER, lam=0.4), adapter=OpenVLAAdapter(tower=tower)) as h:
        got = layer_inputs(model, lambda: model(**x))[0]
        affinity = h.last_affinity[0]
    dino = tower_keys(model.vision_backbone.featurizer, x["pixel_values"][:, :3])[0]
    sig = tower_keys(model.vision_backbone.fused_featurizer, x["pixel_values"][:, 3:])[0]
    cos = [torch.nn.functional.normalize(k, dim=-1) for k in (dino, sig)]
    a_dino, a_sig = (c @ c.T for c in cos)
    if tower == "siglip":
        assert torch.allclose(affinity, a_sig, atol=1e-5)
        expected = naive_pool(base[0, 1 : 1 + N], sig, 0.4)
        assert torch.allclose(got[0, 1 : 1 + N].double(), expected, atol=1e-5, rtol=1e-4)
    else:  # "both": the mean of the two towers' cosine affinities
        assert torch.allclose(affinity, (a_dino + a_sig) / 2, atol=1e-5)
    assert torch.equal(got[0, 1 + N :], base[0, 1 + N :])


def test_lam_zero_is_bit_identical_and_detach_restores():
    model = get()
    x = inputs(seed=2)
    gen = dict(
        max_new_tokens=7, min_new_tokens=7, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    before = model(**x).logits
    before_gen = model.generate(**x, **gen)
    n = hooks(model)
    with ivra.attach(model, layer=LAYER, lam=0.0) as h:
        zero = model(**x).logits
        zero_gen = model.generate(**x, **gen)
        assert h.stats.calls == 2
    assert torch.equal(zero, before) and torch.equal(zero_gen.sequences, before_gen.sequences)
    assert all(torch.equal(a, b) for a, b in zip(zero_gen.scores, before_gen.scores))
    h = ivra.attach(model, layer=LAYER, lam=0.8)
    assert hooks(model) > n
    changed = model(**x).logits
    assert not torch.allclose(changed, before, atol=1e-4)
    h.detach()
    assert hooks(model) == n
    assert torch.equal(model(**x).logits, before)


def test_batch_equals_samples_alone():
    model = get()
    x = inputs(batch=3, seed=3)
    with ivra.attach(model, layer=LAYER, lam=0.6) as h:
        batch = model(**x).logits
        alone = [model(**{k: v[b : b + 1] for k, v in x.items()}).logits for b in range(3)]
    assert h.stats.calls == 4 and h.stats.images == 3 + 3
    for b in range(3):
        assert torch.allclose(batch[b], alone[b][0], atol=1e-5)
    base = model(**x).logits
    assert not torch.allclose(batch, base, atol=1e-4)


def count_calls(modules):
    counts = [0] * len(modules)
    handles = []
    for i, m in enumerate(modules):

        def hook(mod, args, i=i):
            counts[i] += 1

        handles.append(m.register_forward_pre_hook(hook))
    return counts, handles


def test_one_vision_pass_per_step():
    """predict_action with IVRA: each tower runs exactly as often as without it (once per step)."""
    norm = {"libero_spatial": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}}
    model = build_tiny(norm_stats=norm)
    x = inputs(seed=4)
    towers = [model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer]
    counts, handles = count_calls(towers)
    try:
        a0 = model.predict_action(x["input_ids"], unnorm_key="libero_spatial", pixel_values=x["pixel_values"])
        assert counts == [1, 1]
        with ivra.attach(model, layer=LAYER, lam=0.3, adapter=OpenVLAAdapter(tower="both")) as h:
            for _ in range(3):
                model.predict_action(
                    x["input_ids"], unnorm_key="libero_spatial", pixel_values=x["pixel_values"]
                )
        assert counts == [4, 4] and h.stats.calls == 3
    finally:
        for hd in handles:
            hd.remove()
    assert a0.shape == (7,) and abs(a0).max() <= 1.0


# -- OpenVLA-OFT: two images (third-person + wrist) and a proprio token; FiLM ------------------------------------------
@pytest.mark.parametrize("film", [False, True])
def test_oft_two_images_proprio(film):
    model = get(num_images_in_input=2, use_proprio=True, use_film=film)
    tower = (
        model.vision_backbone.vision_backbone if film else model.vision_backbone
    ).featurizer  # FiLM nests it
    if film:
        assert hasattr(tower.blocks[0], "block") and hasattr(tower.blocks[0].block.attn, "qkv")
    x = inputs(batch=2, images=2, proprio=True, seed=5)
    run = lambda: model.predict_action_chunk(**x)  # noqa: E731
    base = layer_inputs(model, run)
    counts, handles = count_calls([tower])
    try:
        with ivra.attach(model, layer=LAYER, lam=0.5) as h:
            got = layer_inputs(model, run)
            chunk = run()
    finally:
        for hd in handles:
            hd.remove()
    assert counts == [2 * 2]  # two images per step through the DINOv2 tower, two steps: no extra pass
    assert len(got) == 1 and h.stats.calls == 2 and h.stats.images == 2 * 2 * 2
    changed = (got[0] != base[0]).any(-1)
    assert changed[:, 1 : 1 + 2 * N].all()
    assert not changed[:, 0].any() and not changed[:, 1 + 2 * N :].any()  # BOS, proprio token, text untouched
    assert chunk.shape == (2, 8, 7)
    if not film:  # each view pooled with its own keys (the wrist image is the second 6-channel group)
        for b in range(2):
            for view in range(2):
                keys = tower_keys(tower, x["pixel_values"][b : b + 1, 6 * view : 6 * view + 3])[0]
                span = slice(1 + view * N, 1 + (view + 1) * N)
                expected = naive_pool(base[0][b, span], keys, 0.5)
                assert torch.allclose(got[0][b, span].double(), expected, atol=1e-5, rtol=1e-4)
    # batch of two samples with two images each == each sample alone
    with ivra.attach(model, layer=LAYER, lam=0.5):
        batch = model.predict_action_chunk(**x)
        alone = [model.predict_action_chunk(**{k: v[b : b + 1] for k, v in x.items()}) for b in range(2)]
    for b in range(2):
        assert torch.allclose(batch[b], alone[b][0], atol=1e-5)


def test_missing_tower_is_a_clear_error():
    model = get(towers=(SIGLIP_ID,))
    assert detect(model).towers(model).keys() == {"siglip"}
    with pytest.raises(IVRAError, match="no dinov2 tower"):
        ivra.attach(model, layer=LAYER)
    with ivra.attach(model, layer=LAYER, adapter=OpenVLAAdapter(tower="siglip")) as h:
        model(**{**inputs(), "pixel_values": torch.randn(1, 3, 224, 224)})
    assert h.stats.tokens == N
    with pytest.raises(ValueError, match="tower must be one of"):
        OpenVLAAdapter(tower="clip")


def test_text_only_prefill_is_an_error_in_strict_mode():
    model = get()
    x = inputs(seed=6)
    with ivra.attach(model, layer=LAYER) as h, pytest.raises(IVRAError, match="no visual tokens"):
        model(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    assert not h.attached


def test_bfloat16_model():
    """OpenVLA runs in bf16: keys, affinity (fp32) and the edit work in the model's dtype, lam=0 stays exact."""
    model = build_tiny(dtype=torch.bfloat16)
    x = inputs(seed=7)
    x["pixel_values"] = x["pixel_values"].to(torch.bfloat16)
    base = layer_inputs(model, lambda: model(**x))[0]
    before = model(**x).logits
    with ivra.attach(model, layer=LAYER, lam=0.0):
        assert torch.equal(model(**x).logits, before)
    with ivra.attach(model, ivra.IVRAConfig(layer=LAYER, lam=0.5), adapter=OpenVLAAdapter(tower="both")) as h:
        got = layer_inputs(model, lambda: model(**x))[0]
    assert got.dtype == torch.bfloat16 and h.stats.tokens == N
    changed = (got != base).any(-1)[0]
    assert changed[1 : 1 + N].any() and not changed[0] and not changed[1 + N :].any()
