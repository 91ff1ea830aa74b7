"""IVRA on LLaRA: llava-torch's real LlavaLlamaForCausalLM (tiny random CLIP + Llama), LLaVA's own splice.

Expectations are computed independently of ivra's engine: keys from CLIP's own layers, spans from the
placeholder positions and the known splice rule, the pooling formula as a float64 loop.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from llava.constants import IMAGE_TOKEN_INDEX as IMG
from llava.mm_utils import process_images
from PIL import Image

import ivra
from ivra.adapters import IVRAError, detect
from ivra.adapters.llara import LlaraAdapter
from ivra.rebuilt.llara import build_tiny, write_tiny_clip

LAYER = 2
T = 64  # 8 x 8 patches at 112 px, patch 14


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(str(tmp_path_factory.mktemp("clip")))


@cache
def _model(clip_dir, **kw):
    return build_tiny(clip_dir, **kw)


@pytest.fixture
def get(clip_dir):
    def make(**kw):
        model = _model(clip_dir, **kw)
        assert hooks(model) == 0
        return model

    return make


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def frames(n, seed, size=(96, 48)):
    """Random VIMA-like frames (W x H = 2:1), as PIL images."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def pixels(model, images):
    return process_images(images, model.get_vision_tower().image_processor, model.config)


def prompt(text_lens, placeholders, seed):
    """Ids: text pieces of random ids separated by the given placeholder ids (BOS first)."""
    g = torch.Generator().manual_seed(seed)
    ids = [1]
    for i, n in enumerate(text_lens):
        ids += torch.randint(3, 500, (n,), generator=g).tolist()
        if i < len(placeholders):
            ids.append(placeholders[i])
    return ids


def batch_ids(rows, side="right"):
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(length - len(r), length) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = torch.tensor(r), 1
    return ids, mask


def layer_inputs(model, run, layer=LAYER):
    seen = []
    h = (
        model.get_model()
        .layers[layer]
        .register_forward_pre_hook(
            lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).clone()), with_kwargs=True
        )
    )
    try:
        run()
    finally:
        h.remove()
    return seen


def before_after(model, run, config, adapter=None, layer=LAYER):
    """Inputs of LM layer ``layer`` per call, before and after IVRA's pre-hook (spies registered around it)."""
    before, after = [], []
    target = model.get_model().layers[layer]

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


def clip_keys(model, px):
    """k_proj of CLIP layers[-1] on hidden_states[-2] (what LLaVA projects), CLS dropped: (N, T, Dk)."""
    clip = model.get_vision_tower().vision_tower
    out = clip(px, output_hidden_states=True)
    layer = clip.vision_model.encoder.layers[-1]
    return layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-2]))[:, 1:]


def naive_pool(tokens, keys, lam, keep=None):
    k = keys.double()
    k = k / k.norm(dim=-1, keepdim=True)
    A = k @ k.T
    v = tokens.double()
    out = v.clone()
    idx = range(A.shape[0]) if keep is None else keep.nonzero().squeeze(1).tolist()
    for i in idx:
        row = A[i].clone()
        if keep is not None:
            row[~keep] = 0
        if float(row.sum()) < 1.0:
            row = row.clamp(min=0)
        out[i] = (1 - lam) * v[i] + lam * (row[:, None] * v).sum(0) / row.sum()
    return out


def test_detected_and_default_layer(get):
    model = get()
    a = detect(model)
    assert a.name == "llara" and a.padding == "keep"
    with ivra.attach(model, layer=LAYER) as h:
        assert h.affinity_layer == len(model.get_vision_tower().vision_tower.vision_model.encoder.layers) - 1


def test_generate_edits_exactly_each_image_once_with_its_own_keys(get):
    """Two images per sample (LLaVA's -200, consumed in image order), batch of 2, left padding, generate."""
    model = get(padding_side="left")
    imgs = frames(4, seed=0)
    px = pixels(model, imgs)
    rows = [prompt([3, 4, 2], [IMG, IMG], seed=1), prompt([5, 2, 6], [IMG, IMG], seed=2)]
    ids, mask = batch_ids(rows, side="left")
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    run = lambda: model.generate(ids, images=px, attention_mask=mask, **gen)  # noqa: E731
    base, got, h = before_after(model, run, ivra.IVRAConfig(layer=LAYER, lam=0.5))
    assert len(got) == 4 and h.stats.calls == 1 and h.stats.images == 4 and h.stats.tokens == 4 * T
    for a, b in zip(got[1:], base[1:]):
        assert a.shape[1] == 1 and torch.equal(a, b)  # decode steps untouched
    keys = clip_keys(model, px)
    seq = got[0].shape[1]
    expected = base[0].double().clone()
    visual = torch.zeros(2, seq, dtype=torch.bool)
    for b, r in enumerate(rows):
        start = seq - (len(r) - 2 + 2 * T)  # left padded: the spliced sequence ends at seq
        places = [i for i, t in enumerate(r) if t == IMG]
        for j, p in enumerate(
            places
        ):  # placeholder j of sample b holds image 2b + j; text before it shifts it
            s = start + p + j * (T - 1)
            visual[b, s : s + T] = True
            expected[b, s : s + T] = naive_pool(base[0][b, s : s + T], keys[2 * b + j], 0.5)
    changed = (got[0] != base[0]).any(-1)
    assert torch.equal(changed, visual)
    assert torch.allclose(got[0].double(), expected, atol=1e-5, rtol=1e-4)


def test_llara_image_tags_take_their_own_sample_images_in_text_order(get):
    """LLaRA's <imageK> (-200-K): the text names image 1 before image 0; spans are found at splice time."""
    model = get(fork=True)
    imgs = frames(4, seed=3)
    px = pixels(model, imgs).view(2, 2, 3, 112, 112)
    rows = [prompt([3, 4, 2], [IMG - 1, IMG - 0], seed=4), prompt([2, 3, 3], [IMG - 0, IMG - 1], seed=5)]
    ids, mask = batch_ids(rows)
    base = layer_inputs(model, lambda: model(ids, images=px, attention_mask=mask))
    with ivra.attach(model, layer=LAYER, lam=0.5) as h:
        got = layer_inputs(model, lambda: model(ids, images=px, attention_mask=mask))
    assert h.stats.images == 4
    keys = clip_keys(model, px.flatten(0, 1)).view(2, 2, T, -1)
    for b, r in enumerate(rows):
        places = [(i, IMG - t) for i, t in enumerate(r) if t <= IMG]
        for j, (p, k) in enumerate(places):
            s = p + j * (T - 1)
            expected = naive_pool(base[0][b, s : s + T], keys[b, k], 0.5)
            assert torch.allclose(got[0][b, s : s + T].double(), expected, atol=1e-5, rtol=1e-4)
    # the wrong pairing (text order = image order) would differ
    p = [i for i, t in enumerate(rows[0]) if t <= IMG][0]
    wrong = naive_pool(base[0][0, p : p + T], keys[0, 0], 0.5)
    assert not torch.allclose(got[0][0, p : p + T].double(), wrong, atol=1e-4)


def test_lam_zero_bit_identical_and_detach_restores(get):
    model = get()
    px = pixels(model, frames(2, seed=6))
    ids, mask = batch_ids([prompt([4, 5], [IMG], seed=7), prompt([3, 6], [IMG], seed=8)])
    gen = dict(
        max_new_tokens=4, min_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    before = model(ids, images=px, attention_mask=mask).logits
    before_gen = model.generate(ids, images=px, attention_mask=mask, **gen)
    n = hooks(model)
    with ivra.attach(model, layer=LAYER, lam=0.0):
        assert torch.equal(model(ids, images=px, attention_mask=mask).logits, before)
        zero = model.generate(ids, images=px, attention_mask=mask, **gen)
    assert torch.equal(zero.sequences, before_gen.sequences)
    assert all(torch.equal(a, b) for a, b in zip(zero.scores, before_gen.scores))
    h = ivra.attach(model, layer=LAYER, lam=0.8)
    assert not torch.allclose(model(ids, images=px, attention_mask=mask).logits, before, atol=1e-4)
    h.detach()
    assert hooks(model) == n and torch.equal(model(ids, images=px, attention_mask=mask).logits, before)


def test_batch_equals_samples_alone(get):
    model = get()
    px = pixels(model, frames(4, seed=9))
    rows = [prompt([3, 4, 2], [IMG, IMG], seed=10), prompt([5, 2, 6], [IMG, IMG], seed=11)]
    ids, mask = batch_ids(rows)
    with ivra.attach(model, layer=LAYER, lam=0.6):
        batch = model(ids, images=px, attention_mask=mask).logits
        alone = [
            model(
                torch.tensor([r]), images=px[2 * b : 2 * b + 2], attention_mask=torch.ones(1, len(r))
            ).logits
            for b, r in enumerate(rows)
        ]
    for b in range(2):
        n = alone[b].shape[1]
        assert torch.allclose(batch[b, :n], alone[b][0], atol=1e-5)


def test_one_vision_pass_per_step(get):
    model = get()
    px = pixels(model, frames(2, seed=12))
    ids, mask = batch_ids([prompt([4, 5], [IMG], seed=13), prompt([3, 6], [IMG], seed=14)])
    clip = model.get_vision_tower().vision_tower
    calls = []
    hd = clip.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with ivra.attach(model, layer=LAYER, lam=0.3) as h:
            for _ in range(3):
                model.generate(ids, images=px, attention_mask=mask, max_new_tokens=3, do_sample=False)
    finally:
        hd.remove()
    assert len(calls) == 3 and h.stats.calls == 3 and h.stats.vision_captures == 3


@pytest.mark.parametrize("wide", [True, False])
def test_padding_patches_left_out_of_the_affinity(get, wide):
    """padding="drop": the letterbox rows (wide frames) or columns (tall frames: non-consecutive tokens), 2 of 8 on
    each side, are neither pooled nor pool anything."""
    model = get()
    size = (112, 56) if wide else (56, 112)
    imgs = frames(1, seed=15, size=size)  # letterboxed to 112x112: 28 px on both sides are padding
    px = pixels(model, imgs)
    ids, mask = batch_ids([prompt([3, 4], [IMG], seed=16)])
    base = layer_inputs(model, lambda: model(ids, images=px, attention_mask=mask))[0]
    adapter = LlaraAdapter(padding="drop")
    with ivra.attach(model, ivra.IVRAConfig(layer=LAYER, lam=0.5), adapter=adapter) as h:
        got = layer_inputs(model, lambda: model(ids, images=px, attention_mask=mask))[0]
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[:2], keep[-2:] = False, False  # 28 px = 2 patch rows of 14 px at the top and at the bottom
    keep = keep if wide else keep.T
    keep = keep.flatten()
    assert h.stats.tokens == int(keep.sum()) == 32
    s = 1 + 3
    keys = clip_keys(model, px)[0]
    expected = naive_pool(base[0, s : s + T], keys, 0.5, keep=keep)
    assert torch.allclose(got[0, s : s + T].double(), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(got[0, s : s + T][~keep], base[0, s : s + T][~keep])
    with ivra.attach(model, layer=LAYER, lam=0.5) as h2:  # default keeps them all
        model(ids, images=px, attention_mask=mask)
    assert h2.stats.tokens == T


def test_truncated_image_is_a_clear_error(get, clip_dir):
    model = build_tiny(clip_dir)
    model.config.tokenizer_model_max_length = 20  # LLaVA truncates the spliced sequence: the image is cut
    px = pixels(model, frames(1, seed=17))
    ids, mask = batch_ids([prompt([3, 4], [IMG], seed=18)])
    with (
        ivra.attach(model, layer=LAYER) as h,
        pytest.raises(IVRAError, match="not found in the inputs_embeds"),
    ):
        model(ids, images=px, attention_mask=mask)
    assert not h.attached
