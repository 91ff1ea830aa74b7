"""Tiny random-weight LLaRA models on llava-torch's **real** classes (needs ``llava-torch``, transformers 4.37).

* :func:`build_tiny` builds ``llava.model.LlavaLlamaForCausalLM`` from a tiny ``LlavaConfig`` whose
  ``mm_vision_tower`` is a local directory holding a tiny random ``CLIPVisionModel`` + ``CLIPImageProcessor``
  (written with ``save_pretrained``): LLaVA's own ``CLIPVisionTower.load_model`` loads them, nothing is
  downloaded. The language model is a real transformers Llama.
* :class:`LlaraForkLlama` reproduces, from its documented behaviour (our code), the one change LLaRA's fork makes
  to LLaVA's splice: ``<imageK>`` is tokenised to ``-200 - K`` and takes image ``K`` of the placeholder's own
  sample (images given per sample as a (B, K, 3, H, W) tensor), so the text order need not be the image order.
  The vision pass stays LLaVA's (all images in one ``encode_images`` call, in image order); the rows are then
  handed to LLaVA's real splice in text order.
"""

from __future__ import annotations

import os
import tempfile

import torch
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel


def write_tiny_clip(directory: str, image_size: int = 112, patch_size: int = 14, seed: int = 0) -> str:
    """A tiny random CLIP vision tower + its image processor, saved where LLaVA's loader reads them."""
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPVisionModel(cfg).save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(directory)
    return directory


class LlaraForkLlama(LlavaLlamaForCausalLM):
    """LLaVA + LLaRA's ``<imageK>`` rule (see the module docstring); everything else is llava-torch's code."""

    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None
    ):
        if images is None or input_ids.shape[1] == 1 or not torch.is_tensor(images) or images.ndim != 5:
            return super().prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
            )
        batch, k = images.shape[:2]
        features = self.encode_images(images.flatten(0, 1)).unflatten(0, (batch, k))  # one vision pass
        ids = input_ids.clone()
        in_text_order = []
        for b in range(batch):
            valid = (
                attention_mask[b].bool()
                if attention_mask is not None
                else torch.ones_like(ids[b], dtype=bool)
            )
            for pos in ((ids[b] <= IMAGE_TOKEN_INDEX) & valid).nonzero().squeeze(1).tolist():
                index = IMAGE_TOKEN_INDEX - int(ids[b, pos])
                if not 0 <= index < k:
                    raise ValueError(f"<image{index}> in sample {b}, which has {k} images")
                in_text_order.append(features[b, index])
                ids[b, pos] = IMAGE_TOKEN_INDEX
        rows = torch.stack(in_text_order)
        original = self.encode_images
        self.encode_images = lambda _images: rows  # LLaVA's splice consumes the rows in text order
        try:
            return super().prepare_inputs_labels_for_multimodal(
                ids, position_ids, attention_mask, past_key_values, labels, rows, image_sizes
            )
        finally:
            del self.encode_images
            assert self.encode_images == original


def build_tiny(
    clip_dir: str | None = None,
    *,
    seed: int = 0,
    fork: bool = False,
    image_aspect_ratio: str = "pad",
    text_layers: int = 4,
    hidden: int = 64,
    vocab: int = 512,
    padding_side: str = "right",
    select_feature: str = "patch",
):
    """A random-weight LLaVA-1.5 (``LlaraForkLlama`` with ``fork=True``) with its vision tower loaded."""
    clip_dir = clip_dir or write_tiny_clip(os.path.join(tempfile.mkdtemp(prefix="ivra-llara-"), "clip"))
    cfg = LlavaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        mm_vision_tower=clip_dir,
        mm_vision_select_layer=-2,
        mm_vision_select_feature=select_feature,
        mm_projector_type="mlp2x_gelu",
        mm_hidden_size=32,
        image_aspect_ratio=image_aspect_ratio,
        tokenizer_padding_side=padding_side,
        mm_patch_merge_type="flat",
    )
    cfg._attn_implementation = "eager"
    cls = LlaraForkLlama if fork else LlavaLlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    model.get_model().get_vision_tower().load_model()
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = 0, 1, None
    return model.eval()
