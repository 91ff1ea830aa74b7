"""Adapters: the patch -> token mapping of every family against independent computations, and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ivra
from ivra import IVRAError, adapters
from ivra.adapters import Adapter, detect, get, list_adapters, register

FAMILIES = ("llava", "paligemma", "idefics3", "smolvlm", "qwen2_5_vl", "florence2")


def _adapter_blocks(model, inputs, **cfg):
    """The ImageBlocks the engine got from the adapter during one real forward (lam=0: nothing changes)."""
    got = []
    with ivra.attach(model, layer=1, lam=0.0, **cfg) as h:
        orig = h.adapter.image_blocks

        def spy(m, records):
            blocks = orig(m, records)
            got.append(blocks)
            return blocks

        h.adapter.image_blocks = spy
        model(**inputs)
    assert len(got) == 1
    return got[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_and_names(H, family):
    model, _ = H.build(family)
    a = detect(model)
    assert a.name == family
    assert len(a.lm_layers(model)) == len(H.lm_layers(family, model))
    assert a.lm_layers(model)[0] is H.lm_layers(family, model)[0]
    assert a.embedding(model) is model.get_input_embeddings()
    assert a.visual_token_ids(model) == [ivra.tiny.IMAGE_TOKEN]


@pytest.mark.parametrize("family", FAMILIES)
def test_default_keys_match_independent(H, family):
    """Default affinity feature (keys of the documented layer), mapped to tokens, per image, in LM order."""
    model, inputs = H.build(family)
    blocks = _adapter_blocks(model, inputs)
    ref = H.independent_blocks(family, model, inputs)
    assert len(blocks) == len(ref)
    for blk, (k, skip) in zip(blocks, ref):
        assert blk.keys.shape == k.shape
        assert torch.allclose(blk.keys, k, atol=1e-5)
        assert blk.skip_before == skip and blk.skip_after == 0


def test_llava_default_affinity_layer_sees_projected_features(H):
    """vision_feature_layer=-2: the default layer's input is exactly hidden_states[-2], what LLaVA projects."""
    model, inputs = H.build("llava")
    a = detect(model)
    n = len(a.vision_layers(model))
    assert a.default_affinity_layer(model) == n - 1
    blocks = _adapter_blocks(model, inputs, affinity_feature="hidden")
    hs = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    projected = hs[model.config.vision_feature_layer][:, 1:]
    assert torch.equal(torch.stack([b.keys for b in blocks]), projected)


def test_qwen_hidden_layer0_is_patch_embed_in_original_order(H):
    """affinity_feature=hidden, affinity_layer=0: patch_embed(pixel_values) in the ORIGINAL order, averaged over each
    4 consecutive rows, split per image: the window permutation inside the tower is undone."""
    model, inputs = H.build("qwen2_5_vl")
    blocks = _adapter_blocks(model, inputs, affinity_feature="hidden", affinity_layer=0)
    emb = model.model.visual.patch_embed(inputs["pixel_values"])
    per_token = emb.reshape(-1, 4, emb.shape[-1]).mean(1)
    sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    ref = per_token.split(sizes)
    assert [b.keys.shape[0] for b in blocks] == sizes == [24, 24]
    for blk, r in zip(blocks, ref):
        assert torch.allclose(blk.keys, r, atol=1e-6)
    # the tower really permutes (otherwise this test would prove nothing)
    _, perm = H.qwen_unit_order(model, inputs)
    assert not torch.equal(perm, torch.arange(len(perm)))


def test_qwen_two_images_of_different_sizes(H):
    """Two images with different grids in one sample: per-image split and un-permutation still line up."""
    model, inputs = H.build("qwen2_5_vl", batch=1)
    g = torch.Generator().manual_seed(3)
    grids = [(1, 8, 12), (1, 4, 8)]
    n = [t * h * w // 4 for t, h, w in grids]
    ids = torch.cat(
        [
            torch.randint(1, 100, (3,), generator=g),
            torch.tensor([122] + [120] * n[0] + [123]),
            torch.randint(1, 100, (2,), generator=g),
            torch.tensor([122] + [120] * n[1] + [123]),
            torch.randint(1, 100, (4,), generator=g),
        ]
    )[None]
    pixel = torch.randn(sum(t * h * w for t, h, w in grids), 96, generator=g)
    two = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixel,
        "image_grid_thw": torch.tensor(grids),
    }
    blocks = _adapter_blocks(model, two)
    ref = H.qwen_keys(model, two)
    assert [b.keys.shape[0] for b in blocks] == n
    for blk, r in zip(blocks, ref):
        assert torch.allclose(blk.keys, r, atol=1e-5)


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_idefics_tokens_are_spatial_block_means(H, family):
    """Each LM token's key is the mean of the keys of an s x s block of the raster patch grid (h/s, s, w/s, s, D)."""
    model, inputs = H.build(family)
    blocks = _adapter_blocks(model, inputs, affinity_feature="hidden")
    # the input of the last encoder layer, captured with our own hook (real images only)
    layer = model.model.vision_model.encoder.layers[-1]
    store = []
    hk = layer.register_forward_pre_hook(
        lambda m, a, kw: store.append(a[0] if a else kw["hidden_states"]), with_kwargs=True
    )
    try:
        model(**inputs)
    finally:
        hk.remove()
    x = store[0]
    assert x.shape[:2] == (3, 16)  # 2 + 1 real images (the padding image is dropped), 4 x 4 patches
    s = model.config.scale_factor
    ref = x.reshape(3, 4 // s, s, 4 // s, s, x.shape[-1]).mean(dim=(2, 4)).reshape(3, 4, -1)
    assert len(blocks) == 3
    for blk, r in zip(blocks, ref):
        assert torch.allclose(blk.keys, r, atol=1e-6)
    # a plain consecutive grouping would be wrong (guards against a mapping that ignores the 2-D layout)
    wrong = x.reshape(3, 4, 4, -1).mean(2)
    assert not torch.allclose(torch.stack([b.keys for b in blocks]), wrong, atol=1e-3)


def test_florence2_keys_are_raster_qkv_and_global_token_first(H):
    """keys == window_attn.qkv(x)[..., C:2C] of the raster input x of the last stage's window attention (padding
    and window partition undone); the image's global token (first) is skipped."""
    model, inputs = H.build("florence2")
    blocks = _adapter_blocks(model, inputs)
    attn = model.model.vision_tower.blocks[-1][-1].spatial_block.window_attn
    store = []
    hk = attn.register_forward_pre_hook(
        lambda m, a, kw: store.append(a[0] if a else kw["hidden_states"]), with_kwargs=True
    )
    try:
        model(**inputs)
    finally:
        hk.remove()
    x = store[0]
    b, hh, ww, c = x.shape
    assert (hh % attn.window_size, ww % attn.window_size) != (0, 0)  # padding really happens in this model
    ref = attn.qkv(x.reshape(b, hh * ww, c))[..., c : 2 * c]
    assert len(blocks) == b
    for blk, r in zip(blocks, ref):
        assert torch.allclose(blk.keys, r, atol=1e-6)
        assert (blk.skip_before, blk.skip_after) == (1, 0)
        assert blk.n_positions == hh * ww + 1
    # where the global token really is: the projector's input token 0 is the mean of the patch tokens
    proj_in = []
    hk = model.model.multi_modal_projector.image_projection.register_forward_pre_hook(
        lambda m, a: proj_in.append(a[0])
    )
    try:
        model(**inputs)
    finally:
        hk.remove()
    f = proj_in[0]
    assert f.shape[1] == hh * ww + 1
    assert torch.allclose(f[:, 0], f[:, 1:].mean(1), atol=1e-5)
    # and with IVRA, that first visual position is bit-identical at layer L while the patches change
    layer = H.lm_layers("florence2", model)[1]
    with H.Recorder(layer) as r0:
        model(**inputs)
    with ivra.attach(model, layer=1, lam=0.8), H.Recorder(layer) as r1:
        model(**inputs)
    first = (inputs["input_ids"] == ivra.tiny.IMAGE_TOKEN).int().argmax(1)
    for i in range(b):
        assert torch.equal(r1.inputs[0][i, first[i]], r0.inputs[0][i, first[i]])
        assert not torch.equal(
            r1.inputs[0][i, first[i] + 1 : first[i] + 1 + hh * ww],
            r0.inputs[0][i, first[i] + 1 : first[i] + 1 + hh * ww],
        )


@pytest.mark.parametrize("feature", ["query", "value"])
def test_llava_query_value_features(H, feature):
    model, inputs = H.build("llava")
    blocks = _adapter_blocks(model, inputs, affinity_feature=feature)
    hs = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    lyr = model.model.vision_tower.encoder.layers[-1]
    proj = getattr(lyr.self_attn, {"query": "q_proj", "value": "v_proj"}[feature])
    ref = proj(lyr.layer_norm1(hs[-2]))[:, 1:]
    assert torch.allclose(torch.stack([b.keys for b in blocks]), ref, atol=1e-6)


def test_paligemma_affinity_layer_choice(H):
    model, inputs = H.build("paligemma")
    blocks = _adapter_blocks(model, inputs, affinity_layer=0, affinity_feature="hidden")
    hs = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    assert torch.equal(torch.stack([b.keys for b in blocks]), hs[0])
    blocks = _adapter_blocks(model, inputs, affinity_layer=-2, affinity_feature="hidden")
    assert torch.equal(torch.stack([b.keys for b in blocks]), hs[1])


# -- registry ----------------------------------------------------------------------------------------------------------
def test_list_adapters_has_the_six():
    assert set(FAMILIES) <= set(list_adapters())
    assert set(ivra.tiny.families()) == set(FAMILIES)  # a new tiny family must join these tests
    assert list_adapters() == sorted(list_adapters())


def test_get_unknown_lists_registered():
    with pytest.raises(IVRAError, match=r"unknown adapter 'nope'.*'florence2'.*'llava'.*'qwen2_5_vl'"):
        get("nope")
    assert get("llava").name == "llava"


class MyVLM(nn.Module):
    """A third-party model: an embedding, a 'vision' layer and two 'LM' layers."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.vision = nn.ModuleList([nn.Linear(4, 4)])
        self.lm = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.proj = nn.Linear(4, 8)
        self.config = type("C", (), {"image_token_id": 15})()

    def get_input_embeddings(self):
        return self.embed

    def forward(self, ids, patches):
        feats = self.proj(self.vision[0](patches))  # (B, n, 8)
        x = self.embed(ids).clone()
        x[ids == 15] = feats.reshape(-1, 8)
        for layer in self.lm:
            x = layer(x)
        return x


class MyVLMv2(MyVLM):
    pass


def test_third_party_adapter_register_and_detect(H):
    @register
    class MyAdapter(Adapter):
        name = "my_vlm_test"
        model_classes = ("MyVLM",)
        lm_layer_paths = ("lm",)
        vision_layer_paths = ("vision",)

        def capture_points(self, model, layer, feature):
            return [
                adapters.CapturePoint(model.vision[layer], "forward", lambda m, a, kw, out: {"keys": out})
            ]

    try:
        assert "my_vlm_test" in list_adapters()
        model = MyVLMv2().eval()  # detected through its base class' name
        assert isinstance(detect(model), MyAdapter)
        g = torch.Generator().manual_seed(0)
        ids = torch.tensor([[1, 15, 15, 15, 2], [3, 15, 15, 15, 4]])
        patches = torch.randn(2, 3, 4, generator=g)
        with H.Recorder(model.lm[1]) as r0:
            model(ids, patches)
        with ivra.attach(model, layer=1, lam=0.5) as h, H.Recorder(model.lm[1]) as r1:
            model(ids, patches)
        assert h.stats.calls == 1 and h.stats.images == 2
        keys = model.vision[0](patches)
        expected = H.expected_layer_input(r0.inputs[0], ids == 15, [(k, 0) for k in keys], 0.5)
        assert torch.allclose(r1.inputs[0].double(), expected, atol=1e-6)
    finally:
        adapters.base._REGISTRY.pop("my_vlm_test", None)
    assert "my_vlm_test" not in list_adapters()
    with pytest.raises(IVRAError, match="unknown model MyVLMv2"):
        detect(MyVLMv2())


def test_register_needs_a_name():
    with pytest.raises(ValueError, match="needs a non-empty `name`"):

        @register
        class Nameless(Adapter):
            pass


def test_paligemma_image_token_id_at_vocab_size(H):
    """pi0-style config: image token id == text vocab size. PaliGemma zeroes those ids before its embedding, so the
    visual positions must be read from the ids the model receives."""
    model, inputs = ivra.tiny.build("paligemma")  # a private instance: its config is changed below
    vocab = model.config.text_config.vocab_size
    model.config.image_token_id = vocab
    ids = inputs["input_ids"].clone()
    ids[ids == ivra.tiny.IMAGE_TOKEN] = vocab
    inputs["input_ids"] = ids
    vis = ids == vocab
    layer = H.lm_layers("paligemma", model)[2]
    with H.Recorder(layer) as r0:
        model(**inputs)
    with ivra.attach(model, layer=2, lam=0.5) as h, H.Recorder(layer) as r1:
        model(**inputs)
    assert h.stats.calls == 1 and h.stats.tokens == int(vis.sum())
    blocks = [(k, 0) for k in H._siglip_like_keys(model.model.vision_tower, inputs["pixel_values"])]
    expected = H.expected_layer_input(r0.inputs[0], vis, blocks, 0.5)
    assert torch.allclose(r1.inputs[0].double(), expected, atol=1e-5, rtol=1e-4)
    with ivra.attach(model, layer=2, lam=0.5) as h:
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert (h.stats.calls, h.stats.skipped) == (1, 2)


@pytest.mark.parametrize("feature", ["query", "key", "value", "hidden"])
def test_florence2_every_feature(H, feature):
    model, inputs = H.build("florence2")
    blocks = _adapter_blocks(model, inputs, affinity_feature=feature)
    attn = model.model.vision_tower.blocks[-1][-1].spatial_block.window_attn
    store = []
    hk = attn.register_forward_pre_hook(lambda m, a: store.append(a[0]))
    try:
        model(**inputs)
    finally:
        hk.remove()
    x = store[0]
    b, hh, ww, c = x.shape
    raster = x.reshape(b, hh * ww, c)
    if feature != "hidden":
        part = {"query": 0, "key": 1, "value": 2}[feature]
        raster = attn.qkv(raster)[..., part * c : (part + 1) * c]
    assert torch.allclose(torch.stack([blk.keys for blk in blocks]), raster, atol=1e-6)


@pytest.mark.parametrize("feature", ["query", "value", "hidden"])
def test_qwen_other_features_last_block(H, feature):
    model, inputs = H.build("qwen2_5_vl")
    blocks = _adapter_blocks(model, inputs, affinity_feature=feature)
    ref = H.qwen_keys(model, inputs, feature=feature, layer=-1)
    for blk, r in zip(blocks, ref, strict=True):
        assert torch.allclose(blk.keys, r, atol=1e-5)
