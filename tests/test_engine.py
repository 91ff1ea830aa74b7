"""The hook engine on the six tiny real transformers families: bit-exactness, the formula, scope, generate,
padding, dtypes, attention backends, hook hygiene, errors, the inputs_embeds path and the three positions."""

from __future__ import annotations

import pytest
import torch

import ivra
from ivra import IVRAConfig, IVRAError, tiny
from ivra.tiny import IMAGE_TOKEN

FAMILIES = ("llava", "paligemma", "idefics3", "smolvlm", "qwen2_5_vl", "florence2")

LAYER = 2  # of 4 LM layers (3 encoder layers for Florence-2)


# -- 1 / 7: lam=0 is bit-identical, lam>0 changes, eager and sdpa --------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_lam0_bit_identical_and_hook_ran(H, family, attn):
    model, inputs = H.build(family, attn=attn)
    base = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.0) as h:
        out = H.logits(model, inputs)
    assert torch.equal(out, base)
    assert h.stats.calls == 1 and h.stats.tokens > 0 and h.stats.vision_captures >= 1
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        out = H.logits(model, inputs)
    assert h.stats.calls == 1
    assert not torch.allclose(out, base, atol=1e-4)
    assert torch.isfinite(out).all()


# -- 2: the pooled values equal the formula computed by hand from independently computed keys ----------------------
def _check_formula(H, family, model, inputs, cfg, blocks):
    layer = H.lm_layers(family, model)[cfg.layer]
    with H.Recorder(layer) as rec0:
        model(**inputs)
    with ivra.attach(model, cfg) as h, H.Recorder(layer) as rec1:  # registered after attach: sees IVRA's edit
        model(**inputs)
    (h0,), (h1,) = rec0.inputs, rec1.inputs
    vis = H.visual_mask(inputs)
    expected = H.expected_layer_input(h0, vis, blocks, cfg.lam, cfg.affinity_mode)
    assert torch.allclose(h1.double(), expected, atol=1e-5, rtol=1e-4), (h1.double() - expected).abs().max()
    assert not torch.allclose(h1, h0)  # the hook order assumption holds: our pre-hook saw the edited input
    assert torch.equal(h1[~vis], h0[~vis])
    assert h.stats.tokens == sum(k.shape[0] for k, _ in blocks)
    assert h.stats.images == len(blocks)
    # the affinity IVRA used, block by block
    assert len(h.last_affinity) == len(blocks)
    got = sorted(h.last_affinity, key=lambda a: a.sum().item())
    ref = sorted((H.naive_weights(k)[0] for k, _ in blocks), key=lambda a: a.sum().item())
    for a, r in zip(got, ref):
        assert torch.allclose(a.double(), r, atol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pooled_values_equal_independent_formula(H, family, attn):
    model, inputs = H.build(family, attn=attn)
    blocks = H.independent_blocks(family, model, inputs)
    _check_formula(H, family, model, inputs, IVRAConfig(layer=LAYER, lam=0.4), blocks)


@pytest.mark.parametrize("mode", ["cosine", "relu", "softmax"])
def test_llava_formula_every_mode_negative_layer(H, mode):
    model, inputs = H.build("llava")
    blocks = H.independent_blocks("llava", model, inputs)
    cfg = IVRAConfig(layer=-3, lam=0.7, affinity_mode=mode)  # -3 of 4 layers is layer 1
    layer = H.lm_layers("llava", model)[1]
    with H.Recorder(layer) as rec0:
        model(**inputs)
    with ivra.attach(model, cfg) as h, H.Recorder(layer) as rec1:
        model(**inputs)
    assert h.layer == 1
    expected = H.expected_layer_input(rec0.inputs[0], H.visual_mask(inputs), blocks, cfg.lam, mode)
    assert torch.allclose(rec1.inputs[0].double(), expected, atol=1e-5, rtol=1e-4)


def test_llava_full_strategy_keeps_cls_token(H):
    """vision_feature_select_strategy="full": the CLS token is in the sequence and left alone."""
    model, inputs = H.build("llava", strategy="full")
    keys = H._siglip_like_keys(model.model.vision_tower, inputs["pixel_values"])
    blocks = [(k[1:], 1) for k in keys]  # skip the CLS position, pool the patches
    _check_formula(H, "llava", model, inputs, IVRAConfig(layer=1, lam=0.5), blocks)


def test_llava_formula_two_images_per_sample(H):
    model, inputs = H.build("llava", images_per_sample=2)
    blocks = H.independent_blocks("llava", model, inputs)
    assert len(blocks) == 4
    _check_formula(H, "llava", model, inputs, IVRAConfig(layer=LAYER, lam=0.5), blocks)


def test_qwen_formula_hidden_feature_layer0(H):
    model, inputs = H.build("qwen2_5_vl")
    keys = H.qwen_keys(model, inputs, feature="hidden", layer=0)
    cfg = IVRAConfig(layer=1, lam=0.6, affinity_feature="hidden", affinity_layer=0)
    _check_formula(H, "qwen2_5_vl", model, inputs, cfg, [(k, 0) for k in keys])


# -- 3: only the visual positions of layer L change; hidden states before L identical, after different -------------
@pytest.mark.parametrize("family", FAMILIES)
def test_scope_visual_positions_and_layers(H, family):
    model, inputs = H.build(family)
    layer = H.lm_layers(family, model)[LAYER]
    with H.Recorder(layer) as rec0:
        out0 = model(**inputs, output_hidden_states=True)
    with ivra.attach(model, layer=LAYER, lam=0.5), H.Recorder(layer) as rec1:
        out1 = model(**inputs, output_hidden_states=True)
    h0, h1 = rec0.inputs[0], rec1.inputs[0]
    vis = H.visual_mask(inputs)
    assert torch.equal(h1[~vis], h0[~vis])  # text positions bit-identical
    changed = (h1 != h0).any(-1)
    assert not (changed & ~vis).any()
    assert changed[vis].float().mean() > 0.5  # (a token whose affinity row is an identity row stays put)
    if family == "florence2":  # the first visual position of each image is its global token, left alone
        for b in range(vis.shape[0]):
            assert not changed[b, vis[b].nonzero()[0, 0]]
    hs0, hs1 = H.hidden_states(out0), H.hidden_states(out1)
    # hidden_states[k] is the input of layer k (k=0: embeddings); IVRA edits inside layer L's pre-hook
    assert len(hs0) == len(H.lm_layers(family, model)) + 1
    assert torch.equal(hs0[LAYER], h0)
    for k in range(LAYER + 1):
        assert torch.equal(hs1[k], hs0[k]), k
    for k in range(LAYER + 1, len(hs0)):
        assert not torch.equal(hs1[k], hs0[k]), k


# -- 4: generate with KV cache == no-cache with IVRA -----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_cache_equals_no_cache(H, family):
    model, inputs = H.build(family)
    kw = dict(
        max_new_tokens=4, min_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    forwards = [0]
    counter = model.register_forward_pre_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
    try:
        base = model.generate(**inputs, **kw)
        runs = {}
        for use_cache in (True, False):
            forwards[0] = 0
            with ivra.attach(model, layer=LAYER, lam=0.5) as h:
                runs[use_cache] = model.generate(**inputs, use_cache=use_cache, **kw)
            runs[use_cache, "calls"], runs[use_cache, "forwards"] = h.stats.calls, forwards[0]
    finally:
        counter.remove()
    a, b = runs[True], runs[False]
    assert torch.equal(a.sequences, b.sequences)
    assert len(a.scores) == len(b.scores) == 4
    for sa, sb in zip(a.scores, b.scores):
        assert torch.allclose(sa, sb, atol=1e-4)
    # IVRA really acted inside generate
    assert not torch.allclose(a.scores[0], base.scores[0], atol=1e-4)
    if family == "florence2":  # encoder-decoder: the encoder (where IVRA acts) runs once either way
        assert runs[True, "calls"] == runs[False, "calls"] == 1
    else:
        assert runs[True, "calls"] == 1  # prefill only; decode steps with the cache are left alone
        assert runs[False, "forwards"] == 4
        assert runs[False, "calls"] == runs[False, "forwards"]  # every no-cache forward is a full prefill


def test_generate_decode_steps_are_skipped(H):
    model, inputs = H.build("llava")
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert (h.stats.calls, h.stats.skipped) == (1, 2)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_generated_placeholder_id_in_decode_step_is_left_alone(H, family):
    """A decode step (KV cache) whose generated token happens to be the image placeholder id carries no image
    features: IVRA must leave it alone (the model itself does), not fail for want of keys."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class ForceImageTokenAtStep2(LogitsProcessor):
        def __init__(self):
            self.step = 0

        def __call__(self, input_ids, scores):
            self.step += 1
            if self.step == 2:
                scores = torch.full_like(scores, -1e9)
                scores[:, IMAGE_TOKEN] = 0
            return scores

    model, inputs = H.build(family)
    kw = dict(
        max_new_tokens=4, min_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        plain = model.generate(**inputs, **kw)
        forced = model.generate(
            **inputs, logits_processor=LogitsProcessorList([ForceImageTokenAtStep2()]), **kw
        )
    n = inputs["input_ids"].shape[1]
    assert (forced.sequences[:, n + 1] == IMAGE_TOKEN).all()
    assert (h.stats.calls, h.stats.skipped) == (2, 6)
    assert torch.equal(forced.sequences[:, n], plain.sequences[:, n])  # same IVRA prefill
    assert torch.allclose(forced.scores[0], plain.scores[0])


def test_beam_search_fails_loudly(H):
    """Documented limitation: generate expands the prompts after the single vision pass (beams / return sequences)."""
    model, inputs = H.build("llava")
    with (
        ivra.attach(model, layer=LAYER, lam=0.5),
        pytest.raises(IVRAError, match=r"64 visual tokens.*32.*beam"),
    ):
        model.generate(**inputs, max_new_tokens=2, num_beams=2)


def test_inference_mode_equals_no_grad(H):
    model, inputs = H.build("qwen2_5_vl")
    with ivra.attach(model, layer=LAYER, lam=0.5):
        ref = H.logits(model, inputs)
        with torch.inference_mode():
            out = H.logits(model, inputs)
    assert torch.equal(out, ref)


# -- 5: padding and several images: every sample equals itself run alone ---------------------------------------------
def _check_alone(H, family, model, inputs, images_per_sample=1, lam=0.5):
    with ivra.attach(model, layer=LAYER, lam=lam) as h:
        batch = model(**inputs)
        tokens_batch = h.stats.tokens
        alone = []
        for b in range(inputs["input_ids"].shape[0]):
            one = H.sample_inputs(family, inputs, b, images_per_sample)
            alone.append(model(**one))
    assert h.stats.calls == 1 + len(alone)
    assert h.stats.tokens == 2 * tokens_batch
    mask = inputs["attention_mask"].bool()
    for b, lo in enumerate(alone):
        if family == "florence2":  # encoder-decoder: the prompt's positions live in the encoder
            got, ref = batch.encoder_last_hidden_state[b][mask[b]], lo.encoder_last_hidden_state[0]
            assert torch.allclose(batch.logits[b], lo.logits[0], atol=1e-4)
        else:
            got, ref = batch.logits[b][mask[b]], lo.logits[0]
        assert torch.allclose(got, ref, atol=1e-4), (b, (got - ref).abs().max())


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_samples_alone(H, family, attn):
    model, inputs = H.build(family, attn=attn)
    _check_alone(H, family, model, inputs, images_per_sample=2 if family in ("idefics3", "smolvlm") else 1)


# several images per sample, batch of 3: each sample's keys pool only its own tokens (Florence-2's native class
# takes one image per prompt; FLOWER's cameras are separate encoder calls, tested with its own adapter)
@pytest.mark.parametrize(
    "family, ips",
    [("llava", 2), ("llava", 3), ("paligemma", 2), ("qwen2_5_vl", 2), ("idefics3", 3), ("smolvlm", 3)],
)
def test_several_images_per_sample_batch_equals_alone(H, family, ips):
    model, inputs = tiny.build(family, batch=3, images_per_sample=ips)
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        model(**inputs)
    assert h.stats.images == 3 * ips - (
        1 if family in ("idefics3", "smolvlm") else 0
    )  # idefics: one padding image
    _check_alone(H, family, model, inputs, images_per_sample=ips)


def test_swapped_blocks_across_samples_are_caught(H):
    """An adapter that hands blocks in the wrong sample order (camera-major records) cannot pool one sample's keys
    into another's tokens when it names the samples, and is caught when block sizes differ per sample."""
    from ivra.adapters.base import ImageBlock
    from ivra.plan import assign

    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 1:5] = True  # sample 0: one image of 4 tokens
    mask[1, 2:8] = True  # sample 1: one image of 6 tokens
    k4, k6 = torch.randn(4, 3), torch.randn(6, 3)
    placed = assign([ImageBlock(k6, sample=1), ImageBlock(k4, sample=0)], mask)
    assert [(p.sample, p.rows.tolist()) for p in placed] == [(0, [1, 2, 3, 4]), (1, [12, 13, 14, 15, 16, 17])]
    with pytest.raises(IVRAError, match=r"straddle samples 0 and 1"):
        assign([ImageBlock(k6), ImageBlock(k4)], mask)  # unnamed, wrong order
    with pytest.raises(IVRAError, match=r"sample 0 has 4 visual tokens but its image blocks take 6"):
        assign([ImageBlock(k6, sample=0), ImageBlock(k4, sample=1)], mask)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("ips", [1, 2])
def test_llava_padding_sides_and_two_images(H, side, ips, attn):
    model, inputs = H.build("llava", attn=attn, padding_side=side, images_per_sample=ips)
    mask = inputs["attention_mask"]
    assert (mask == 0).any()  # padding really occurs
    pad_col = 0 if side == "left" else -1
    assert mask[0, pad_col] == 0
    _check_alone(H, "llava", model, inputs, images_per_sample=ips)


def test_idefics3_padding_image(H):
    model, inputs = H.build("idefics3")
    pv = inputs["pixel_values"]
    assert (pv[-1, -1] == 0).all() and not (pv[0] == 0).all()  # the last sample has an all-zero padding image
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        model(**inputs)
    assert h.stats.images == 3 and h.stats.tokens == 12
    _check_alone(H, "idefics3", model, inputs, images_per_sample=2)
    # the padded sample alone without its padding image gives the same logits
    one = H.sample_inputs("idefics3", inputs, 1)
    with ivra.attach(model, layer=LAYER, lam=0.5):
        with_pad = H.logits(model, one)
        one["pixel_values"] = one["pixel_values"][:, :1]
        without = H.logits(model, one)
    assert torch.allclose(with_pad, without, atol=1e-5)


# -- 6: bf16 --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16(H, family):
    model, inputs = H.build(family, dtype=torch.bfloat16)
    base = H.logits(model, inputs)
    assert base.dtype == torch.bfloat16
    with ivra.attach(model, layer=LAYER, lam=0.0) as h:
        assert torch.equal(H.logits(model, inputs), base)
    assert h.stats.calls == 1
    layer = H.lm_layers(family, model)[LAYER]
    with H.Recorder(layer) as rec0:
        model(**inputs)
    with ivra.attach(model, layer=LAYER, lam=0.5) as h, H.Recorder(layer) as rec:
        out = H.logits(model, inputs)
    assert h.stats.calls == 1
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    h0, h1 = rec0.inputs[0], rec.inputs[0]
    assert h1.dtype == torch.bfloat16
    assert not torch.equal(out, base)
    vis = H.visual_mask(inputs)
    assert torch.equal(h1[~vis], h0[~vis])
    # the pooled tokens are the fp32 formula rounded to bf16 (independent keys, computed from the bf16 model)
    blocks = H.independent_blocks(family, model, inputs)
    expected = H.expected_layer_input(h0, vis, [(k.float(), s) for k, s in blocks], 0.5)
    diff = (h1.double() - expected).abs()
    assert (diff <= expected.abs() * 2.0**-7 + 1e-3).all()


# -- 8: detach and hook hygiene ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("position", ["pre", "post_attn", "post"])
@pytest.mark.parametrize("family", FAMILIES)
def test_detach_restores_and_removes_exactly_its_hooks(H, family, position):
    model, inputs = H.build(family)
    base = H.logits(model, inputs)
    fired = []
    layer = H.lm_layers(family, model)[LAYER]
    user = layer.register_forward_pre_hook(lambda m, a: fired.append(1))
    try:
        before = H.hook_count(model)
        h = ivra.attach(model, layer=LAYER, lam=0.5, position=position)
        during = H.hook_count(model)
        assert during > before and h.attached
        assert during - before == len(h._hooks)
        changed = H.logits(model, inputs)
        assert not torch.equal(changed, base)
        h.detach()
        assert H.hook_count(model) == before and not h.attached
        h.detach()  # twice is fine
        assert H.hook_count(model) == before
        fired.clear()
        assert torch.equal(H.logits(model, inputs), base)
        assert fired == [1]  # the user's own hook, registered before attach, still fires
    finally:
        user.remove()


def test_exception_inside_with_block_removes_hooks(H):
    model, inputs = H.build("llava")
    before = H.hook_count(model)
    with pytest.raises(KeyError, match="boom"):
        with ivra.attach(model, layer=LAYER, lam=0.5):
            assert H.hook_count(model) > before
            raise KeyError("boom")
    assert H.hook_count(model) == before


def test_error_inside_forward_leaves_no_stale_state(H):
    """An IVRAError raised from inside the model's forward leaves no stale keys for the next call."""
    model, inputs = H.build("llava")
    base = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        model.model.get_image_features(pixel_values=inputs["pixel_values"])  # keys captured, then ...
        with pytest.raises(IVRAError):
            # ... a text-only call: no visual tokens to map them to
            model(input_ids=inputs["input_ids"][:, :3])
        with_ivra = H.logits(model, inputs)  # the next call works from its own vision pass
    assert h.stats.calls == 1
    assert not torch.equal(with_ivra, base)
    assert torch.equal(H.logits(model, inputs), base)


def test_failed_attach_leaves_no_hooks(H):
    model, _ = H.build("llava")
    before = H.hook_count(model)
    with pytest.raises(IVRAError):
        ivra.attach(model, layer=99)
    with pytest.raises(IVRAError):
        ivra.attach(model, layer=1, affinity_layer=7)
    assert H.hook_count(model) == before


def test_two_handles_stack_and_detach_independently(H):
    model, inputs = H.build("llava")
    base = H.logits(model, inputs)
    before = H.hook_count(model)
    h1 = ivra.attach(model, layer=1, lam=0.3)
    one = H.logits(model, inputs)
    h2 = ivra.attach(model, layer=3, lam=0.3)
    both = H.logits(model, inputs)
    assert not torch.equal(one, both)
    h1.detach()
    only2 = H.logits(model, inputs)
    h2.detach()
    assert H.hook_count(model) == before
    with ivra.attach(model, layer=3, lam=0.3):
        assert torch.equal(H.logits(model, inputs), only2)
    assert torch.equal(H.logits(model, inputs), base)


# -- 9: errors --------------------------------------------------------------------------------------------------------
def test_layer_out_of_range_message(H):
    model, _ = H.build("llava")
    with pytest.raises(IVRAError, match=r"layer 99 is out of range.*has 4.*-4\.\.3"):
        ivra.attach(model, layer=99)
    with pytest.raises(IVRAError, match=r"layer -5"):
        ivra.attach(model, layer=-5)
    with pytest.raises(IVRAError, match=r"affinity_layer 3 is out of range.*has 3"):
        ivra.attach(model, layer=1, affinity_layer=3)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"lam": 1.5}, "1.5"),
        ({"lam": -0.1}, "-0.1"),
        ({"affinity_mode": "dot"}, "'dot'"),
        ({"position": "middle"}, "'middle'"),
        ({"affinity_feature": "token"}, "'token'"),
    ],
)
def test_bad_settings_name_the_value(H, overrides, needle):
    model, _ = H.build("llava")
    before = H.hook_count(model)
    with pytest.raises(ValueError, match=needle):
        ivra.attach(model, layer=1, **overrides)
    assert H.hook_count(model) == before


def test_unknown_model_class():
    with pytest.raises(IVRAError, match=r"unknown model Module\b"):
        ivra.attach(torch.nn.Module(), layer=0)
    with pytest.raises(IVRAError, match=r"unknown model Sequential.*llava"):
        ivra.attach(torch.nn.Sequential(torch.nn.Linear(2, 2)), layer=0)
    with pytest.raises(IVRAError, match=r"unknown adapter 'nope'"):
        ivra.attach(torch.nn.Linear(2, 2), layer=0, adapter="nope")


def _embeds_and_spans(model, inputs):
    """Embeddings of the prompt with the image features spliced in (done by us, LLaRA-style), and the spans."""
    ids = inputs["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    feats = (
        torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, embeds.shape[-1])
    )
    vis = ids == IMAGE_TOKEN
    embeds = embeds.clone()
    embeds[vis] = feats.to(embeds.dtype)
    spans = []
    for b in range(ids.shape[0]):
        pos = vis[b].nonzero().squeeze(1).tolist()
        runs, start = [], pos[0]
        for p, q in zip(pos, pos[1:] + [None]):
            if q != p + 1:
                runs.append((start, p + 1))
                start = q
        spans.append(runs)
    return embeds, spans, vis


def test_token_count_mismatch_message(H):
    model, inputs = H.build("llava")
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        embeds, spans, vis = _embeds_and_spans(model, inputs)  # runs the vision tower once: keys captured
        bad = [[(s, e - 1) for s, e in sp] for sp in spans]  # one token short per image
        h.set_visual_positions(bad)
        with pytest.raises(IVRAError, match=r"token count mismatch.*30 visual tokens.*32.*\[16, 16\]"):
            model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])


def test_token_count_mismatch_non_strict_is_a_no_op(H):
    model, inputs = H.build("llava")
    embeds, spans, vis = _embeds_and_spans(model, inputs)
    base = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    with ivra.attach(model, layer=LAYER, lam=0.5, strict=False) as h:
        model.model.get_image_features(pixel_values=inputs["pixel_values"])
        h.set_visual_positions([[(s, e - 1) for s, e in sp] for sp in spans])
        out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(out, base) and h.stats.calls == 0


def test_position_mask_shape_mismatch(H):
    model, inputs = H.build("llava")
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        embeds, spans, vis = _embeds_and_spans(model, inputs)
        h.set_visual_positions(torch.cat([vis, vis[:, :1]], 1))  # one column too many
        with pytest.raises(IVRAError, match=r"mask \(2, 26\) does not match the hidden states \(2, 25\)"):
            model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])


def test_keys_not_captured_message_and_non_strict(H):
    model, inputs = H.build("llava")
    embeds, spans, vis = _embeds_and_spans(model, inputs)  # computed before attach: no keys will be captured
    base = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        h.set_visual_positions(spans)
        with pytest.raises(
            IVRAError, match=r"32 visual tokens found but no keys were captured.*vision layer 2"
        ):
            model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    with ivra.attach(model, layer=LAYER, lam=0.5, strict=False) as h:
        h.set_visual_positions(spans)
        out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(out, base) and h.stats.calls == 0


def test_inputs_embeds_without_positions_after_vision_pass(H):
    model, inputs = H.build("llava")
    embeds, spans, vis = _embeds_and_spans(model, inputs)
    base = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        model.model.get_image_features(pixel_values=inputs["pixel_values"])
        with pytest.raises(IVRAError, match=r"no visual token positions.*set_visual_positions"):
            model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    with ivra.attach(model, layer=LAYER, lam=0.5, strict=False) as h:
        model.model.get_image_features(pixel_values=inputs["pixel_values"])
        out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
        assert torch.equal(out, base) and h.stats.calls == 0
        # nothing leaks into the next call: a plain text call is skipped, not an error
        model(input_ids=inputs["input_ids"][:, :3])
        assert h.stats.calls == 0 and h.stats.skipped == 1


def test_text_only_prefill_raises_under_strict_and_is_counted_otherwise(H):
    model, inputs = H.build("llava")
    ids = inputs["input_ids"][:, :3]
    base = model(input_ids=ids).logits
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        with pytest.raises(IVRAError, match=r"prefill ran with IVRA attached but it had no visual tokens"):
            model(input_ids=ids)
        H.logits(model, inputs)  # the handle works normally afterwards
        assert h.stats.calls == 1
    with ivra.attach(model, layer=LAYER, lam=0.5, strict=False) as h:
        assert torch.equal(model(input_ids=ids).logits, base)
    assert (h.stats.calls, h.stats.skipped, h.stats.text_only_prefills) == (0, 1, 1)


def test_set_visual_positions_bad_tensor(H):
    model, _ = H.build("llava")
    with ivra.attach(model, layer=1) as h:
        with pytest.raises(ValueError, match=r"torch.int64 \(2, 3\)"):
            h.set_visual_positions(torch.zeros(2, 3, dtype=torch.long))


# -- 10: the inputs_embeds path (LLaRA-style) -------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["spans", "mask"])
def test_inputs_embeds_path_equals_input_ids_path(H, form):
    model, inputs = H.build("llava")
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        ref = H.logits(model, inputs)
        embeds, spans, vis = _embeds_and_spans(model, inputs)  # runs the vision tower: the hooks capture keys
        h.set_visual_positions(spans if form == "spans" else vis)
        out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    assert h.stats.calls == 2
    assert torch.allclose(out, ref, atol=1e-5)
    base = H.logits(model, inputs)
    assert not torch.allclose(out, base, atol=1e-4)


def test_positions_are_consumed_by_one_forward(H):
    """set_visual_positions applies to the next forward only: later calls find their own positions."""
    model, inputs = H.build("llava")
    ids = inputs["input_ids"][:, :3]
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        ref = H.logits(model, inputs)
        embeds, spans, vis = _embeds_and_spans(model, inputs)
        h.set_visual_positions(spans)
        model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
        with pytest.raises(IVRAError, match="no visual tokens"):  # text only, shorter: not stale positions
            model(input_ids=ids)
        assert (h.stats.calls, h.stats.skipped) == (2, 1)
        assert torch.equal(H.logits(model, inputs), ref)


# -- 13: positions post_attn and post -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_position_post(H, family):
    model, inputs = H.build(family)
    layer = H.lm_layers(family, model)[LAYER]
    base = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.0, position="post"):
        assert torch.equal(H.logits(model, inputs), base)
    with H.Recorder(layer, output=True) as rec0:
        model(**inputs)
    with (
        ivra.attach(model, layer=LAYER, lam=0.5, position="post") as h,
        H.Recorder(layer, output=True) as rec1,
    ):
        out = H.logits(model, inputs)
    assert h.stats.calls == 1
    assert not torch.allclose(out, base, atol=1e-4)
    assert torch.equal(rec1.inputs[0], rec0.inputs[0])  # layer L's input is untouched
    vis = H.visual_mask(inputs)
    o0, o1 = rec0.outputs[0], rec1.outputs[0]
    assert torch.equal(o1[~vis], o0[~vis])
    blocks = H.independent_blocks(family, model, inputs)
    expected = H.expected_layer_input(o0, vis, blocks, 0.5)  # the formula applied to layer L's output
    assert torch.allclose(o1.double(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_position_post_attn(H, family):
    model, inputs = H.build(family)
    layer = H.lm_layers(family, model)[LAYER]
    base = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.0, position="post_attn") as h:
        assert torch.allclose(H.logits(model, inputs), base, atol=1e-5)  # re-adds the residual: not bitwise
    assert h.stats.calls == 1
    attn_mod = layer.self_attn
    with H.Recorder(layer, output=True, attention=attn_mod) as rec0:
        model(**inputs)
    with (
        ivra.attach(model, layer=LAYER, lam=0.5, position="post_attn") as h,
        H.Recorder(layer, output=True, attention=attn_mod) as rec1,
    ):
        out = H.logits(model, inputs)
    assert h.stats.calls == 1
    assert not torch.allclose(out, base, atol=1e-4)
    vis = H.visual_mask(inputs)
    x0, x1 = rec0.inputs[0], rec1.inputs[0]
    assert torch.equal(x1, x0)  # the layer's input is untouched
    a0, a1 = rec0.attn[0], rec1.attn[0]
    assert torch.equal(a1[~vis], a0[~vis])  # text positions: attention output untouched
    # the residual stream after attention (input + attention output) is pooled at the visual positions
    blocks = H.independent_blocks(family, model, inputs)
    expected = H.expected_layer_input(x0 + a0, vis, blocks, 0.5)
    assert torch.allclose((x1 + a1).double(), expected, atol=1e-5, rtol=1e-4)
    o0, o1 = rec0.outputs[0], rec1.outputs[0]
    changed = (o1 != o0).any(-1)
    assert not (changed & ~vis).any() and changed[vis].any()  # only visual tokens change in layer L's output


# -- 14: engine guarantees: per-sample arms, non-finite values, keys that pile up ----------------------------------
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "idefics3"])
def test_active_samples_and_two_handles_give_each_row_its_arm(H, family):
    model, inputs = tiny.build(family, batch=3, images_per_sample=2)
    base = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.5):
        all_a = H.logits(model, inputs)
    with ivra.attach(model, layer=1, lam=0.3):
        all_b = H.logits(model, inputs)
    with ivra.attach(model, layer=LAYER, lam=0.5) as a, ivra.attach(model, layer=1, lam=0.3) as b:
        a.set_active_samples([True, False, False])
        b.set_active_samples(torch.tensor([False, False, True]))
        mixed = H.logits(model, inputs)
    assert torch.equal(mixed[1], base[1])  # the baseline row owned by no handle is bit-identical
    assert torch.allclose(mixed[0], all_a[0], atol=1e-5) and torch.allclose(mixed[2], all_b[2], atol=1e-5)
    assert not torch.allclose(mixed[0], base[0], atol=1e-4)
    with pytest.raises(ValueError, match=r"1-D bool sequence .* torch.int64 \(3,\)"):
        a.set_active_samples([1, 0, 1])


def test_nan_key_names_image_sample_and_layer(H):
    model, inputs = H.build("llava", images_per_sample=2)
    inputs = dict(inputs)
    pv = inputs["pixel_values"].clone()
    pv[3, :, :8, :8] = float("nan")  # sample 1's second image
    inputs["pixel_values"] = pv
    with ivra.attach(model, layer=LAYER, lam=0.5):
        with pytest.raises(IVRAError, match=r"non-finite keys .* image 1 of sample 1 from vision layer 2"):
            model(**inputs)


def test_nan_hidden_state_names_image_and_layer(H):
    model, inputs = H.build("llava")
    layer = H.lm_layers("llava", model)[LAYER - 1]

    def poison(module, args, kwargs, out):
        hidden = out[0] if isinstance(out, tuple) else out
        vis = H.visual_mask(inputs)
        hidden[1][vis[1]] = float("nan")  # every visual token of sample 1, before layer LAYER

    hook = layer.register_forward_hook(poison, with_kwargs=True)
    try:
        with ivra.attach(model, layer=LAYER, lam=0.5):
            with pytest.raises(
                IVRAError, match=r"non-finite hidden states .* image 0 of sample 1 at language-model layer 2"
            ):
                model(**inputs)
    finally:
        hook.remove()


def test_vision_keys_that_are_never_used_raise_under_strict(H):
    """Keys captured in a pass whose layer-L hook never fired (the layer loop bypasses the hooked module):
    strict raises at the end of that pass; non-strict counts it."""
    model, inputs = H.build("llava")
    for strict in (True, False):
        with ivra.attach(model, layer=LAYER, lam=0.5, strict=strict) as h:
            layers = H.lm_layers("llava", model)
            real = layers[LAYER]
            layers[LAYER] = _Bypass(real)
            try:
                if strict:
                    with pytest.raises(IVRAError, match="the vision encoder ran but IVRA never edited"):
                        model(**inputs)
                else:
                    model(**inputs)
                    assert h.stats.unused_vision == 1 and h.stats.calls == 0
            finally:
                layers[LAYER] = real


class _Bypass(torch.nn.Module):
    """Runs a layer's forward without calling the layer module itself (like a hand-written layer loop)."""

    def __init__(self, layer):
        super().__init__()
        self.__dict__["inner"] = layer  # not registered as a submodule

    def forward(self, *args, **kwargs):
        return self.inner.forward(*args, **kwargs)
