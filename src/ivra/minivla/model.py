"""The tiny LLaRA-style policy: transformers' LLaVA classes (CLIP-style ViT + small Llama), built from configs.

Prompt layout (LLaRA style, action as text)::

    <image> x N_patches  <bos> instruction words <sep>   ->   b1 b2 b3 b4 <eos>

where b1..b4 are the bins of pick_x, pick_y, place_x, place_y.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ivra.minivla.tokenizer import WordTokenizer

PROMPTS = ("image_first", "instruction_first")


@dataclass(frozen=True)
class MiniVLASpec:
    image_size: int = 96
    patch_size: int = 16
    vision_width: int = 192
    vision_layers: int = 6
    vision_heads: int = 6
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 8
    text_ffn: int = 512
    clip_text_width: int = 128
    clip_text_layers: int = 2
    projection_dim: int = 128
    #: token order of the prompt: "image_first" (LLaVA's ``<image>`` then the instruction; the visual tokens
    #: cannot see the instruction) or "instruction_first" (the visual tokens follow, and can attend to, it)
    prompt: str = "image_first"

    def __post_init__(self):
        if self.prompt not in PROMPTS:
            raise ValueError(f"unknown prompt order {self.prompt!r}; expected one of {PROMPTS}")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def small(cls) -> MiniVLASpec:
        """A very small variant (48 px, 2+2 layers) for tests: same code paths, seconds to train."""
        return cls(
            image_size=48,
            patch_size=12,
            vision_width=32,
            vision_layers=2,
            vision_heads=2,
            text_width=32,
            text_layers=2,
            text_heads=2,
            text_ffn=64,
            clip_text_width=32,
            clip_text_layers=1,
            projection_dim=16,
        )


def vision_config(spec: MiniVLASpec):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=spec.vision_width,
        intermediate_size=4 * spec.vision_width,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.projection_dim,
    )


def build_clip(spec: MiniVLASpec, vocab_size: int):
    """CLIP model used only for the contrastive pre-training of the vision tower."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=spec.clip_text_width,
        intermediate_size=4 * spec.clip_text_width,
        num_hidden_layers=spec.clip_text_layers,
        num_attention_heads=4,
        max_position_embeddings=96,
        projection_dim=spec.projection_dim,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    cfg = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision_config(spec).to_dict(),
        projection_dim=spec.projection_dim,
    )
    return CLIPModel(cfg)


def build_policy(spec: MiniVLASpec, tok: WordTokenizer):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.text_width,
        intermediate_size=spec.text_ffn,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=256,
        pad_token_id=tok.pad_id,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        tie_word_embeddings=False,
    )
    cfg = LlavaConfig(
        vision_config=vision_config(spec),
        text_config=text,
        image_token_id=tok.image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    cfg._attn_implementation = "sdpa"
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_id
    model.generation_config.eos_token_id = tok.eos_id
    model.generation_config.bos_token_id = tok.bos_id
    return model


def pixels(images) -> torch.Tensor:
    """uint8 images (B, H, W, 3) -> float pixel values (B, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)).float().div_(127.5).sub_(1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def prompt_ids(tok: WordTokenizer, spec: MiniVLASpec, instruction: str) -> list[int]:
    image, words = [tok.image_id] * spec.n_patches, tok.encode(instruction)
    if spec.prompt == "instruction_first":
        return [tok.bos_id] + words + image + [tok.sep_id]
    return image + [tok.bos_id] + words + [tok.sep_id]


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = torch.tensor(r)
        mask[i, length - len(r) :] = 1
    return ids, mask


def prompt_batch(tok, spec, images, instructions) -> dict[str, torch.Tensor]:
    ids, mask = left_pad([prompt_ids(tok, spec, s) for s in instructions], tok.pad_id)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(images)}


def action_grammar(tok: WordTokenizer, prompt_len: int):
    """``generate``'s ``prefix_allowed_tokens_fn`` for the action grammar: four number tokens, then <eos>.

    Greedy decoding under it picks, at each step, the model's most likely token *among those the grammar allows*:
    wherever free greedy decoding already writes four numbers then <eos>, it gives exactly the same tokens; where it
    would leave the grammar, the action is the model's own best well-formed answer instead of none."""
    numbers, eos = list(tok.number_ids), [tok.eos_id]

    def allowed(batch_id: int, ids: torch.Tensor) -> list[int]:
        return numbers if ids.shape[-1] - prompt_len < 4 else eos

    return allowed


@torch.no_grad()
def predict(model, tok, spec, images, instructions, grammar: bool = True) -> tuple[np.ndarray, list[bool]]:
    """Greedy-decode actions for a batch. ``ok[i]``: free greedy decoding of row i is well-formed (four number
    tokens then <eos>). ``grammar=True`` (the default) decodes under :func:`action_grammar`, so every row is an
    action (the same as free decoding's wherever ``ok``); ``grammar=False`` decodes freely, and malformed rows are
    NaN."""
    batch = prompt_batch(tok, spec, images, instructions)
    n_prompt = batch["input_ids"].shape[1]
    extra = {"prefix_allowed_tokens_fn": action_grammar(tok, n_prompt)} if grammar else {}
    gen = model.generate(
        **batch, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True, **extra
    )
    new = gen.sequences[:, n_prompt:]
    free = torch.stack(
        [lg.argmax(-1) for lg in gen.logits], dim=1
    )  # the model's unconstrained choice per step
    actions = np.full((len(instructions), 4), np.nan, dtype=np.float32)
    ok = []
    for i, row in enumerate(new.tolist()):
        a = tok.decode_action(row)
        # well-formed freely: a well-formed row whose every token was also the model's free choice
        ok.append(a is not None and free[i].tolist() == row[: free.shape[1]])
        if a is not None:
            actions[i] = a
    return actions, ok
