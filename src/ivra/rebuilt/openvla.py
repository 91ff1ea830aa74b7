"""OpenVLA / OpenVLA-OFT's model structure, rebuilt from recorded facts (ours; needs timm 0.9.x, transformers 4.40).

OpenVLA ships its model as Hugging Face remote code (``prismatic/extern/hf/modeling_prismatic.py``), which cannot be
downloaded here. This module is **our own** rebuild of the structure IVRA meets, written from facts (no code taken
from those projects) and held to fixtures recorded from the real code: ``tests/fixtures/real/openvla.json``
(github.com/openvla/openvla) and ``tests/fixtures/real/openvla_oft.json`` (github.com/moojink/openvla-oft), each
naming its commit and files, recorded by ``scripts/record_fixture_openvla.py`` and checked by
``tests/envs/openvla/test_real_facts.py`` (module paths and classes, parameter names and shapes, signatures, the
order of the tokens the language model sees, and a numeric probe).

* ``vision_backbone`` (``PrismaticVisionBackbone``): ``featurizer`` and, fused, ``fused_featurizer``: real ``timm``
  ViTs created from ``timm_model_ids`` (DINOv2 ViT-L/14 with 4 registers, then SigLIP SO400M/14; tiny variants
  through ``timm_override_kwargs``), each ``LayerScale``'s ``gamma`` renamed ``scale_factor``. A tower call returns
  the output of block ``depth - 2`` (every block runs), prefix tokens (DINOv2: CLS + 4 registers) dropped. Per
  image, 6 channels: the DINOv2 input in 0-2, the SigLIP input in 3-5; the two 16x16 grids joined along channels.
  OFT: ``num_images_in_input`` images of 6 channels, their patches joined along the sequence in image order.
* ``projector`` (``PrismaticProjector``): ``fc1 -> act_fn1 -> fc2 [-> act_fn2 -> fc3]`` (fused: 3 layers).
* ``language_model``: a real ``transformers.LlamaForCausalLM`` (transformers' default attention, as the real code).
  The projected patches are spliced right after the first token through ``inputs_embeds``: LLM positions
  ``1 .. 256 * num_images`` are visual, with no placeholder ids.
* ``predict_action`` (OpenVLA): appends the empty token 29871 when the prompt does not end with it, then
  ``generate(max_new_tokens=action_dim)`` with the caller's attention mask passed through unchanged; decode steps
  carry one token and the cache; ``bin = vocab_size - id - 1`` (clipped to the 255 centres of 256 uniform bins on
  [-1, 1]), then q01/q99 un-normalisation where the mask says so.
* OFT (:class:`OpenVLAOFTForActionPrediction`, built by ``build_tiny`` with any OFT option): ``predict_action`` runs
  one forward over ``[BOS, patches of every image, proprio token, prompt + 29871, chunk * action_dim placeholders
  (embeddings zeroed), stop token 2]`` and the action head reads the last hidden states from the last prompt token
  on (``chunk * action_dim`` of them); returns ``(actions, hidden states)``. ``use_film``: ``vision_backbone`` is a
  ``FiLMedPrismaticVisionBackbone`` holding the original backbone as ``.vision_backbone``; each tower becomes a
  ``FiLMedVisionTransformer`` whose ``blocks[i]`` wrap the timm block as ``.block`` and modulate the
  post-attention residual with ``scale``/``shift`` of the mean embedding of the non-action tokens.
  In OFT the proprio projector and the action head are separate modules passed to ``predict_action``; here the
  model also keeps them as ``proprio_projector`` / ``action_head`` (ours: :meth:`predict_action_chunk` uses them).
"""

from __future__ import annotations

import types

import numpy as np
import timm
import torch
from timm.models.vision_transformer import LayerScale, VisionTransformer
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel

DINO_ID = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_ID = "vit_so400m_patch14_siglip_224"
TINY_TOWER = {"embed_dim": 64, "depth": 4, "num_heads": 4}
EMPTY_TOKEN = 29871  # Llama-2's '' token, which OpenVLA's prompts end with after "Out:"
STOP_INDEX = 2  # '</s>', after OFT's action placeholders
ACTION_TOKEN_BEGIN_IDX = 31743  # OFT: labels above this mark action positions
IGNORE_INDEX = -100


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


# -- vision ------------------------------------------------------------------------------------------------------------
def _scale(self, x: torch.Tensor) -> torch.Tensor:
    return x.mul_(self.scale_factor) if self.inplace else x * self.scale_factor


def _rename_layer_scales(tower: nn.Module) -> None:
    """Each timm ``LayerScale`` keeps its class and its factor, stored as ``scale_factor`` instead of ``gamma``."""
    for m in tower.modules():
        if isinstance(m, LayerScale) and "gamma" in m._parameters:
            factor = m._parameters.pop("gamma")
            m.scale_factor = nn.Parameter(factor.detach().clone())
            m.forward = types.MethodType(_scale, m)


def _second_to_last(tower: nn.Module):
    """A tower call: every block runs; block ``depth - 2``'s output without the prefix tokens is returned."""
    take = len(tower.blocks) - 2

    def forward(x):
        return tower.get_intermediate_layers(x, n={take})[0]

    return forward


class FiLMedVisionTransformerBlock(nn.Module):
    """A timm block (``.block``) whose post-attention residual is scaled by ``1 + scale(l)`` and shifted by
    ``shift(l)``, ``l`` the mean language embedding."""

    def __init__(self, block: nn.Module, vision_dim: int, llm_dim: int):
        super().__init__()
        self.block = block
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x, average_language_embedding):
        b = self.block
        gamma = self.scale(average_language_embedding)[:, None]
        beta = self.shift(average_language_embedding)[:, None]
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        x = x * (1 + gamma) + beta
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x))))


class FiLMedVisionTransformer(VisionTransformer):
    """A timm ViT whose blocks take the mean language embedding too; a call returns block ``depth - 2``'s output
    without the prefix tokens (every block runs)."""

    def forward(self, x, average_language_embedding):
        take = len(self.blocks) - 2
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        out = None
        for i, blk in enumerate(self.blocks):
            x = blk(x, average_language_embedding)
            if i == take:
                out = x
        return out[:, self.num_prefix_tokens :]


def _film(tower: nn.Module, llm_dim: int) -> None:
    tower.blocks = nn.Sequential(
        *[FiLMedVisionTransformerBlock(b, tower.embed_dim, llm_dim) for b in tower.blocks]
    )
    tower.__dict__.pop("forward", None)  # the class's forward, not the plain tower's
    tower.__class__ = FiLMedVisionTransformer


class PrismaticVisionBackbone(nn.Module):
    def __init__(self, config: PrismaticConfig):
        super().__init__()
        self.use_fused_vision_backbone = config.use_fused_vision_backbone
        self.num_images_in_input = 1  # OFT sets it after construction (set_num_images_in_input)

        def make(model_id):
            tower = timm.create_model(
                model_id,
                pretrained=False,
                num_classes=0,
                img_size=config.image_size,
                **config.timm_override_kwargs,
            )
            tower.forward = _second_to_last(tower)
            _rename_layer_scales(tower)
            return tower

        self.featurizer = make(config.timm_model_ids[0])
        self.embed_dim = self.featurizer.embed_dim
        if self.use_fused_vision_backbone:
            self.fused_featurizer = make(config.timm_model_ids[1])
            self.embed_dim += self.fused_featurizer.embed_dim

    def get_num_patches(self) -> int:
        return self.featurizer.patch_embed.num_patches

    def get_num_images_in_input(self) -> int:
        return self.num_images_in_input

    def set_num_images_in_input(self, num_images_in_input: int) -> None:
        self.num_images_in_input = num_images_in_input

    def _images(self, pixel_values, extra=()):
        """Per image, (DINOv2 patches | SigLIP patches) along channels; images along the sequence."""
        n = self.num_images_in_input
        per_image = 6 if self.use_fused_vision_backbone else 3
        out = []
        for img in torch.split(pixel_values, [per_image] * n, dim=1) if n > 1 else [pixel_values]:
            if not self.use_fused_vision_backbone:
                out.append(self.featurizer(img, *extra))
                continue
            first, second = torch.split(img, [3, 3], dim=1)
            out.append(
                torch.cat([self.featurizer(first, *extra), self.fused_featurizer(second, *extra)], dim=2)
            )
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def forward(self, pixel_values):
        return self._images(pixel_values)


class FiLMedPrismaticVisionBackbone(nn.Module):
    """OFT's FiLM variant: holds the original backbone as ``vision_backbone``; its towers become FiLM towers."""

    def __init__(self, vision_backbone: PrismaticVisionBackbone, llm_dim: int):
        super().__init__()
        self.vision_backbone = vision_backbone
        self.llm_dim = llm_dim
        _film(vision_backbone.featurizer, llm_dim)
        if vision_backbone.use_fused_vision_backbone:
            _film(vision_backbone.fused_featurizer, llm_dim)

    def get_num_patches(self) -> int:
        return self.vision_backbone.get_num_patches()

    def get_num_images_in_input(self) -> int:
        return self.vision_backbone.get_num_images_in_input()

    def set_num_images_in_input(self, num_images_in_input: int) -> None:
        self.vision_backbone.set_num_images_in_input(num_images_in_input)

    def forward(self, pixel_values, language_embeddings):
        return self.vision_backbone._images(pixel_values, (language_embeddings.mean(dim=1),))


class PrismaticProjector(nn.Module):
    def __init__(self, use_fused_vision_backbone: bool, vision_dim: int, llm_dim: int):
        super().__init__()
        self.use_fused_vision_backbone = use_fused_vision_backbone
        if use_fused_vision_backbone:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1, self.fc2 = nn.Linear(vision_dim, llm_dim), nn.Linear(llm_dim, llm_dim)
            self.act_fn1 = nn.GELU()

    def forward(self, img_patches: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(img_patches)))
        return self.fc3(self.act_fn2(x)) if self.use_fused_vision_backbone else x


# -- OFT's companions --------------------------------------------------------------------------------------------------
class ProprioProjector(nn.Module):
    """The proprio state (B, proprio_dim) -> one LLM-width token: fc1, GELU, fc2."""

    def __init__(self, llm_dim: int, proprio_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio=None):
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x):
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """(B, chunk * action_dim, D) hidden states -> (B, chunk, action_dim): each action's ``action_dim`` hidden states
    joined, then a 2-block MLP-ResNet."""

    def __init__(self, input_dim: int, hidden_dim: int, action_dim: int = 7, chunk: int = 8):
        super().__init__()
        self.action_dim, self.chunk = action_dim, chunk
        self.model = MLPResNet(2, input_dim * action_dim, hidden_dim, action_dim)

    def predict_action(self, actions_hidden_states):
        return self.model(actions_hidden_states.reshape(actions_hidden_states.shape[0], self.chunk, -1))


# -- the model ---------------------------------------------------------------------------------------------------------
class OpenVLAForActionPrediction(PreTrainedModel):
    """OpenVLA rebuilt: see the module docstring."""

    config_class = PrismaticConfig
    base_model_prefix = "language_model"
    _supports_cache_class = True

    def __init__(self, config: PrismaticConfig):
        super().__init__(config)
        self.vision_backbone = PrismaticVisionBackbone(config)
        self.llm_dim = config.text_config.hidden_size
        self.projector = PrismaticProjector(
            config.use_fused_vision_backbone, self.vision_backbone.embed_dim, self.llm_dim
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.norm_stats = config.norm_stats
        self.bins = np.linspace(-1, 1, config.n_action_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.vocab_size = config.text_config.vocab_size - config.pad_to_multiple_of

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
    @staticmethod
    def _splice(embeds, patches, attention_mask):
        """The projected patches (and OFT's extra tokens) right after the first token."""
        merged = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(attention_mask.shape[0], patches.shape[1])
            attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        return merged, attention_mask

    def _language_only(
        self, input_ids, attention_mask, past_key_values, use_cache, output_hidden_states, labels=None
    ):
        if input_ids.shape[1] == 1 and past_key_values is not None:
            # cached decode: the caller's mask does not count the spliced patches, so none is passed (batch of one)
            attention_mask = None
        return self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

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
        output_projector_features=None,
        return_dict=None,
    ):
        if pixel_values is None or (input_ids.shape[1] == 1 and past_key_values is not None):
            return self._language_only(
                input_ids, attention_mask, past_key_values, use_cache, output_hidden_states, labels
            )
        patches = self.projector(self.vision_backbone(pixel_values))
        merged, mask = self._splice(self.get_input_embeddings()(input_ids), patches, attention_mask)
        return self.language_model(
            inputs_embeds=merged,
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        pixel_values=None,
        attention_mask=None,
        **kwargs,
    ):
        if input_ids is not None and input_ids.shape[0] > 1:
            raise ValueError("generation with a batch larger than one is not supported (as OpenVLA)")
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
    def _stats(self, unnorm_key=None) -> dict:
        stats = self.norm_stats
        if unnorm_key is None:
            if len(stats) != 1:
                raise ValueError(f"unnorm_key must name one of {sorted(stats)}")
            unnorm_key = next(iter(stats))
        if unnorm_key not in stats:
            raise ValueError(f"unnorm_key {unnorm_key!r} not in the model's norm stats {sorted(stats)}")
        return stats[unnorm_key]["action"]

    def get_action_dim(self, unnorm_key=None) -> int:
        return len(self._stats(unnorm_key)["q01"])

    def action_tokens_to_normalized(self, token_ids: np.ndarray) -> np.ndarray:
        discretized = self.vocab_size - np.asarray(token_ids)
        index = np.clip(discretized - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[index]

    _EPS = 0.0  # OFT adds 1e-8 to the q99 - q01 range

    def unnormalize(self, normalized: np.ndarray, unnorm_key=None) -> np.ndarray:
        a = self._stats(unnorm_key)
        high, low = np.asarray(a["q99"]), np.asarray(a["q01"])
        mask = np.asarray(a.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
        return np.where(mask, 0.5 * (normalized + 1) * (high - low + self._EPS) + low, normalized)

    @staticmethod
    def _with_empty_token(input_ids):
        if torch.all(input_ids[:, -1] == EMPTY_TOKEN):
            return input_ids
        pad = input_ids.new_full((input_ids.shape[0], 1), EMPTY_TOKEN)
        return torch.cat([input_ids, pad], dim=1)

    @torch.no_grad()
    def predict_action(self, input_ids=None, unnorm_key=None, **kwargs) -> np.ndarray:
        """Greedy decode of ``action_dim`` action tokens (batch of one, as OpenVLA), un-normalised."""
        input_ids = self._with_empty_token(input_ids)
        dim = self.get_action_dim(unnorm_key)
        generated = self.generate(input_ids, max_new_tokens=dim, **kwargs)
        tokens = generated[0, -dim:].cpu().numpy()
        return self.unnormalize(self.action_tokens_to_normalized(tokens), unnorm_key)


class OpenVLAOFTForActionPrediction(OpenVLAForActionPrediction):
    """OpenVLA-OFT rebuilt (its class is also named ``OpenVLAForActionPrediction``): see the module docstring."""

    _EPS = 1e-8

    def __init__(self, config: PrismaticConfig):
        super().__init__(config)
        if config.use_film:
            self.vision_backbone = FiLMedPrismaticVisionBackbone(self.vision_backbone, self.llm_dim)
        self.vision_backbone.set_num_images_in_input(config.num_images_in_input)
        # OFT keeps these outside the VLA and passes them to predict_action; kept here for predict_action_chunk
        if config.use_proprio:
            self.proprio_projector = ProprioProjector(self.llm_dim, config.proprio_dim)
        self.action_head = L1RegressionActionHead(
            self.llm_dim, self.llm_dim, config.action_dim, config.action_chunk
        )

    def get_action_dim(self, unnorm_key=None) -> int:
        return self.config.action_dim

    def _oft_prefix(
        self, input_ids, attention_mask, pixel_values, labels, proprio, proprio_projector, use_film, extra
    ):
        """[BOS, patches, proprio, extra, text[1:]] with the action positions' embeddings (labels above
        ACTION_TOKEN_BEGIN_IDX) zeroed; FiLM reads the mean embedding of every other position."""
        embeds = self.get_input_embeddings()(input_ids)
        act = (
            labels > ACTION_TOKEN_BEGIN_IDX
            if labels is not None
            else torch.zeros_like(input_ids, dtype=torch.bool)
        )
        if use_film:
            language = embeds[~act].reshape(embeds.shape[0], -1, embeds.shape[2])
            patches = self.projector(self.vision_backbone(pixel_values, language))
        else:
            patches = self.projector(self.vision_backbone(pixel_values))
        if proprio is not None and proprio_projector is not None:
            proprio = torch.as_tensor(proprio).to(patches).reshape(patches.shape[0], -1)
            patches = torch.cat([patches, proprio_projector(proprio)[:, None]], dim=1)
        if extra is not None:
            patches = torch.cat([patches, extra], dim=1)
        embeds = embeds * ~act[..., None]
        merged, mask = self._splice(embeds, patches, attention_mask)
        return merged, mask, patches.shape[1]

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
        output_projector_features=None,
        return_dict=None,
        proprio=None,
        proprio_projector=None,
        noisy_actions=None,
        noisy_action_projector=None,
        diffusion_timestep_embeddings=None,
        use_film=False,
    ):
        if noisy_actions is not None:
            raise NotImplementedError("OFT's diffusion action path is not rebuilt (the L1 head is)")
        if pixel_values is None or (input_ids.shape[1] == 1 and past_key_values is not None):
            return self._language_only(
                input_ids, attention_mask, past_key_values, use_cache, output_hidden_states, labels
            )
        merged, mask, _ = self._oft_prefix(
            input_ids, attention_mask, pixel_values, labels, proprio, proprio_projector, use_film,
            diffusion_timestep_embeddings,
        )  # fmt: skip
        return self.language_model(
            inputs_embeds=merged,
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def _action_pass(
        self, input_ids, attention_mask, pixel_values, proprio, proprio_projector, action_head, use_film
    ):
        """One forward; -> (normalized (B, chunk, dim) tensor, the hidden states the head read)."""
        chunk, dim = self.config.action_chunk, self.config.action_dim
        n_act = chunk * dim
        ids = self._with_empty_token(input_ids)
        n_prompt = ids.shape[1] - 1
        b = ids.shape[0]
        ids = torch.cat([ids, ids.new_ones(b, n_act), ids.new_full((b, 1), STOP_INDEX)], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        fill = attention_mask.new_ones(b, ids.shape[1] - attention_mask.shape[1])
        attention_mask = torch.cat([attention_mask, fill], dim=1)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, n_prompt + 1 : n_prompt + 1 + n_act] = ACTION_TOKEN_BEGIN_IDX + 1
        labels[:, -1] = STOP_INDEX
        merged, mask, n_patches = self._oft_prefix(
            ids, attention_mask, pixel_values, labels, proprio, proprio_projector, use_film, None
        )
        out = self.language_model(
            inputs_embeds=merged, attention_mask=mask, output_hidden_states=True, return_dict=True
        )
        start = n_patches + n_prompt  # from the last prompt token on
        hidden = out.hidden_states[-1][:, start : start + n_act]
        if action_head is not None:
            normalized = action_head.predict_action(hidden)
        else:
            tokens = out.logits[:, start : start + n_act].argmax(dim=2).cpu().numpy()
            normalized = torch.as_tensor(self.action_tokens_to_normalized(tokens)).reshape(b, chunk, dim)
        return normalized, hidden

    @torch.no_grad()
    def predict_action(
        self,
        input_ids=None,
        unnorm_key=None,
        proprio=None,
        proprio_projector=None,
        action_head=None,
        noisy_action_projector=None,
        use_film=False,
        **kwargs,
    ):
        """OFT's entry point: -> (un-normalised actions (chunk, dim) for a batch of one, action hidden states)."""
        if noisy_action_projector is not None:
            raise NotImplementedError("OFT's diffusion action path is not rebuilt (the L1 head is)")
        normalized, hidden = self._action_pass(
            input_ids, kwargs.get("attention_mask"), kwargs["pixel_values"], proprio, proprio_projector,
            action_head, use_film,
        )  # fmt: skip
        normalized = normalized.float().cpu().numpy()
        if normalized.shape[0] == 1:
            normalized = normalized[0]
        return self.unnormalize(normalized, unnorm_key), hidden

    @torch.no_grad()
    def predict_action_chunk(self, input_ids, attention_mask, pixel_values, proprio=None) -> torch.Tensor:
        """Ours: OFT's predict_action for a batch, with the model's own companions -> normalized (B, chunk, dim)."""
        normalized, _ = self._action_pass(
            input_ids, attention_mask, pixel_values, proprio, getattr(self, "proprio_projector", None),
            self.action_head, self.config.use_film,
        )  # fmt: skip
        return normalized


def build_tiny(
    *,
    seed: int = 0,
    towers: tuple[str, ...] = (DINO_ID, SIGLIP_ID),
    num_images_in_input: int = 1,
    use_proprio: bool = False,
    use_film: bool = False,
    oft: bool | None = None,
    text_layers: int = 4,
    hidden: int = 64,
    base_vocab: int = 32000,
    norm_stats: dict | None = None,
    dtype=torch.float32,
) -> OpenVLAForActionPrediction:
    """A random-weight instance with tiny towers (4 blocks, width 64) at 224 px and a tiny Llama (Llama-2's vocab).

    OFT's class when ``oft`` (default: when any OFT option is set: two images, proprio, FiLM)."""
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
    if oft is None:
        oft = num_images_in_input > 1 or use_proprio or use_film
    cls = OpenVLAOFTForActionPrediction if oft else OpenVLAForActionPrediction
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = 0, 1, None
    return model.to(dtype).eval()
