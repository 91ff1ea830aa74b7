"""Record the facts IVRA relies on from a checkout of OpenVLA's or OpenVLA-OFT's real code (a JSON fixture).

Run in an environment with timm 0.9.16 and transformers 4.40.1 (the project's ``openvla`` nox env), pointing at a
checkout of https://github.com/openvla/openvla or https://github.com/moojink/openvla-oft (nothing of theirs is
copied here; their classes are imported from the checkout at run time)::

    .nox/openvla/bin/python scripts/record_fixture_openvla.py --checkout PATH --family openvla \\
        --repo openvla/openvla --commit SHA --out tests/fixtures/real/openvla.json
    .nox/openvla/bin/python scripts/record_fixture_openvla.py --checkout PATH --family oft \\
        --repo moojink/openvla-oft --commit SHA --out tests/fixtures/real/openvla_oft.json

The real ``OpenVLAForActionPrediction`` is built from a config with tiny random weights (no download): the timm
towers keep their real ids, ``pretrained=False``, with the small override kwargs of
:data:`ivra.rebuilt.openvla.TINY_TOWER` added to the real ``timm.create_model`` calls; a tiny Llama text config.
OFT is assembled as its LIBERO deployment does (``experiments/robot/openvla_utils.py``): two images, an 8-D proprio
token through ``ProprioProjector``, the ``L1RegressionActionHead``; and once more with FiLM
(``FiLMedPrismaticVisionBackbone``). Recorded: the module tree (path -> class) and parameter shapes, the towers'
prefix tokens, which block a tower returns and how many run, the fused ``qkv`` layout, signatures, and the order of
the tokens the language model sees, measured by hooking its input with a prompt of known ids. With every parameter
set by :func:`fill_` (a rule on parameter names), a few outputs are kept as a numeric probe.

The measuring functions here (``measure_*``) work on any model of this structure: the fixture test
(``tests/envs/openvla/test_real_facts.py``) runs the same ones on ``ivra.rebuilt.openvla`` and compares.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import math
import platform
import subprocess
import sys
import types
import zlib
from pathlib import Path

import torch

PROMPT_IDS = [1, 101, 102, 103, 104, 105, 106]  # BOS + six distinct prompt ids (not ending in 29871)
EMPTY_TOKEN = 29871  # the '' token OpenVLA's predict_action appends after "Out:"
TINY_TOWER = {"embed_dim": 64, "depth": 4, "num_heads": 4}  # == ivra.rebuilt.openvla.TINY_TOWER
TINY_TEXT = {  # == ivra.rebuilt.openvla.build_tiny's text config at base_vocab=32000
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 32000 + 64,
    "max_position_embeddings": 2048,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
UNNORM_KEY = "libero_spatial"
ACTION_DIM, CHUNK, PROPRIO_DIM = 7, 8, 8  # OFT's LIBERO constants (prismatic/vla/constants.py)


def norm_stats() -> dict:
    """Identity-like stats with both naming schemes (OpenVLA reads q01/q99, OFT's action dim reads min/max)."""
    lo, hi = [-1.0 + 0.1 * i for i in range(ACTION_DIM)], [1.0 + 0.2 * i for i in range(ACTION_DIM)]
    mask = [True] * (ACTION_DIM - 1) + [False]
    prop = {"q01": [-1.0] * PROPRIO_DIM, "q99": [1.0] * PROPRIO_DIM, "min": [-1.0] * PROPRIO_DIM}
    prop["max"] = [1.0] * PROPRIO_DIM
    return {
        UNNORM_KEY: {"action": {"q01": lo, "q99": hi, "min": lo, "max": hi, "mask": mask}, "proprio": prop}
    }


# -- structure ---------------------------------------------------------------------------------------------------------
def module_tree(root: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{dotted path: class name} of every module under ``root`` ("" is the root), minus paths under ``skip``."""
    out = {}
    for name, m in root.named_modules(remove_duplicate=False):
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        out[name] = type(m).__name__
    return out


def param_shapes(root: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, list[int]]:
    return {
        n: list(p.shape)
        for n, p in root.named_parameters(remove_duplicate=False)
        if not any(n.startswith(s + ".") for s in skip)
    }


def signature(fn) -> list[list[str]]:
    """[[name, kind, default]] of a callable's parameters (annotations left out)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        default = "<required>" if p.default is inspect.Parameter.empty else repr(p.default)
        out.append([p.name, p.kind.name, default])
    return out


def inner_backbone(model):
    """The module holding ``featurizer`` (OFT's FiLM wrapper keeps the original backbone as ``.vision_backbone``)."""
    vb = model.vision_backbone
    return vb if hasattr(vb, "featurizer") else vb.vision_backbone


def backbone_path(model) -> str:
    return (
        "vision_backbone"
        if hasattr(model.vision_backbone, "featurizer")
        else "vision_backbone.vision_backbone"
    )


def towers(model) -> dict[str, torch.nn.Module]:
    vb = inner_backbone(model)
    out = {"featurizer": vb.featurizer}
    if getattr(vb, "fused_featurizer", None) is not None:
        out["fused_featurizer"] = vb.fused_featurizer
    return out


def timm_block(block):
    return getattr(block, "block", block)


def tower_facts(model) -> dict:
    facts = {}
    ids = list(getattr(model.config, "timm_model_ids", []))
    for i, (name, t) in enumerate(towers(model).items()):
        blk = t.blocks[-1]
        facts[name] = {
            "path": f"{backbone_path(model)}.{name}",
            "timm_model_id": ids[i] if i < len(ids) else None,
            "class": type(t).__name__,
            "embed_dim": int(t.embed_dim),
            "depth": len(t.blocks),
            "num_prefix_tokens": int(t.num_prefix_tokens),
            "has_class_token": bool(t.has_class_token),
            "num_reg_tokens": int(getattr(t, "num_reg_tokens", 0)),
            "grid_size": list(t.patch_embed.grid_size),
            "num_patches": int(t.patch_embed.num_patches),
            "block_class": type(blk).__name__,
            "qkv_path": f"{backbone_path(model)}.{name}.blocks.{{i}}"
            + (".block" if hasattr(blk, "block") else "")
            + ".attn.qkv",
            "qkv_shape": list(timm_block(blk).attn.qkv.weight.shape),
        }
    return facts


# -- deterministic weights -----------------------------------------------------------------------------------------------
@torch.no_grad()
def fill_(*modules: torch.nn.Module) -> None:
    """Set every parameter from a generator seeded by its name: same names and shapes -> same weights anywhere."""
    for module in modules:
        for name, p in module.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() >= 2:
                v = r / math.sqrt(p[0].numel())
            elif name.endswith("weight"):
                v = 1.0 + 0.1 * r
            else:
                v = 0.1 * r
            p.copy_(v.to(p.dtype))


# -- measuring the sequence the language model sees ----------------------------------------------------------------------
class LMInputs:
    """Records every call of ``model.language_model``: its inputs_embeds / input_ids and attention-mask shape."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.handle = model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        emb, ids, mask = kwargs.get("inputs_embeds"), kwargs.get("input_ids"), kwargs.get("attention_mask")
        if args:
            ids = args[0]
        self.calls.append(
            {
                "inputs_embeds": None if emb is None else emb.detach().clone(),
                "input_ids": None if ids is None else ids.detach().clone(),
                "attention_mask": None if mask is None else list(mask.shape),
            }
        )

    def remove(self):
        self.handle.remove()


def capture_output(module):
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    return seen, handle


def segments(embeds: torch.Tensor, table: torch.Tensor, sources: dict[str, torch.Tensor]) -> list[list]:
    """One sample's LM input rows -> runs: ["text", start, n, ids] | [source, start, n, first row] | ["zero", ...].

    A row is a text token when it equals a row of the embedding table (its id), a ``source`` row when it equals a
    row of that tensor (projector output: ``patch``; proprio projector output: ``proprio``), ``zero`` when all
    zero (OFT's emptied action placeholders), else ``other``."""
    lookup = {table[i].numpy().tobytes(): ("text", i) for i in range(table.shape[0])}
    for name, src in sources.items():
        lookup.update({src[j].numpy().tobytes(): (name, j) for j in range(src.shape[0])})
    rows = [
        ("zero", None) if not r.any() else lookup.get(r.numpy().tobytes(), ("other", None)) for r in embeds
    ]
    out: list[list] = []
    for pos, (kind, val) in enumerate(rows):
        last = out[-1] if out else None
        if last and last[0] == kind and kind == "text":
            last[2] += 1
            last[3].append(val)
        elif last and last[0] == kind and kind in ("zero", "other"):
            last[2] += 1
        elif last and last[0] == kind and val == last[3] + last[2]:
            last[2] += 1
        else:
            out.append([kind, pos, 1, [val] if kind == "text" else val])
    return out


def visual_positions(segs: list[list]) -> list[list[int]]:
    """[[first, last]] LLM positions of each run of projected patches."""
    return [[s[1], s[1] + s[2] - 1] for s in segs if s[0] == "patch"]


def inputs(num_images: int, seed: int = 0, batch: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([PROMPT_IDS] * batch)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 6 * num_images, 224, 224, generator=g),
    }


def tower_calls(model, run) -> tuple[list[dict], object]:
    """Per tower call (call order): which tower, which pixel channels it got, tokens out; and run()'s result."""
    record: list[dict] = []
    handles = []
    for name, t in towers(model).items():

        def hook(m, args, out, name=name):
            record.append({"tower": name, "pixels": args[0].detach().clone(), "out": out.detach().clone()})

        handles.append(t.register_forward_hook(hook))
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return record, result


def block_runs(tower, run) -> dict:
    """How many blocks run per tower call, and which block's output (prefix dropped) the tower returns."""
    outs: list[list[torch.Tensor]] = []
    handles = [
        blk.register_forward_hook(lambda m, a, out, i=i: outs.append([i, out.detach().clone()]))
        for i, blk in enumerate(tower.blocks)
    ]
    seen, h_out = capture_output(tower)
    try:
        run()
    finally:
        for h in handles + [h_out]:
            h.remove()
    per_call = len(outs) // max(len(seen), 1)
    first = outs[:per_call]
    prefix = int(tower.num_prefix_tokens)
    taken = [
        i for i, o in first if o.shape[1] - prefix == seen[0].shape[1] and torch.equal(o[:, prefix:], seen[0])
    ]
    return {"tower_calls": len(seen), "blocks_run_per_call": per_call, "returned_block": taken}


def qkv_layout(tower, x: torch.Tensor) -> str:
    """Check, on the last block, that timm's fused qkv is [q | k | v] thirds with heads contiguous in each third."""
    blk = timm_block(tower.blocks[-1])
    attn = blk.attn
    got = {}
    h1 = attn.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
    h2 = attn.register_forward_hook(lambda m, a, out: got.__setitem__("out", out.detach().clone()))
    try:
        tower_call(tower, x)
    finally:
        h1.remove(), h2.remove()
    xin, out = got["x"], got["out"]
    b, n, d = xin.shape
    qkv = attn.qkv(xin)
    heads = attn.num_heads
    q, k, v = (
        qkv[..., i * d : (i + 1) * d].reshape(b, n, heads, d // heads).transpose(1, 2) for i in range(3)
    )
    q, k = attn.q_norm(q), attn.k_norm(k)
    a = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
    mine = attn.proj((a @ v).transpose(1, 2).reshape(b, n, d))
    ok = torch.allclose(mine, out, atol=1e-5, rtol=1e-4)
    return "q|k|v thirds of the last dim, heads contiguous in each" if ok else "unknown"


def tower_call(tower, x):
    """Call a tower as its backbone does (FiLM towers take the mean language embedding as a second input)."""
    if type(tower).__name__.startswith("FiLMed"):
        return tower(x, torch.zeros(x.shape[0], tower.blocks[0].scale.in_features))
    return tower(x)


def image_order(record: list[dict], pixels: torch.Tensor, backbone_out: torch.Tensor) -> dict:
    """Which channels of pixel_values each tower call got, and whether the backbone output is, per image in call
    order, the towers' outputs joined along channels, images joined along the sequence."""
    calls = []
    for r in record:
        chans = next(
            (
                [c, c + 3]
                for c in range(0, pixels.shape[1] - 2, 3)
                if r["pixels"].shape == pixels[:, c : c + 3].shape
                and torch.equal(r["pixels"], pixels[:, c : c + 3])
            ),
            None,
        )
        calls.append({"tower": r["tower"], "pixel_channels": chans, "tokens_out": int(r["out"].shape[1])})
    per_image, i = [], 0
    names = sorted({r["tower"] for r in record}, key=lambda n: n != "featurizer")
    while i < len(record):
        per_image.append(torch.cat([record[i + j]["out"] for j in range(len(names))], dim=2))
        i += len(names)
    joined = torch.cat(per_image, dim=1)
    return {
        "calls": calls,
        "images_along_sequence_towers_along_channels": bool(torch.equal(joined, backbone_out)),
    }


# -- per family ----------------------------------------------------------------------------------------------------------
def measure_openvla(model) -> dict:
    """OpenVLA: forward and predict_action (generate) on one image, prompt PROMPT_IDS."""
    fill_(model)
    model.eval()
    x = inputs(1, seed=0)
    table = model.get_input_embeddings().weight.detach()
    facts: dict = {}
    with torch.no_grad():
        for entry in ("forward", "predict_action"):
            lm = LMInputs(model)
            proj, hp = capture_output(model.projector)
            vb, hv = capture_output(model.vision_backbone)
            if entry == "forward":
                record, result = tower_calls(model, lambda: model(**x))
            else:
                record, result = tower_calls(
                    model, lambda: model.predict_action(**x, unnorm_key=UNNORM_KEY, do_sample=False)
                )
            lm.remove(), hp.remove(), hv.remove()
            prefill = lm.calls[0]
            segs = segments(prefill["inputs_embeds"][0], table, {"patch": proj[0][0]})
            facts[entry] = {
                "lm_calls": len(lm.calls),
                "prefill_length": int(prefill["inputs_embeds"].shape[1]),
                "prefill_attention_mask": prefill["attention_mask"],
                "decode_steps": [
                    {
                        "input_ids": list(c["input_ids"].shape) if c["input_ids"] is not None else None,
                        "attention_mask": c["attention_mask"],
                    }
                    for c in lm.calls[1:]
                ],
                "segments": segs,
                "visual_positions": visual_positions(segs),
                "vision": image_order(record, x["pixel_values"], vb[0]),
            }
            if entry == "forward":
                facts[entry]["probe_last_logits"] = [round(float(v), 6) for v in result.logits[0, -1, :12]]
            else:
                facts[entry]["probe_actions"] = [round(float(v), 6) for v in result]
    dino = towers(model)["featurizer"]
    facts["blocks"] = {
        name: block_runs(t, lambda: model(**x)) for name, t in towers(model).items()
    }  # fmt: skip
    facts["qkv_layout"] = qkv_layout(dino, x["pixel_values"][:, :3])
    return facts


def measure_oft(model, proprio_projector, action_head, use_film: bool) -> dict:
    """OFT: predict_action with two images, proprio and the L1 head (as OFT's LIBERO deployment calls it)."""
    fill_(model, proprio_projector, action_head)
    for m in (model, proprio_projector, action_head):
        m.eval()
    x = inputs(2, seed=1)
    proprio = torch.randn(1, PROPRIO_DIM, generator=torch.Generator().manual_seed(2))
    table = model.get_input_embeddings().weight.detach()
    head_in = []
    original = action_head.predict_action

    def spy(hidden):
        head_in.append(hidden.detach().clone())
        return original(hidden)

    action_head.predict_action = spy
    lm = LMInputs(model)
    proj, hp = capture_output(model.projector)
    prop, hq = capture_output(proprio_projector)
    vb, hv = capture_output(model.vision_backbone)
    hidden_last = []
    hl = model.language_model.register_forward_hook(
        lambda m, a, kw, out: hidden_last.append(out.hidden_states[-1].detach().clone()), with_kwargs=True
    )

    def run():
        return model.predict_action(
            **x,
            unnorm_key=UNNORM_KEY,
            do_sample=False,
            proprio=proprio,
            proprio_projector=proprio_projector,
            action_head=action_head,
            use_film=use_film,
        )

    try:
        with torch.no_grad():
            record, result = tower_calls(model, run)
    finally:
        action_head.predict_action = original
        for h in (lm, hp, hq, hv, hl):
            h.remove()
    actions, hidden = result
    prefill = lm.calls[0]
    segs = segments(prefill["inputs_embeds"][0], table, {"patch": proj[0][0], "proprio": prop[0]})
    last = hidden_last[0][0]
    read = [j for j in range(last.shape[0]) if any(torch.equal(last[j], h) for h in head_in[0][0])]
    facts = {
        "predict_action": {
            "lm_calls": len(lm.calls),
            "prefill_length": int(prefill["inputs_embeds"].shape[1]),
            "prefill_attention_mask": prefill["attention_mask"],
            "segments": segs,
            "visual_positions": visual_positions(segs),
            "proprio_positions": [s[1] for s in segs if s[0] == "proprio"],
            "action_head_reads_positions": [read[0], read[-1]] if read else None,
            "action_head_input_shape": list(head_in[0].shape),
            "returns": [type(actions).__name__, list(actions.shape), list(hidden.shape)],
            "vision": image_order(record, x["pixel_values"], vb[0]),
            "probe_actions": [[round(float(v), 5) for v in row] for row in actions],
        }
    }
    facts["blocks"] = {name: block_runs(t, run) for name, t in towers(model).items()}
    facts["qkv_layout"] = qkv_layout(towers(model)["featurizer"], x["pixel_values"][:, :3])
    return facts


def structure(roots: dict[str, torch.nn.Module], signatures: dict[str, object]) -> dict:
    model = roots["vla"]
    return {
        "modules": {name: module_tree(m) for name, m in roots.items()},
        "parameters": {name: param_shapes(m) for name, m in roots.items()},
        "towers": tower_facts(model),
        "paths": {
            "vision_backbone": backbone_path(model),
            "projector": "projector",
            "language_model": "language_model",
            "lm_layers": "language_model.model.layers",
            "embedding": "language_model.model.embed_tokens",
        },
        "signatures": {name: signature(fn) for name, fn in signatures.items()},
    }


# -- the real code -------------------------------------------------------------------------------------------------------
def load_real(checkout: Path, family: str) -> dict[str, types.ModuleType]:
    """Import the checkout's modules by path without running its packages' heavy ``__init__`` files."""
    for pkg in ("prismatic", "prismatic.extern", "prismatic.extern.hf", "prismatic.models", "prismatic.training",
                "prismatic.vla"):  # fmt: skip
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(checkout / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    stubs = []
    if family == "oft":
        try:
            import diffusers.schedulers.scheduling_ddim  # noqa: F401
        except ImportError:  # only OFT's DiffusionActionHead uses it; the L1 head recorded here does not
            for name in ("diffusers", "diffusers.schedulers", "diffusers.schedulers.scheduling_ddim"):
                sys.modules[name] = types.ModuleType(name)
            sys.modules["diffusers.schedulers.scheduling_ddim"].DDIMScheduler = type("DDIMScheduler", (), {})
            stubs.append(
                "diffusers.schedulers.scheduling_ddim.DDIMScheduler (not installed; unused by the L1 head)"
            )
    names = ["prismatic.extern.hf.configuration_prismatic", "prismatic.extern.hf.modeling_prismatic"]
    if family == "oft":
        names += ["prismatic.vla.constants", "prismatic.models.film_vit_wrapper", "prismatic.models.projectors",
                  "prismatic.models.action_heads"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # OFT's constants module prints the platform it picked
        mods = {n.rsplit(".", 1)[1]: importlib.import_module(n) for n in names}
    mods["_stubs"] = stubs
    return mods


@contextlib.contextmanager
def tiny_towers():
    """The real ``timm.create_model`` calls, with TINY_TOWER added (pretrained stays False)."""
    import timm

    real = timm.create_model

    def create(name, *args, **kwargs):
        return real(name, *args, **{**kwargs, **TINY_TOWER})

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = real


def build_real(mods: dict, family: str, use_film: bool = False):
    cfg_mod, modeling = mods["configuration_prismatic"], mods["modeling_prismatic"]
    cfg = cfg_mod.OpenVLAConfig(
        vision_backbone_id="dinosiglip-vit-so-224px",
        llm_backbone_id="llama2-7b-pure",
        arch_specifier="no-align+fused-gelu-mlp",
        use_fused_vision_backbone=True,
        image_resize_strategy="resize-naive",
        text_config=dict(TINY_TEXT),
        norm_stats=norm_stats(),
        n_action_bins=256,
        pad_to_multiple_of=64,
        pad_token_id=32000,
    )
    torch.manual_seed(0)
    with tiny_towers():
        vla = modeling.OpenVLAForActionPrediction(cfg)
    vla.generation_config.pad_token_id, vla.generation_config.eos_token_id = 0, None
    if family == "openvla":
        return cfg, vla, {}
    c = mods["constants"]
    assert (c.ACTION_DIM, c.NUM_ACTIONS_CHUNK, c.PROPRIO_DIM) == (ACTION_DIM, CHUNK, PROPRIO_DIM), (
        "not LIBERO's"
    )
    if use_film:  # as experiments/robot/openvla_utils.py::_apply_film_to_vla (its LoRA wrapping left out)
        vla.vision_backbone = mods["film_vit_wrapper"].FiLMedPrismaticVisionBackbone(
            vision_backbone=vla.vision_backbone, llm_dim=vla.llm_dim
        )
    vla.vision_backbone.set_num_images_in_input(2)  # as openvla_utils.py::get_vla
    companions = {
        "proprio_projector": mods["projectors"].ProprioProjector(
            llm_dim=vla.llm_dim, proprio_dim=PROPRIO_DIM
        ),
        "action_head": mods["action_heads"].L1RegressionActionHead(
            input_dim=vla.llm_dim, hidden_dim=vla.llm_dim, action_dim=ACTION_DIM
        ),
    }
    return cfg, vla, companions


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


SOURCES = {
    "openvla": {
        "classes, forward, predict_action, token order": "prismatic/extern/hf/modeling_prismatic.py",
        "config fields, timm ids, LLM id": "prismatic/extern/hf/configuration_prismatic.py",
    },
    "oft": {
        "classes, forward, predict_action, token order, action hidden states": "prismatic/extern/hf/modeling_prismatic.py",
        "config fields, timm ids, LLM id": "prismatic/extern/hf/configuration_prismatic.py",
        "FiLM wrapper, FiLM blocks, FiLM tower class": "prismatic/models/film_vit_wrapper.py",
        "ProprioProjector": "prismatic/models/projectors.py",
        "L1RegressionActionHead": "prismatic/models/action_heads.py",
        "ACTION_DIM, NUM_ACTIONS_CHUNK, PROPRIO_DIM, STOP_INDEX, ACTION_TOKEN_BEGIN_IDX": "prismatic/vla/constants.py",
        "action placeholder mask from labels": "prismatic/training/train_utils.py",
        "assembly for LIBERO (FiLM wrap, set_num_images_in_input, companions, predict_action call)": "experiments/robot/openvla_utils.py",
    },
}

SHAPE_RULES = {
    "towers' blocks.{i}.attn.qkv.weight": "[3 * embed_dim, embed_dim] (timm override embed_dim; 1024 DINOv2 ViT-L, 1152 SigLIP SO400M)",
    "projector.fc1.weight": "[4 * vision_dim, vision_dim], vision_dim = featurizer.embed_dim + fused_featurizer.embed_dim",
    "projector.fc2.weight": "[llm_dim, 4 * vision_dim] (llm_dim = text_config.hidden_size)",
    "projector.fc3.weight": "[llm_dim, llm_dim]",
    "language_model.model.embed_tokens.weight": "[text_config.vocab_size, llm_dim] (32000 + pad_to_multiple_of 64)",
    "FiLM blocks.{i}.scale/shift.weight": "[tower embed_dim, llm_dim]",
    "proprio_projector.fc1.weight": "[llm_dim, PROPRIO_DIM]",
    "action_head.model.fc1.weight": "[llm_dim, llm_dim * ACTION_DIM]; model.fc2.weight: [ACTION_DIM, llm_dim]",
}


def record(checkout: Path, family: str, repo: str, commit: str | None) -> dict:
    import timm
    import transformers

    mods = load_real(checkout, family)
    modeling = mods["modeling_prismatic"]
    cls = modeling.OpenVLAForActionPrediction
    out = {
        "family": family,
        "source": {
            "repository": f"https://github.com/{repo}",
            "commit": commit or git_commit(checkout) or "unknown",
            "files": SOURCES[family],
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "transformers": transformers.__version__,
            "stubs": mods["_stubs"],
        },
        "tiny_config": {
            "timm_override_kwargs": TINY_TOWER,
            "text_config": TINY_TEXT,
            "vision_backbone_id": "dinosiglip-vit-so-224px",
            "llm_backbone_id": "llama2-7b-pure",
            "image_size": 224,
            "prompt_ids": PROMPT_IDS,
        },
        "shape_rules": SHAPE_RULES,
        "variants": {},
    }
    if family == "openvla":
        cfg, vla, _ = build_real(mods, family)
        out["config"] = {
            "class": type(cfg).__name__,
            "timm_model_ids": list(cfg.timm_model_ids),
            "image_sizes": list(cfg.image_sizes),
            "use_fused_vision_backbone": cfg.use_fused_vision_backbone,
            "fields": sorted(k for k in cfg.to_dict() if not k.startswith("_")),
        }
        sigs = {
            "forward": cls.forward,
            "predict_action": cls.predict_action,
            "prepare_inputs_for_generation": cls.prepare_inputs_for_generation,
            "vision_backbone.forward": type(vla.vision_backbone).forward,
        }
        variant = structure({"vla": vla}, sigs)
        variant["llm_attention"] = type(vla.language_model.model.layers[0].self_attn).__name__
        variant["measured"] = measure_openvla(vla)
        out["variants"]["default"] = variant
        out["notes"] = [
            "predict_action appends the empty token 29871 when the prompt does not end with it, then calls "
            "generate(input_ids, max_new_tokens=action_dim, **kwargs); the caller's attention_mask is passed "
            "through unchanged (one shorter than the prefill after the append); decode steps call the language "
            "model with attention_mask=None",
            "LayerScale's gamma is renamed scale_factor in both towers (ls_apply_patch)",
            "the tiny Llama is built eagerly (config._attn_implementation 'eager'); checkpoints loaded with "
            "from_pretrained under transformers 4.40 pick LlamaSdpaAttention at the same paths",
        ]
        return out
    for film in (False, True):
        cfg, vla, comp = build_real(mods, family, use_film=film)
        sigs = {
            "forward": cls.forward,
            "predict_action": cls.predict_action,
            "prepare_inputs_for_generation": cls.prepare_inputs_for_generation,
            "vision_backbone.forward": type(vla.vision_backbone).forward,
            "proprio_projector.forward": type(comp["proprio_projector"]).forward,
            "action_head.predict_action": type(comp["action_head"]).predict_action,
        }
        if film:
            sigs["film_block.forward"] = type(inner_backbone(vla).featurizer.blocks[0]).forward
        variant = structure({"vla": vla, **comp}, sigs)
        variant["llm_attention"] = type(vla.language_model.model.layers[0].self_attn).__name__
        variant["measured"] = measure_oft(vla, comp["proprio_projector"], comp["action_head"], use_film=film)
        out["variants"]["film" if film else "two_images_proprio"] = variant
    c = mods["constants"]
    out["constants"] = {
        "ACTION_DIM": c.ACTION_DIM,
        "NUM_ACTIONS_CHUNK": c.NUM_ACTIONS_CHUNK,
        "PROPRIO_DIM": c.PROPRIO_DIM,
        "STOP_INDEX": c.STOP_INDEX,
        "ACTION_TOKEN_BEGIN_IDX": c.ACTION_TOKEN_BEGIN_IDX,
        "IGNORE_INDEX": c.IGNORE_INDEX,
        "ACTION_PROPRIO_NORMALIZATION_TYPE": str(c.ACTION_PROPRIO_NORMALIZATION_TYPE.value),
    }
    out["notes"] = [
        "proprio_projector and action_head are separate modules (not children of the VLA), passed to "
        "predict_action(proprio_projector=..., action_head=...) (experiments/robot/openvla_utils.py::get_vla_action)",
        "predict_action appends 29871 when missing, then ACTION_DIM * NUM_ACTIONS_CHUNK placeholder ids (1) whose "
        "embeddings are zeroed and the stop token (2); the mask of action positions comes from labels "
        "(> ACTION_TOKEN_BEGIN_IDX); FiLM averages the embeddings of every other position (BOS, prompt, 29871, stop)",
        "the action head reads the last hidden states from position NUM_PATCHES + NUM_PROMPT_TOKENS on "
        "(NUM_PATCHES = 256 * images + 1 with proprio, NUM_PROMPT_TOKENS = prompt length with 29871 minus 1), i.e. "
        "from the last prompt token to the second-to-last placeholder",
        "predict_action returns (actions (NUM_ACTIONS_CHUNK, ACTION_DIM) numpy, action hidden states); it handles "
        "a batch of one (reshape to (NUM_ACTIONS_CHUNK, ACTION_DIM))",
        "OFT's pyproject pins a transformers fork (moojink/transformers-openvla-oft) for bidirectional attention; "
        "recorded here on stock transformers 4.40.1 (causal): module paths and token order are unaffected",
        "_apply_film_to_vla wraps the VLA with peft LoRA (all-linear) before FiLM and keeps vla.model: the linear "
        "layers become LoRA wrappers at the same paths (not reproduced here; peft not installed)",
    ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkout", required=True, type=Path, help="a checkout of openvla/openvla or moojink/openvla-oft"
    )
    ap.add_argument(
        "--family", required=True, choices=("openvla", "oft"), help="which repository the checkout is"
    )
    ap.add_argument("--out", required=True, type=Path, help="the JSON fixture to write")
    ap.add_argument("--repo", help="owner/name recorded as the source (default: by family)")
    ap.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD in the checkout)")
    args = ap.parse_args(argv)
    repo = args.repo or {"openvla": "openvla/openvla", "oft": "moojink/openvla-oft"}[args.family]
    checkout = args.checkout.resolve()
    if not (checkout / "prismatic/extern/hf/modeling_prismatic.py").is_file():
        ap.error(f"{checkout} has no prismatic/extern/hf/modeling_prismatic.py")
    facts = record(checkout, args.family, repo, args.commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(facts, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
