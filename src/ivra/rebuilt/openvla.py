"""OpenVLA / OpenVLA-OFT's model structure, rebuilt from published facts (ours; needs timm 0.9.x, transformers 4.40).

OpenVLA ships its model as Hugging Face remote code (``modeling_prismatic.py``), which cannot be downloaded here.
This module is **our own** rebuild of the structure IVRA meets, written from the facts the projects document (no
code taken from them), so that the ``openvla`` adapter and policy wrapper are tested against the same module tree,
call order and sequence layout:

* ``vision_backbone.featurizer`` (and, fused, ``vision_backbone.fused_featurizer``): real ``timm`` ViTs created
  from ``timm_model_ids`` (DINOv2 ViT-L/14 with 4 registers + SigLIP SO400M/14 in OpenVLA; tiny variants through
  ``timm_override_kwargs``); each tower's ``forward`` returns ``get_intermediate_layers(n={depth - 2})``: the
  second-to-last block's output, prefix tokens (CLS + registers) dropped. The 6-channel pixel input holds the
  DINO-normalised image in channels 0-2 and the SigLIP-normalised one in 3-5; the two 16x16 grids are concatenated
  along channels. OFT: ``num_images_in_input`` images of 6 channels each, each through both towers in turn, their
  patches concatenated along the sequence.
* ``projector``: an MLP to the language model's width (3 layers, GELU, when fused; 2 otherwise).
* ``language_model``: a real ``transformers.LlamaForCausalLM``. The projected patches are spliced after the first
  token through ``inputs_embeds``: LLM positions ``1 .. 1 + 256 * num_images`` are visual, with no placeholder ids;
  OFT's proprio token (``proprio_projector``) follows the patches.
* ``predict_action``: ``generate(max_new_tokens=action_dim)``; decode steps carry one token and the cache; the
  last ``n_action_bins`` ids of the base vocabulary are the action tokens: ``bin = vocab_size - id - 1``
  (clipped to the 255 bin centres of 256 uniform bins on [-1, 1]), then q01/q99 un-normalisation where the mask
  says so (the gripper is not un-normalised).
* OFT (``predict_action_chunk``): one forward, no ``generate``; ``chunk * action_dim`` empty action placeholder
  tokens follow the prompt, and a small head maps their last hidden states to a continuous action chunk.
  ``use_film``: every tower block is wrapped (``blocks[i].block`` is the timm block) and modulates the
  post-attention residual with a scale/shift computed from the mean language embedding.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import timm
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel

DINO_ID = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_ID = "vit_so400m_patch14_siglip_224"
TINY_TOWER = {"embed_dim": 64, "depth": 4, "num_heads": 4}


class PrismaticConfig(PretrainedConfig):
    model_type = "ivra_rebuilt_prismatic"

    def __init__(
        self,
        timm_model_ids=(DINO_ID, SIGLIP_ID),
        timm_override_kwargs=None,
        image_size=224,
        text_config=None,
        pad_to_multiple_of=64,
        n_action_bins=256,
        norm_stats=None,
        num_images_in_input=1,
        use_proprio=False,
        proprio_dim=8,
        use_film=False,
        action_chunk=8,
        action_dim=7,
        **kwargs,
    ):
        self.timm_model_ids = list(timm_model_ids)
        self.timm_override_kwargs = dict(timm_override_kwargs or {})
        self.use_fused_vision_backbone = len(self.timm_model_ids) == 2
        self.image_size = image_size
        self.text_config = LlamaConfig(**(text_config or {}))
        self.pad_to_multiple_of = pad_to_multiple_of
        self.n_action_bins = n_action_bins
        self.norm_stats = norm_stats or {}
        self.num_images_in_input = num_images_in_input
        self.use_proprio = use_proprio
        self.proprio_dim = proprio_dim
        self.use_film = use_film
        self.action_chunk = action_chunk
        self.action_dim = action_dim
        super().__init__(**kwargs)

    def to_dict(self):
        out = super().to_dict()
        out["text_config"] = self.text_config.to_dict()
        return out


class FiLMedBlock(nn.Module):
    """A timm block (``.block``) whose post-attention residual is modulated by the language embedding."""

    def __init__(self, block: nn.Module, vision_dim: int, llm_dim: int):
        super().__init__()
        self.block = block
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        gamma, beta = self.scale(language)[:, None], self.shift(language)[:, None]
        x = x * (1 + gamma) + beta
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x))))


def _second_to_last(tower: nn.Module):
    """OpenVLA's featurizer forward: the second-to-last block's patch tokens (timm runs every block)."""
    take = len(tower.blocks) - 2

    def forward(x):
        return tower.get_intermediate_layers(x, n={take})[0]

    return forward


def _film_forward(tower: nn.Module):
    take = len(tower.blocks) - 2

    def forward(x, language):
        x = tower.norm_pre(tower.patch_drop(tower._pos_embed(tower.patch_embed(x))))
        out = None
        for i, blk in enumerate(tower.blocks):
            x = blk(x, language)
            if i == take:
                out = x
        return out[:, tower.num_prefix_tokens :]

    return forward


class PrismaticVisionBackbone(nn.Module):
    def __init__(self, config: PrismaticConfig):
        super().__init__()
        make = partial(
            timm.create_model,
            pretrained=False,
            num_classes=0,
            img_size=config.image_size,
            **config.timm_override_kwargs,
        )
        self.use_fused_vision_backbone = config.use_fused_vision_backbone
        self.num_images_in_input = config.num_images_in_input
        self.use_film = config.use_film
        self.featurizer = make(config.timm_model_ids[0])
        self.embed_dim = self.featurizer.embed_dim
        towers = [self.featurizer]
        if self.use_fused_vision_backbone:
            self.fused_featurizer = make(config.timm_model_ids[1])
            self.embed_dim += self.fused_featurizer.embed_dim
            towers.append(self.fused_featurizer)
        for tower in towers:
            if config.use_film:
                tower.blocks = nn.Sequential(
                    *[FiLMedBlock(b, tower.embed_dim, config.text_config.hidden_size) for b in tower.blocks]
                )
                tower.forward = _film_forward(tower)
            else:
                tower.forward = _second_to_last(tower)

    def _one_image(self, pixels: torch.Tensor, language) -> torch.Tensor:
        extra = (language,) if self.use_film else ()
        if not self.use_fused_vision_backbone:
            return self.featurizer(pixels, *extra)
        img, img_fused = torch.split(pixels, [3, 3], dim=1)
        return torch.cat([self.featurizer(img, *extra), self.fused_featurizer(img_fused, *extra)], dim=2)

    def forward(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        per_image = 6 if self.use_fused_vision_backbone else 3
        images = torch.split(pixel_values, [per_image] * self.num_images_in_input, dim=1)
        return torch.cat([self._one_image(img, language) for img in images], dim=1)


class PrismaticProjector(nn.Module):
    def __init__(self, fused: bool, vision_dim: int, llm_dim: int):
        super().__init__()
        if fused:
            self.fc1, self.fc2 = nn.Linear(vision_dim, 4 * vision_dim), nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1, self.fc2, self.fc3 = nn.Linear(vision_dim, llm_dim), nn.Linear(llm_dim, llm_dim), None
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(x)))
        return self.fc3(self.act(x)) if self.fc3 is not None else x


class OpenVLAForActionPrediction(PreTrainedModel):
    """OpenVLA (and OFT's variant, by config) rebuilt: see the module docstring."""

    config_class = PrismaticConfig
    base_model_prefix = "language_model"
    _supports_cache_class = True

    def __init__(self, config: PrismaticConfig):
        super().__init__(config)
        self.vision_backbone = PrismaticVisionBackbone(config)
        llm_dim = config.text_config.hidden_size
        self.projector = PrismaticProjector(
            config.use_fused_vision_backbone, self.vision_backbone.embed_dim, llm_dim
        )
        self.language_model = LlamaForCausalLM(config.text_config)
        if config.use_proprio:
            self.proprio_projector = nn.Sequential(
                nn.Linear(config.proprio_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)
            )
        self.action_head = nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, 1))
        self.vocab_size = config.text_config.vocab_size - config.pad_to_multiple_of
        bins = np.linspace(-1, 1, config.n_action_bins)
        self.bin_centers = (bins[:-1] + bins[1:]) / 2.0

    def _init_weights(self, module):
        std = 0.02
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    # -- one pass --------------------------------------------------------------------------------------------------
    def _prefix(self, input_ids, attention_mask, pixel_values, proprio):
        embeds = self.get_input_embeddings()(input_ids)
        language = embeds.mean(1) if self.config.use_film else None
        patches = self.projector(self.vision_backbone(pixel_values, language))
        if self.config.use_proprio:
            patches = torch.cat([patches, self.proprio_projector(proprio)[:, None]], dim=1)
        merged = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(attention_mask.shape[0], patches.shape[1])
            attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        return merged, attention_mask, patches.shape[1]

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        labels=None,
        inputs_embeds=None,
        past_key_values=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        proprio=None,
        **kwargs,
    ):
        if input_ids is not None and input_ids.shape[1] == 1 and past_key_values is not None:
            # cached decode: the caller's mask does not count the spliced patches, so none is passed (batch of one)
            return self.language_model(
                input_ids=input_ids,
                attention_mask=None,
                past_key_values=past_key_values,
                use_cache=use_cache,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        if pixel_values is None:
            return self.language_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                past_key_values=past_key_values,
                use_cache=use_cache,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        merged, mask, _ = self._prefix(input_ids, attention_mask, pixel_values, proprio)
        return self.language_model(
            inputs_embeds=merged,
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, pixel_values=None, **kwargs
    ):
        if past_key_values is not None:
            input_ids = input_ids[:, -1:]
        return {
            "input_ids": input_ids,
            "past_key_values": past_key_values,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "use_cache": kwargs.get("use_cache"),
        }

    def _reorder_cache(self, past_key_values, beam_idx):
        return self.language_model._reorder_cache(past_key_values, beam_idx)

    # -- actions ---------------------------------------------------------------------------------------------------
    def get_action_dim(self, unnorm_key=None) -> int:
        return self.config.action_dim

    def action_tokens_to_normalized(self, token_ids: np.ndarray) -> np.ndarray:
        discretized = self.vocab_size - np.asarray(token_ids)
        index = np.clip(discretized - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[index]

    def unnormalize(self, normalized: np.ndarray, unnorm_key=None) -> np.ndarray:
        stats = self.config.norm_stats
        if unnorm_key is None:
            if len(stats) != 1:
                raise ValueError(f"unnorm_key must name one of {sorted(stats)}")
            unnorm_key = next(iter(stats))
        if unnorm_key not in stats:
            raise ValueError(f"unnorm_key {unnorm_key!r} not in the model's norm stats {sorted(stats)}")
        a = stats[unnorm_key]["action"]
        high, low = np.asarray(a["q99"]), np.asarray(a["q01"])
        mask = np.asarray(a.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
        return np.where(mask, 0.5 * (normalized + 1) * (high - low) + low, normalized)

    @torch.no_grad()
    def predict_action(self, input_ids, unnorm_key=None, **kwargs) -> np.ndarray:
        """Greedy decode of ``action_dim`` action tokens (batch of one, as OpenVLA), un-normalised."""
        dim = self.get_action_dim(unnorm_key)
        generated = self.generate(input_ids, max_new_tokens=dim, min_new_tokens=dim, **kwargs)
        tokens = generated[0, -dim:].cpu().numpy()
        return self.unnormalize(self.action_tokens_to_normalized(tokens), unnorm_key)

    @torch.no_grad()
    def predict_action_chunk(self, input_ids, attention_mask, pixel_values, proprio=None) -> torch.Tensor:
        """OFT: one forward with ``chunk * action_dim`` empty action tokens after the prompt -> (B, chunk, dim)."""
        n_act = self.config.action_chunk * self.config.action_dim
        pad = torch.zeros(input_ids.shape[0], n_act, dtype=input_ids.dtype, device=input_ids.device)
        ids = torch.cat([input_ids, pad], dim=1)
        mask = torch.cat([attention_mask, torch.ones_like(pad)], dim=1)
        out = self(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pixel_values,
            proprio=proprio,
            output_hidden_states=True,
        )
        hidden = out.hidden_states[-1][:, -n_act:]
        return self.action_head(hidden).reshape(-1, self.config.action_chunk, self.config.action_dim)


def build_tiny(
    *,
    seed: int = 0,
    towers: tuple[str, ...] = (DINO_ID, SIGLIP_ID),
    num_images_in_input: int = 1,
    use_proprio: bool = False,
    use_film: bool = False,
    text_layers: int = 4,
    hidden: int = 64,
    base_vocab: int = 512,
    norm_stats: dict | None = None,
    dtype=torch.float32,
) -> OpenVLAForActionPrediction:
    """A random-weight instance with tiny towers (4 blocks, width 64) at 224 px and a tiny Llama, eager attention."""
    cfg = PrismaticConfig(
        timm_model_ids=towers,
        timm_override_kwargs=TINY_TOWER,
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": text_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": base_vocab + 64,
            "max_position_embeddings": 2048,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        norm_stats=norm_stats,
        num_images_in_input=num_images_in_input,
        use_proprio=use_proprio,
        use_film=use_film,
    )
    cfg.text_config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLAForActionPrediction(cfg)
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = 0, 1, None
    return model.to(dtype).eval()
