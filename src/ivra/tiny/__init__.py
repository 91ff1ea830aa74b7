"""Tiny random-weight instances of the real transformers VLM classes, built from configs (nothing downloaded).

Used by the tests (one per adapter family), by ``ivra bench`` presets and by the random-weight LIBERO policy.
Each builder returns ``(model, inputs)`` where ``inputs`` is a dict ready for ``model(**inputs)`` /
``model.generate(**inputs)`` with ``batch`` samples; prompt tokens are random text ids around the image
placeholders, laid out the way each family's processor lays them out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VOCAB = 128
IMAGE_TOKEN = 120
VIDEO_TOKEN = 121
PAD = 0

_BUILDERS: dict[str, Callable[..., tuple[torch.nn.Module, dict]]] = {}


def _builder(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn

    return deco


def families() -> list[str]:
    return sorted(_BUILDERS)


def build(family: str, *, batch: int = 2, seed: int = 0, attn: str = "eager", dtype=torch.float32, **kw):
    """Build a tiny model of ``family`` with fixed random weights and matching random inputs."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; known: {families()}")
    torch.manual_seed(seed)
    model, inputs = _BUILDERS[family](batch=batch, attn=attn, **kw)
    model = model.to(dtype).eval()
    inputs = {
        k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()
    }
    return model, inputs


def _text(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(1, IMAGE_TOKEN - 10, (n,), generator=g)


def _ids(batch: int, image_tokens: list[list[int]], g: torch.Generator, pad_left: list[int] | None = None):
    """Sequences ``text(3) [image tokens] text(4)`` per sample; ``pad_left``/padding to a common length."""
    rows = []
    for b in range(batch):
        parts = [_text(3, g)]
        for chunk in image_tokens[b]:
            parts += [torch.tensor(chunk), _text(2, g)]
        parts.append(_text(4, g))
        rows.append(torch.cat(parts))
    length = max(len(r) for r in rows)
    ids = torch.full((batch, length), PAD, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for b, r in enumerate(rows):
        if pad_left is None or pad_left[b]:
            ids[b, length - len(r) :], mask[b, length - len(r) :] = r, 1
        else:
            ids[b, : len(r)], mask[b, : len(r)] = r, 1
    return ids, mask


def _llama(**kw):
    from transformers import LlamaConfig

    base = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=512,
        pad_token_id=PAD,
    )
    base.update(kw)
    return LlamaConfig(**base)


@_builder("llava")
def _llava(
    batch=2,
    attn="eager",
    images_per_sample=1,
    image_size=32,
    patch=8,
    strategy="default",
    padding_side="left",
    text_layers=4,
    **_,
):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vc = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
    )
    cfg = LlavaConfig(
        vision_config=vc,
        text_config=_llama(num_hidden_layers=text_layers),
        image_token_id=IMAGE_TOKEN,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-2,
    )
    cfg._attn_implementation = attn
    model = LlavaForConditionalGeneration(cfg)
    n = (image_size // patch) ** 2 + (1 if strategy == "full" else 0)
    g = torch.Generator().manual_seed(1)
    ids, mask = _ids(
        batch,
        [[[IMAGE_TOKEN] * n] * images_per_sample for _ in range(batch)],
        g,
        pad_left=[padding_side == "left"] * batch,
    )
    if batch > 1:  # make the first sample shorter so that padding really occurs
        ids, mask = _shorten_first(ids, mask, padding_side)
    pixel = torch.randn(batch * images_per_sample, 3, image_size, image_size, generator=g)
    return model, {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel}


def _shorten_first(ids, mask, side):
    """Drop two text tokens of sample 0 and pad instead (keeps the image tokens)."""
    ids, mask = ids.clone(), mask.clone()
    row = ids[0][mask[0].bool()]
    keep = torch.cat([row[:1], row[3:]])
    ids[0], mask[0] = PAD, 0
    if side == "left":
        ids[0, -len(keep) :], mask[0, -len(keep) :] = keep, 1
    else:
        ids[0, : len(keep)], mask[0, : len(keep)] = keep, 1
    return ids, mask


@_builder("paligemma")
def _paligemma(batch=2, attn="eager", image_size=32, patch=8, images_per_sample=1, **_):
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        SiglipVisionConfig,
    )

    vc = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
        projection_dim=64,
    )
    tc = GemmaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=VOCAB,
        pad_token_id=PAD,
    )
    cfg = PaliGemmaConfig(vision_config=vc, text_config=tc, image_token_id=IMAGE_TOKEN, projection_dim=64)
    cfg._attn_implementation = attn
    model = PaliGemmaForConditionalGeneration(cfg)
    n = (image_size // patch) ** 2
    g = torch.Generator().manual_seed(1)
    # PaliGemma's processor puts the image tokens first, then BOS and the prompt
    text = [torch.cat([torch.full((n * images_per_sample,), IMAGE_TOKEN), _text(6, g)]) for _ in range(batch)]
    ids = torch.stack(text)
    mask = torch.ones_like(ids)
    pixel = torch.randn(batch * images_per_sample, 3, image_size, image_size, generator=g)
    return model, {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel,
        "token_type_ids": torch.zeros_like(ids),
    }


def _idefics_like(cls_name, cfg_name, batch, attn, images_per_sample, pad_last):
    import transformers

    vc_cls = getattr(transformers, cfg_name.replace("Config", "VisionConfig"))
    vc = vc_cls(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    cfg = getattr(transformers, cfg_name)(
        vision_config=vc.to_dict(), text_config=_llama().to_dict(), image_token_id=IMAGE_TOKEN, scale_factor=2
    )
    cfg._attn_implementation = attn
    model = getattr(transformers, cls_name)(cfg)
    n = (32 // 8) ** 2 // 4  # 16 patches, pixel shuffle 2x2 -> 4 tokens per image
    g = torch.Generator().manual_seed(1)
    counts = [images_per_sample - (1 if (pad_last and b == batch - 1) else 0) for b in range(batch)]
    ids, mask = _ids(batch, [[[IMAGE_TOKEN] * n] * c for c in counts], g)
    pixel = torch.randn(batch, images_per_sample, 3, 32, 32, generator=g)
    for b, c in enumerate(counts):
        pixel[b, c:] = 0  # all-zero padding images, dropped by the model
    return model, {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel}


@_builder("idefics3")
def _idefics3(batch=2, attn="eager", images_per_sample=2, pad_last=True, **_):
    return _idefics_like(
        "Idefics3ForConditionalGeneration", "Idefics3Config", batch, attn, images_per_sample, pad_last
    )


@_builder("smolvlm")
def _smolvlm(batch=2, attn="eager", images_per_sample=2, pad_last=True, **_):
    return _idefics_like(
        "SmolVLMForConditionalGeneration", "SmolVLMConfig", batch, attn, images_per_sample, pad_last
    )


@_builder("qwen2_5_vl")
def _qwen(batch=2, attn="eager", grid=(1, 8, 12), images_per_sample=1, **_):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vc = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        in_channels=3,
        patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=16,
        out_hidden_size=64,
        fullatt_block_indexes=[2],
    )
    tc = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]},
        max_position_embeddings=512,
        pad_token_id=PAD,
    )
    cfg = Qwen2_5_VLConfig(
        vision_config=vc,
        text_config=tc,
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        vision_start_token_id=122,
        vision_end_token_id=123,
    )
    cfg._attn_implementation = attn
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    t, h, w = grid
    n = t * h * w // 4
    g = torch.Generator().manual_seed(1)
    span = [122] + [IMAGE_TOKEN] * n + [123]
    ids, mask = _ids(batch, [[span] * images_per_sample for _ in range(batch)], g)
    patch_dim = 3 * 2 * 4 * 4
    pixel = torch.randn(batch * images_per_sample * t * h * w, patch_dim, generator=g)
    thw = torch.tensor([list(grid)] * batch * images_per_sample)
    return model, {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel, "image_grid_thw": thw}


@_builder("florence2")
def _florence2(batch=2, attn="eager", **_):
    from transformers import (
        BartConfig,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2VisionConfig,
    )

    vc = Florence2VisionConfig(
        depths=[1, 1],
        patch_size=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[3, 1],
        patch_prenorm=[False, True],
        embed_dim=[16, 32],
        num_heads=[2, 4],
        num_groups=[2, 4],
        window_size=3,
        projection_dim=64,
    )
    tc = BartConfig(
        vocab_size=VOCAB,
        d_model=64,
        encoder_layers=3,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    cfg = Florence2Config(vision_config=vc, text_config=tc, image_token_id=IMAGE_TOKEN)
    cfg._attn_implementation = attn
    model = Florence2ForConditionalGeneration(cfg)
    size = 40  # stride 4 then 2 -> 5x5 patches, window 3 -> padded windows
    n = (size // 8) ** 2 + 1
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.cat([torch.full((n,), IMAGE_TOKEN), _text(6, g)]) for _ in range(batch)])
    pixel = torch.randn(batch, 3, size, size, generator=g)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel}
