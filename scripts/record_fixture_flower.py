"""Record the facts IVRA relies on from the real FLOWER code and the real remote Florence-2 code (a JSON fixture).

Run in an environment where FLOWER's own model class imports and runs (Python 3.11, torch 2.13.0, torchvision
0.28.0, transformers 4.51.3 (the remote Florence-2 code's range), timm, einops, einops-exts, pytorch-lightning,
hydra-core, omegaconf, wandb; FLOWER's module imports the last four at the top), pointing at a checkout of
https://github.com/intuitive-robots/flower_vla_calvin and at a folder holding the remote code published with
``microsoft/Florence-2-large`` (``configuration_florence2.py``, ``modeling_florence2.py``,
``processing_florence2.py``). Nothing of theirs is copied into this project: their classes are imported from the
checkouts at run time::

    python scripts/record_fixture_flower.py --flower PATH --flower-commit SHA \\
        --florence2 PATH --florence2-repo microsoft/Florence-2-large --florence2-commit SHA \\
        --out tests/fixtures/real/flower.json

A tiny Florence-2 is made in a temporary folder (the three remote files, the tiny config of
:data:`ivra.rebuilt.flower.TINY_CONFIG`, a CLIP image-processor config and the tiny byte-level BART tokenizer of
:func:`ivra.rebuilt.flower.base_tokenizer`; random weights saved there), and FLOWER's real ``FLOWERVLA`` loads it
as it loads Florence-2-large (``AutoModelForCausalLM`` / ``AutoProcessor`` with ``trust_remote_code``), with the
tiny DiT of :data:`ivra.rebuilt.flower.TINY_FLOWER_KWARGS`. Recorded: the module tree under ``vlm`` (path ->
class) and every parameter and buffer shape, the signatures FLOWER's inference and IVRA use, the tokenizer (size,
``<Flow>`` id, the prompt FLOWER builds, the ids of its tokenizer call), the order of the tokens the encoder sees,
the shapes the hooked modules see, the action chunking and noise, and, with every parameter set by
:func:`ivra.rebuilt.flower.fill_deterministic` (a rule on parameter names), a few outputs as a numeric probe.
Read from FLOWER's files without running them: the LIBERO observation mapping (``flower/rollout/libero_rollout.py``,
by parsing it), the image transforms and the model/eval settings (its hydra YAML files).

The ``measure_*`` functions work on any model of this structure: ``tests/test_flower.py`` runs the same ones on
:mod:`ivra.rebuilt.flower` and compares with the fixture.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"
SHORT = "open the drawer"
REMOTE_FILES = ("configuration_florence2.py", "modeling_florence2.py", "processing_florence2.py")
#: the module paths (under the FLOWER model) IVRA's adapters hook or read
HOOKED = (
    "vlm",
    "vlm.vision_tower",
    "vlm.vision_tower.blocks",
    "vlm.vision_tower.blocks.-1",
    "vlm.vision_tower.blocks.-1.-1",
    "vlm.vision_tower.blocks.-1.-1.spatial_block",
    "vlm.vision_tower.blocks.-1.-1.spatial_block.window_attn",
    "vlm.vision_tower.blocks.-1.-1.spatial_block.window_attn.fn",
    "vlm.vision_tower.blocks.-1.-1.spatial_block.window_attn.fn.qkv",
    "vlm.vision_tower.blocks.-1.-1.channel_block",
    "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn",
    "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn.norm",
    "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn.fn",
    "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn.fn.qkv",
    "vlm.language_model",
    "vlm.language_model.model",
    "vlm.language_model.model.shared",
    "vlm.language_model.model.encoder",
    "vlm.language_model.model.encoder.embed_tokens",
    "vlm.language_model.model.encoder.layers",
    "vlm.language_model.model.encoder.layers.-1",
    "vlm.language_model.model.encoder.layers.-1.self_attn",
)
#: (path, method) pairs whose signatures are recorded; path "" is the FLOWER model itself
SIGNATURES = (
    ("", "forward"),
    ("", "step"),
    ("", "reset"),
    ("", "encode_observations"),
    ("", "sample_actions"),
    ("", "construct_prompts"),
    ("", "_get_text_embeddings"),
    ("vlm", "_encode_image"),
    ("vlm", "get_encoder"),
    ("vlm", "get_input_embeddings"),
    ("vlm.vision_tower", "forward_features_unpool"),
    ("vlm.vision_tower.blocks.-1.-1", "forward"),
    ("vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn", "forward"),
    ("vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn.fn", "forward"),
    ("vlm.vision_tower.blocks.-1.-1.spatial_block.window_attn.fn", "forward"),
    ("vlm.language_model.model.encoder", "forward"),
    ("vlm.language_model.model.encoder.layers.-1", "forward"),
    ("vlm.language_model.model.encoder.layers.-1.self_attn", "forward"),
)


def get_path(root, path: str):
    """``a.b.-1.c`` -> the module (integers, negative ones too, index containers)."""
    cur = root
    for part in filter(None, path.split(".")):
        if part.lstrip("-").isdigit():
            cur = list(cur.children())[int(part)] if not hasattr(cur, "__getitem__") else cur[int(part)]
        else:
            cur = getattr(cur, part)
    return cur


def _params(sig: inspect.Signature) -> list[str]:
    return [
        ("*" if p.kind == p.VAR_POSITIONAL else "**" if p.kind == p.VAR_KEYWORD else "") + p.name
        for p in sig.parameters.values()
        if p.name != "self"
    ]


def summary(t: torch.Tensor) -> dict:
    flat = t.detach().double().flatten()
    step = max(1, flat.numel() // 16)
    return {
        "shape": list(t.shape),
        "sum": float(flat.sum()),
        "abs_sum": float(flat.abs().sum()),
        "head": [round(float(v), 7) for v in flat[:8]],
        "strided": [round(float(v), 7) for v in flat[::step][:16]],
    }


def observation(batch: int = 1, size: int = 112, phase: float = 0.0):
    from ivra.rebuilt.flower import probe_pixels

    static = probe_pixels(batch, size, phase)[
        :, None
    ]  # (B, T=1, 3, H, W) as FLOWER's LIBERO rollout builds it
    gripper = probe_pixels(batch, size, phase + 1.0)[:, None]
    return {"rgb_obs": {"rgb_static": static, "rgb_gripper": gripper}}


# -- measurements (run on the real model here, on the rebuild in the tests) ---------------------------------------------
def measure_tree(model) -> dict:
    return {
        "vlm_modules": {
            (f"vlm.{name}" if name else "vlm"): type(mod).__name__
            for name, mod in model.vlm.named_modules(remove_duplicate=False)
        },
        "hooked": {path: type(get_path(model, path)).__name__ for path in HOOKED},
        "block_children": [n for n, _ in get_path(model, "vlm.vision_tower.blocks.-1.-1").named_children()],
        "channel_attn_children": [
            n
            for n, _ in get_path(
                model, "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn"
            ).named_children()
        ],
        "vlm_children": [n for n, _ in model.vlm.named_children()],
        "language_model_children": [n for n, _ in model.vlm.language_model.named_children()],
        "language_model_model_children": [n for n, _ in model.vlm.language_model.model.named_children()],
        "encoder_embed_tokens_is_shared": model.vlm.language_model.model.encoder.embed_tokens
        is model.vlm.language_model.model.shared,
        "prompt_embeds_is_parameter_or_buffer": any(
            t is model.prompt_embeds for t in (*model.parameters(), *model.buffers())
        ),
        "prompt_embeds_shape": list(model.prompt_embeds.shape),
    }


def measure_params(model) -> dict:
    return {name: list(t.shape) for name, t in model.vlm.state_dict().items()}


def measure_signatures(model) -> dict:
    return {
        f"{type(get_path(model, path)).__name__}.{method}": _params(
            inspect.signature(getattr(get_path(model, path), method))
        )
        for path, method in SIGNATURES
    }


def measure_tokenizer(model) -> dict:
    from ivra.rebuilt.flower import TOKENIZER_KWARGS

    tok = model.tokenizer
    prompts = model.construct_prompts({"lang_text": [INSTRUCTION, SHORT]})
    one = tok([prompts[0]], **TOKENIZER_KWARGS)
    two = tok(prompts, **TOKENIZER_KWARGS)
    return {
        "len": len(tok),
        "flow_id": tok.convert_tokens_to_ids("<Flow>"),
        "loc_0_id": tok.convert_tokens_to_ids("<loc_0>"),
        "prompt": prompts[0],
        "ids": one["input_ids"][0].tolist(),
        "batch_ids": two["input_ids"].tolist(),
        "batch_mask": two["attention_mask"].tolist(),
    }


@contextlib.contextmanager
def _capture(module, store: list, pre: bool = True):
    if pre:
        handle = module.register_forward_pre_hook(lambda m, a, kw: store.append((a, kw)), with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda m, a, kw, o: store.append((a, kw, o)), with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _shape(x):
    if torch.is_tensor(x):
        return list(x.shape)
    if isinstance(x, (tuple, list)):
        return [_shape(v) for v in x]
    return x


def measure_token_order(model) -> dict:
    """Where each piece sits in the encoder's input, found by comparing that input with the pieces."""
    obs = observation()
    batch = {"rgb_obs": obs["rgb_obs"], "lang_text": [INSTRUCTION]}
    calls, chan, win, vis = [], [], [], []
    encoder = model.vlm.get_encoder()
    block = get_path(model, "vlm.vision_tower.blocks.-1.-1")
    with (
        torch.no_grad(),
        _capture(encoder, calls),
        _capture(block.channel_block.channel_attn.fn.qkv, chan, pre=False),
        _capture(block.spatial_block.window_attn.fn, win),
        _capture(model.vlm.vision_tower.convs[0], vis),
    ):
        model.encode_observations(batch)
        passes = len(vis)
        merged = calls[-1][1]["inputs_embeds"]
        mask = calls[-1][1]["attention_mask"]
        static = model.vlm._encode_image(obs["rgb_obs"]["rgb_static"][:, 0])
        gripper = model.vlm._encode_image(obs["rgb_obs"]["rgb_gripper"][:, 0])
        text = model._get_text_embeddings(model.construct_prompts(batch), merged.device)
    flow = model.prompt_embeds.to(merged.device)
    pieces = [("rgb_static", static[0]), ("rgb_gripper", gripper[0]), ("<Flow>", flow[0]), ("text", text[0])]
    segments, start = [], 0
    for name, piece in pieces:
        n = piece.shape[0]
        if not torch.allclose(merged[0, start : start + n], piece.to(merged.dtype), atol=1e-6):
            err = (merged[0, start : start + n] - piece.to(merged.dtype)).abs().max().item()
            raise AssertionError(f"{name} is not at encoder positions {start}..{start + n} (max diff {err})")
        segments.append([name, start, start + n])
        start += n
    if start != merged.shape[1]:
        raise AssertionError(f"the encoder input has {merged.shape[1]} positions, the pieces {start}")
    return {
        "segments": segments,
        "encoder_input_shape": list(merged.shape),
        "attention_mask_all_ones": bool((mask == 1).all()),
        "attention_mask_dtype": str(mask.dtype),
        "encoder_called_with": sorted(calls[-1][1]),
        "vision_passes_per_step": passes,
        "channel_qkv_output_shape": _shape(chan[0][2]),
        "window_attn_args": _shape(win[0][0]),
    }


def measure_global_token(model) -> dict:
    """The first token of ``_encode_image`` is the spatial mean of the (position-embedded) patches, projected."""
    vlm = model.vlm
    pix = observation()["rgb_obs"]["rgb_static"][:, 0]
    with torch.no_grad():
        out = vlm._encode_image(pix)
        x = vlm.vision_tower.forward_features_unpool(pix)
        b, n, c = x.shape
        side = int(round(n**0.5))
        grid = x.view(b, side, side, c)
        x = (grid + vlm.image_pos_embed(grid)).view(b, n, c)
        x = x + vlm.visual_temporal_embed(x[:, :1]).view(1, 1, c)
        mean = vlm.image_proj_norm(x.mean(1) @ vlm.image_projection)
        patches = vlm.image_proj_norm(x @ vlm.image_projection)
    return {
        "tokens_per_image": out.shape[1],
        "patches": n,
        "feature_map": [side, side],
        "global_first_is_spatial_mean": bool(torch.allclose(out[:, 0], mean, atol=1e-5)),
        "patches_follow_in_raster_order": bool(torch.allclose(out[:, 1:], patches, atol=1e-5)),
    }


def measure_chunking(model) -> dict:
    obs = observation()
    goal = {"lang_text": SHORT, "lang": None}
    forwards, noises, ran = [], [], []
    handle = model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    original = model.sample_actions

    def spy(z, cond, inference=False):
        noises.append(list(z.shape))
        return original(z, cond, inference)

    model.sample_actions = spy
    try:
        with torch.no_grad():
            model.reset()
            torch.manual_seed(5)
            actions = []
            for k in range(12):
                before = len(forwards)
                actions.append(model.step(obs, goal))
                if len(forwards) > before:
                    ran.append(k)
            seq = list(model.pred_action_seq.shape)
            model.reset()
            torch.manual_seed(5)
            again = [model.step(obs, goal) for _ in range(12)]
            model.reset()
            torch.manual_seed(6)
            other = model.step(obs, goal)
    finally:
        handle.remove()
        del model.sample_actions
    return {
        "forward_at_steps_of_12": ran,
        "action_shape": list(actions[0].shape),
        "pred_action_seq_shape": seq,
        "noise_shape": noises[0],
        "same_global_seed_same_actions": all(torch.equal(a, b) for a, b in zip(actions, again)),
        "other_global_seed_other_actions": not torch.equal(other, actions[0]),
        "multistep": model.multistep,
        "act_window_size": model.act_window_size,
        "num_sampling_steps": model.num_sampling_steps,
    }


def measure_numerics(model) -> dict:
    """Outputs with every Florence-2 parameter filled by name (FLOWER's <Flow> embedding re-read afterwards)."""
    from ivra.rebuilt.flower import fill_deterministic, probe_pixels

    vlm = fill_deterministic(model.vlm)
    flow_id = model.tokenizer.convert_tokens_to_ids("<Flow>")
    with torch.no_grad():
        model.prompt_embeds = vlm.get_input_embeddings()(torch.tensor(flow_id))[None, None]
        images = vlm._encode_image(probe_pixels(2))
        i = torch.arange(20 * 32, dtype=torch.float64)
        embeds = (0.5 * torch.sin(0.05 * i)).view(1, 20, 32).float()
        encoded = vlm.get_encoder()(inputs_embeds=embeds, attention_mask=torch.ones(1, 20))[0]
        keys = []
        qkv = get_path(model, "vlm.vision_tower.blocks.-1.-1.channel_block.channel_attn.fn.qkv")
        with _capture(qkv, keys, pre=False):
            vlm._encode_image(probe_pixels(1))
        obs = observation()
        features = model.encode_observations({"rgb_obs": obs["rgb_obs"], "lang_text": [INSTRUCTION]})[
            "features"
        ]
    return {
        "encode_image": summary(images),
        "encoder": summary(encoded),
        "channel_qkv": summary(keys[0][2]),
        "features": summary(features),
    }


def measure(model) -> dict:
    """Every measurement; ``measure_numerics`` last (it overwrites the weights)."""
    model.eval()
    return {
        "tree": measure_tree(model),
        "parameters": measure_params(model),
        "signatures": measure_signatures(model),
        "tokenizer": measure_tokenizer(model),
        "token_order": measure_token_order(model),
        "global_token": measure_global_token(model),
        "chunking": measure_chunking(model),
        "numerics": measure_numerics(model),
    }


# -- facts read from FLOWER's files (not run) ---------------------------------------------------------------------------
def read_rollout(flower: Path) -> dict:
    """LIBERO observation keys FLOWER's rollout maps, its camera size and its zero-action warm-up, by parsing it."""
    path = flower / "flower/rollout/libero_rollout.py"
    tree = ast.parse(path.read_text())
    mapping, sizes, warmup = {}, {}, None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "translate_obs_space":
            for stmt in ast.walk(node):
                if (
                    isinstance(stmt, ast.Assign)
                    and isinstance(stmt.value, ast.Subscript)
                    and isinstance(stmt.value.slice, ast.Constant)
                ):
                    target = stmt.targets[0]
                    keys = []
                    while isinstance(target, ast.Subscript):
                        keys.insert(0, target.slice.value)
                        target = target.value
                    mapping[stmt.value.slice.value] = keys
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            if node.targets[0].attr in ("img_h", "img_w") and isinstance(node.value, ast.Constant):
                sizes[node.targets[0].attr] = node.value.value
        if (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Call)
            and getattr(node.iter.func, "id", "") == "range"
        ):
            body = ast.unparse(node)
            if "dummy" in body and warmup is None:
                warmup = node.iter.args[0].value
    return {"obs_mapping": mapping, "camera_size": sizes, "zero_action_warmup_steps": warmup}


def read_configs(flower: Path) -> dict:
    from omegaconf import OmegaConf

    transforms = OmegaConf.to_container(
        OmegaConf.load(flower / "conf/datamodule/transforms/libero_transforms.yaml")
    )
    model = OmegaConf.load(flower / "conf/model/flower.yaml")
    evaluation = OmegaConf.to_container(OmegaConf.load(flower / "conf/eval_libero.yaml"))
    keys = (
        "vlm_path",
        "act_window_size",
        "num_sampling_steps",
        "use_second_view",
        "action_dim",
        "vlm_prompt_style",
    )
    requirements = (flower / "requirements.txt").read_text().split()
    return {
        "val_transforms": {
            cam: [{k.replace("_target_", "target"): v for k, v in step.items()} for step in steps]
            for cam, steps in transforms["val"].items()
        },
        "model": {k: OmegaConf.select(model, k) for k in keys},
        "eval": {k: evaluation[k] for k in ("multistep", "num_sampling_steps", "max_steps", "n_eval")},
        "torch_pin": next((r for r in requirements if r.startswith("torch==")), None),
    }


# -- the tiny real model ------------------------------------------------------------------------------------------------
def make_tiny_florence2(florence2: Path, folder: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from ivra.rebuilt.flower import TINY_CONFIG, base_tokenizer

    for name in REMOTE_FILES:
        shutil.copy(florence2 / name, folder / name)
    config = {
        **TINY_CONFIG,
        "auto_map": {
            "AutoConfig": "configuration_florence2.Florence2Config",
            "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
        },
    }
    processor = {
        "auto_map": {"AutoProcessor": "processing_florence2.Florence2Processor"},
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "Florence2Processor",
        "image_seq_length": 17,
        "do_resize": True,
        "size": {"height": 112, "width": 112},
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_rescale": True,
        "resample": 3,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    base_tokenizer().save_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True
    )
    with torch.no_grad():  # the remote code leaves these torch.empty (a checkpoint fills them): random values
        torch.nn.init.trunc_normal_(model.image_projection, std=0.02)
        model.language_model.lm_head.weight.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    (folder / "config.json").write_text(
        json.dumps(config, indent=1)
    )  # save_pretrained drops vision model_type


def build_real(flower: Path, folder: Path):
    from ivra.rebuilt.flower import TINY_FLOWER_KWARGS

    sys.path.insert(0, str(flower))
    from flower.models.flower import FLOWERVLA

    torch.manual_seed(0)
    return FLOWERVLA(vlm_path=str(folder), **TINY_FLOWER_KWARGS).eval()


def _git(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--flower", type=Path, required=True, help="checkout of intuitive-robots/flower_vla_calvin"
    )
    ap.add_argument("--flower-repo", default="intuitive-robots/flower_vla_calvin", help="its repository name")
    ap.add_argument("--flower-commit", help="its commit (default: git rev-parse HEAD in --flower)")
    ap.add_argument(
        "--florence2", type=Path, required=True, help="folder with the remote Florence-2 .py files"
    )
    ap.add_argument(
        "--florence2-repo", default="microsoft/Florence-2-large", help="where those files come from"
    )
    ap.add_argument("--florence2-commit", help="their revision (default: git rev-parse HEAD in --florence2)")
    ap.add_argument("--florence2-read-from", default="", help="the mirror the files were read from, if any")
    ap.add_argument("--out", type=Path, required=True, help="the JSON fixture to write")
    args = ap.parse_args(argv)
    flower_commit = args.flower_commit or _git(args.flower)
    florence_commit = args.florence2_commit or _git(args.florence2)
    if not flower_commit or not florence_commit:
        ap.error("give --flower-commit / --florence2-commit (the folders are not git checkouts)")

    import timm
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny_florence2"
        folder.mkdir()
        make_tiny_florence2(args.florence2, folder)
        model = build_real(args.flower, folder)
        measured = measure(model)
    fl = f"{args.flower_repo}@{flower_commit}"
    f2 = f"{args.florence2_repo}@{florence_commit}"
    src = {
        "flower_model": f"{fl}:flower/models/flower.py",
        "flower_networks": f"{fl}:flower/models/networks/transformers.py",
        "flower_utils": f"{fl}:flower/models/utils.py",
        "flower_rollout": f"{fl}:flower/rollout/libero_rollout.py",
        "flower_eval": f"{fl}:flower/evaluation/flower_eval_libero.py",
        "flower_conf": f"{fl}:conf/model/flower.yaml, conf/eval_libero.yaml, conf/datamodule/transforms/libero_transforms.yaml",
        "florence2_modeling": f"{f2}:modeling_florence2.py",
        "florence2_config": f"{f2}:configuration_florence2.py",
        "florence2_processing": f"{f2}:processing_florence2.py",
    }
    fixture = {
        "about": "Facts recorded from the real FLOWER and remote Florence-2 code by scripts/record_fixture_flower.py "
        "at the tiny configuration of ivra.rebuilt.flower; tests/test_flower.py holds the rebuild to them.",
        "sources": {
            "flower": {"repo": args.flower_repo, "commit": flower_commit},
            "florence2": {
                "repo": args.florence2_repo,
                "commit": florence_commit,
                "read_from": args.florence2_read_from or None,
            },
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
        },
        "where": {
            "tree": [src["flower_model"], src["florence2_modeling"]],
            "parameters": [src["florence2_modeling"], src["flower_model"]],
            "signatures": [src["flower_model"], src["florence2_modeling"]],
            "tokenizer": [src["florence2_processing"], src["flower_model"], src["flower_utils"]],
            "token_order": [src["flower_model"], src["florence2_modeling"]],
            "global_token": [src["florence2_modeling"], src["florence2_config"]],
            "chunking": [src["flower_model"]],
            "numerics": [src["florence2_modeling"], src["flower_model"]],
            "rollout": [src["flower_rollout"], src["flower_eval"]],
            "configs": [src["flower_conf"], f"{fl}:requirements.txt"],
            "action_head": [src["flower_networks"]],
        },
        **measured,
        "rollout": read_rollout(args.flower),
        "configs": read_configs(args.flower),
        "action_head": {
            "note": "FLOWER's DiT passes attn_mask together with is_causal=True to scaled_dot_product_attention "
            "(FlowerAttention.forward); it ran here on the torch above. Not rebuilt: ivra.rebuilt.flower has a "
            "stand-in velocity head.",
            "flower_children": [n for n, _ in model.named_children()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
