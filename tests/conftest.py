"""Shared helpers of the ivra correctness tests (exposed as the ``H`` fixture).

Everything here is computed *independently* of ivra's engine and adapters: keys are read with our own hooks or
recomputed from the model's submodules, and the pooling formula is a naive python loop in float64.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

try:
    import ivra  # noqa: F401
except ImportError:  # src layout, package not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ivra import tiny  # noqa: E402
from ivra.tiny import IMAGE_TOKEN  # noqa: E402

# tests/envs/<name> run in their own pinned environments (noxfile.py sets IVRA_ENV); the core suite skips them
collect_ignore_glob = [] if os.environ.get("IVRA_ENV") else ["envs/*"]

FAMILIES = ("llava", "paligemma", "idefics3", "smolvlm", "qwen2_5_vl", "florence2")
FLOOR = 1.0  # the documented cosine row floor (ivra.core docstring)


_OURS = {"test_core.py", "test_config.py", "test_engine.py", "test_adapters.py"}

# pytest-xdist (scripts/test.sh runs the core suite with `-n 2 --no-loadscope-reorder`): the scheduler below sends
# each test file to one worker as a whole, in file order (its module fixtures built once), except the doc blocks,
# one page at a time (a page's blocks share a namespace and a workspace, tests/docs_examples.py); files and pages
# start in collection order, and the longest files are collected first, so that no long file is left running alone
# at the end (per-test durations: `pytest --durations`, docs/development.md). xdist's own `--dist loadgroup` does not
# group under pytest 9 (it renames `item._nodeid`, which pytest 9 no longer reads), hence this scheduler.
_LONGEST_FIRST = (
    "test_docs.py",
    "test_libero_pro.py",
    "test_libero_lockstep.py",
    "test_libero.py",
    "test_executor.py",
    "test_libero_render.py",
    "test_flower.py",
    "test_libero_distribution.py",
)
_DOC_BLOCK = re.compile(r"tests/test_docs\.py::test_doc_block\[([^:\]]+)")
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: one thread each


def xdist_scope(nodeid: str) -> str:
    """The unit a worker runs as a whole: a doc page's blocks, or a test file."""
    page = _DOC_BLOCK.match(nodeid)
    return f"page:{page.group(1)}" if page else nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; the pinned environments run without xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileOrPageScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FileOrPageScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # (every worker collects, in the same order)
        rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


@pytest.fixture(autouse=True)
def _ivra_test_env(request):
    """For the ivra tests only (this conftest also covers tests/eval, tests/tabletop, ...): no autograd, and one
    torch thread (fastest for tiny models; avoids OpenMP spin-waiting against other jobs on a shared machine)."""
    if request.path.name not in _OURS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def H():
    # this module's helpers; not sys.modules["conftest"], which other conftest.py files of the tree may replace
    return SimpleNamespace(**globals())


# -- models ------------------------------------------------------------------------------------------------------------
@cache
def _cached(family, attn, dtype, kw):
    return tiny.build(family, attn=attn, dtype=dtype, **dict(kw))


def build(family, attn="eager", dtype=torch.float32, **kw):
    """A (cached) tiny model and a fresh shallow copy of its inputs. Tests never change weights; hooks are removed."""
    model, inputs = _cached(family, attn, dtype, tuple(sorted(kw.items())))
    assert foreign_hook_count(model) == 0, "a previous test leaked hooks"
    return model, dict(inputs)


def hook_count(model) -> int:
    """All forward and forward-pre hooks on all modules (transformers' own lazily installed ones included)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def foreign_hook_count(model) -> int:
    """Hooks not installed by transformers itself (it adds output-capturing hooks on first use and keeps them)."""
    return sum(
        1
        for m in model.modules()
        for f in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
        if not getattr(f, "__module__", "").startswith("transformers")
    )


def lm_layers(family, model):
    inner = model.model
    if family == "florence2":
        return inner.language_model.encoder.layers
    if family in ("idefics3", "smolvlm"):
        return inner.text_model.layers
    return inner.language_model.layers


def logits(model, inputs, **kw):
    return model(**inputs, **kw).logits


def hidden_states(out):
    hs = getattr(out, "hidden_states", None)
    return hs if hs is not None else out.encoder_hidden_states


def visual_mask(inputs):
    return inputs["input_ids"] == IMAGE_TOKEN


class Recorder:
    """Our own hooks on one LM layer: its input hidden states (pre-hook) and output (forward hook).

    Register it *after* ivra.attach: PyTorch runs hooks in registration order, so it sees IVRA's edit.
    """

    def __init__(self, layer, output=False, attention=None):
        self.inputs, self.outputs, self.attn = [], [], []
        self.handles = [layer.register_forward_pre_hook(self._pre, with_kwargs=True)]
        if output:
            self.handles.append(layer.register_forward_hook(self._post, with_kwargs=True))
        if attention is not None:
            self.handles.append(attention.register_forward_hook(self._attn, with_kwargs=True))

    def _pre(self, module, args, kwargs):
        self.inputs.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def _post(self, module, args, kwargs, out):
        self.outputs.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    def _attn(self, module, args, kwargs, out):
        self.attn.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    def remove(self):
        for h in self.handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# -- the formula, naively ----------------------------------------------------------------------------------------------
def naive_weights(keys, mode="cosine", temperature=0.1):
    """Row weights from keys (n, Dk) with a python loop over rows, float64."""
    k = keys.double()
    norms = [float(k[i].norm()) for i in range(k.shape[0])]
    kn = torch.stack([k[i] / norms[i] if norms[i] > 1e-6 else k[i] * 0 for i in range(k.shape[0])])
    A = kn @ kn.T
    n = A.shape[0]
    W = torch.zeros_like(A)
    for i in range(n):
        row = A[i]
        if mode == "softmax":
            e = torch.exp((row - row.max()) / temperature)
            W[i] = e / e.sum()
            continue
        s = float(row.sum())
        if mode == "relu" or s < FLOOR:
            row = row.clamp(min=0)
            s = float(row.sum())
        if s <= 1e-6:
            W[i, i] = 1.0
        else:
            W[i] = row / s
    return A, W


def naive_pool(tokens, keys, lam, mode="cosine", temperature=0.1):
    """(1-lam) v_i + lam sum_j W_ij v_j, python loop over rows, float64. tokens (n, D), keys (n, Dk)."""
    _, W = naive_weights(keys, mode, temperature)
    v = tokens.double()
    out = torch.empty_like(v)
    for i in range(v.shape[0]):
        acc = torch.zeros_like(v[i])
        for j in range(v.shape[0]):
            acc += W[i, j] * v[j]
        out[i] = (1 - lam) * v[i] + lam * acc
    return out


def expected_layer_input(h0, vis_mask, blocks, lam, mode="cosine"):
    """Apply the naive formula to the baseline hidden states h0 (B, S, D).

    ``blocks``: list of (keys (n, Dk), skip_before) in the order the images' tokens appear in the flattened (B*S)
    sequence of visual positions ``vis_mask``.
    """
    flat = h0.reshape(-1, h0.shape[-1]).double().clone()
    pos = vis_mask.reshape(-1).nonzero().squeeze(1).tolist()
    off = 0
    for keys, skip in blocks:
        idx = pos[off + skip : off + skip + keys.shape[0]]
        assert len(idx) == keys.shape[0]
        flat[idx] = naive_pool(flat[idx], keys, lam, mode)
        off += skip + keys.shape[0]
    assert off == len(pos), f"blocks cover {off} of {len(pos)} visual positions"
    return flat.reshape(h0.shape)


# -- independent keys per family ---------------------------------------------------------------------------------------
def _siglip_like_keys(tower, pixel_values):
    """keys of encoder.layers[-1] = k_proj(layer_norm1(hidden_states[-2])) from output_hidden_states."""
    out = tower(pixel_values, output_hidden_states=True)
    layer = (tower.vision_model if hasattr(tower, "vision_model") else tower).encoder.layers[-1]
    return layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-2]))


def _capture(module, fn, pre=False):
    store = []
    if pre:
        h = module.register_forward_pre_hook(lambda m, a, kw: store.append(fn(m, a, kw)), with_kwargs=True)
    else:
        h = module.register_forward_hook(lambda m, a, kw, o: store.append(fn(m, a, kw, o)), with_kwargs=True)
    return store, h


def block_mean(keys, h, w, s):
    """(n_img, h*w, D) raster patches -> (n_img, (h/s)*(w/s), D): mean over each s x s spatial block."""
    n, _, d = keys.shape
    return keys.reshape(n, h // s, s, w // s, s, d).mean(dim=(2, 4)).reshape(n, (h // s) * (w // s), d)


def independent_blocks(family, model, inputs):
    """Per-image keys, mapped to tokens, in LM order, computed without ivra: list of (keys (n, Dk), skip_before)."""
    inner = model.model
    if family == "llava":
        keys = _siglip_like_keys(inner.vision_tower, inputs["pixel_values"])[:, 1:]  # drop CLS
        return [(k, 0) for k in keys]
    if family == "paligemma":
        keys = _siglip_like_keys(inner.vision_tower, inputs["pixel_values"])
        return [(k, 0) for k in keys]
    if family in ("idefics3", "smolvlm"):
        proj = inner.vision_model.encoder.layers[-1].self_attn.k_proj
        store, h = _capture(proj, lambda m, a, kw, o: o.detach().clone())
        try:
            model(**inputs)
        finally:
            h.remove()
        (keys,) = store  # real images only
        s = model.config.scale_factor
        side = int(keys.shape[1] ** 0.5)
        return [(k, 0) for k in block_mean(keys, side, side, s)]
    if family == "qwen2_5_vl":
        return [(k, 0) for k in qwen_keys(model, inputs, feature="key", layer=-1)]
    if family == "florence2":
        return [(k, 1) for k in florence_keys(model, inputs)]  # the global token comes first and is skipped
    raise ValueError(family)


def qwen_unit_order(model, inputs):
    """The tower's window permutation found by matching rows: block 0 input (permuted) vs patch_embed (original)."""
    visual = model.model.visual
    emb = visual.patch_embed(inputs["pixel_values"])
    store, h = _capture(
        visual.blocks[0], lambda m, a, kw: (a[0] if a else kw["hidden_states"]).detach().clone(), pre=True
    )
    try:
        model(**inputs)
    finally:
        h.remove()
    permuted = store[0]
    d = torch.cdist(permuted.double(), emb.double())
    perm = d.argmin(1)  # permuted[i] == emb[perm[i]]
    assert torch.equal(torch.sort(perm).values, torch.arange(len(perm))), "rows do not match one to one"
    assert torch.allclose(permuted, emb[perm], atol=1e-6)
    return emb, perm


def qwen_keys(model, inputs, feature="key", layer=-1):
    """Per-image keys in the LLM's token order: 4 consecutive original-order patches averaged per token."""
    visual = model.model.visual
    unit = visual.spatial_merge_size**2
    emb, perm = qwen_unit_order(model, inputs)
    if feature == "hidden" and layer == 0:
        raw = emb
    else:
        blk = visual.blocks[layer]
        if feature == "hidden":
            store, h = _capture(
                blk, lambda m, a, kw: (a[0] if a else kw["hidden_states"]).detach().clone(), pre=True
            )
        else:
            store, h = _capture(blk.attn.qkv, lambda m, a, kw, o: o.detach().clone())
        try:
            model(**inputs)
        finally:
            h.remove()
        x = store[0]
        if feature != "hidden":  # fused qkv: [q | k | v]
            c = x.shape[-1] // 3
            part = {"query": 0, "key": 1, "value": 2}[feature]
            x = x[..., part * c : (part + 1) * c]
        raw = torch.empty_like(x)
        raw[perm] = x  # back to the original (processor) order
    merged = raw.reshape(-1, unit, raw.shape[-1]).mean(1)
    sizes = (inputs["image_grid_thw"].prod(-1) // unit).tolist()
    return list(merged.split(sizes))


def florence_keys(model, inputs):
    """keys = window_attn.qkv(x)[..., C:2C] of the raster input x (B, H, W, C) of the last stage's last block."""
    attn = model.model.vision_tower.blocks[-1][-1].spatial_block.window_attn
    store, h = _capture(
        attn, lambda m, a, kw: (a[0] if a else kw["hidden_states"]).detach().clone(), pre=True
    )
    try:
        model(**inputs)
    finally:
        h.remove()
    x = store[0]
    b, hh, ww, c = x.shape
    return attn.qkv(x.reshape(b, hh * ww, c))[..., c : 2 * c]


# -- one sample of a batch ---------------------------------------------------------------------------------------------
def sample_inputs(family, inputs, b, images_per_sample=1):
    """Sample ``b`` of a batch, alone (batch 1), without its padding."""
    keep = inputs["attention_mask"][b].bool()
    ids = inputs["input_ids"][b][keep][None]
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pv = inputs["pixel_values"]
    k = images_per_sample
    if family in ("llava", "paligemma"):
        out["pixel_values"] = pv[b * k : (b + 1) * k]
    elif family == "qwen2_5_vl":
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        start = sum(sizes[: b * k])
        out["pixel_values"] = pv[start : start + sum(sizes[b * k : (b + 1) * k])]
        out["image_grid_thw"] = inputs["image_grid_thw"][b * k : (b + 1) * k]
    else:
        out["pixel_values"] = pv[b : b + 1]
    if "token_type_ids" in inputs:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out
