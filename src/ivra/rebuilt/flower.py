"""FLOWER (intuitive-robots/flower_vla_calvin) with its remote-code Florence-2, rebuilt from recorded facts (ours).

FLOWER loads ``microsoft/Florence-2-large`` with ``trust_remote_code`` (code that runs on transformers 4.4x-4.51
only and cannot be downloaded here), deletes its BART decoder and ``lm_head``, adds a ``<Flow>`` token and puts a
flow-matching DiT on the encoder's output. This module rebuilds what IVRA and the LIBERO wrapper touch, with the
module names, classes, parameter names and shapes, call signatures and token order recorded from the real code
(``tests/fixtures/real/flower.json``, written by ``scripts/record_fixture_flower.py`` from checkouts of both
repositories; every fact there names its repository, commit and file). ``tests/test_flower.py`` holds this
rebuild to that fixture: the same parameters (names and shapes) under ``vlm``, the same classes along every path
IVRA hooks, the same signatures, the same tokenizer ids, and the same numbers as the real code on weights filled
deterministically by name (:func:`fill_deterministic`).

What is rebuilt (the implementation is ours; only names, shapes and behaviour follow the facts):

* ``vlm``: ``Florence2ForConditionalGeneration`` with ``vision_tower`` (``DaViT``: ``convs[i]`` = ``ConvEmbed``,
  ``blocks[stage]`` = ``MySequential`` of blocks, each ``MySequential(OrderedDict(spatial_block, channel_block))``;
  every sub-layer a ``PreNorm(norm, fn, drop_path)`` whose ``fn`` holds the weights, e.g.
  ``channel_block.channel_attn.fn.qkv``), ``image_projection``/``image_proj_norm``/``image_pos_embed``/
  ``visual_temporal_embed`` and ``language_model.model`` (``shared`` + ``encoder``; the decoder and ``lm_head``
  deleted as FLOWER does). ``_encode_image(pixels)`` -> (B, 1 + N, D): the spatial mean first, then the N patches
  in raster order. The encoder layers return tuples.
* ``FLOWERVLA``: the real inference API, ``forward(obs, goal)``, ``step(obs, goal)``, ``reset()``,
  ``encode_observations(batch)``; ``obs = {"rgb_obs": {"rgb_static": (B, T, 3, H, W), "rgb_gripper": ...}}``,
  ``goal = {"lang_text": str}``; the prompt FLOWER builds from the instruction, tokenised by the model's tokenizer
  (``padding=True, truncation=True, max_length=77``); the encoder sees ``[static (1+N), gripper (1+N), <Flow>,
  text]`` with an all-ones mask; the noise is ``torch.randn`` on the global generator inside ``forward``; ``step``
  runs the model every ``multistep`` calls and returns ``pred_action_seq[0, counter]``.
* NOT rebuilt: FLOWER's DiT action head (``dit``, ``adaln``, action encoders/decoders, ...): a small stand-in
  velocity head takes its place (same Euler sampling, ``num_sampling_steps``, clamp to [-1, 1]); IVRA never
  touches it.

``build_tiny()`` builds it with the tiny configuration the fixture was recorded at and a tiny byte-level BART
tokenizer (:func:`tiny_tokenizer`, made locally, nothing downloaded) extended with the tokens Florence-2's
processor and FLOWER add. ``build_tiny(native=True)`` wraps transformers 5's native Florence-2 instead (other
module names; core environment only).
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

# -- the tiny configuration (Florence-2's config.json layout; Florence-2-large's stage layout, tiny widths) ----------
TINY_CONFIG: dict = {
    "architectures": ["Florence2ForConditionalGeneration"],
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "model_type": "florence2",
    "projection_dim": 32,
    "is_encoder_decoder": True,
    "vocab_size": 261,
    "text_config": {
        "vocab_size": 261,
        "d_model": 32,
        "encoder_layers": 12,
        "decoder_layers": 1,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 256,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
        "forced_bos_token_id": 0,
        "scale_embedding": False,
        "activation_function": "gelu",
        "is_encoder_decoder": True,
    },
    "vision_config": {
        "model_type": "davit",
        "drop_path_rate": 0.1,
        "patch_size": [7, 3, 3, 3],
        "patch_stride": [4, 2, 2, 2],
        "patch_padding": [3, 1, 1, 1],
        "patch_prenorm": [False, True, True, True],
        "enable_checkpoint": False,
        "dim_embed": [8, 16, 24, 32],
        "num_heads": [1, 2, 3, 4],
        "num_groups": [1, 2, 3, 4],
        "depths": [1, 1, 2, 1],
        "window_size": 3,
        "projection_dim": 32,
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    },
}

#: FLOWERVLA's constructor arguments the tiny model was recorded with (FLOWER's LIBERO settings, a tiny DiT)
TINY_FLOWER_KWARGS: dict = {
    "use_second_view": True,
    "second_view_key": "image_wrist",
    "act_window_size": 10,
    "multistep": 10,
    "num_sampling_steps": 4,
    "action_dim": 7,
    "token_dropout": 0.1,
    "dit_dim": 32,
    "n_heads": 2,
    "n_layers": 2,
    "use_rope": True,
    "query_seq_len": 100,
    "sampling_type": "uniform",
}

#: the tokens Florence-2's processor adds to its BART tokenizer, in its order (processing_florence2.py), and FLOWER's
FLORENCE2_PROCESSOR_TOKENS: list[str] = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{i}>" for i in range(1000)]
    + [
        "<cap>",
        "</cap>",
        "<ncap>",
        "</ncap>",
        "<dcap>",
        "</dcap>",
        "<grounding>",
        "</grounding>",
        "<seg>",
        "</seg>",
    ]
    + ["<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>"]
    + ["<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"]
)
FLOW_TOKEN = "<Flow>"
#: FLOWER's tokenizer call in ``_get_text_embeddings``
TOKENIZER_KWARGS: dict = {"return_tensors": "pt", "padding": True, "truncation": True, "max_length": 77}


# -- the tiny tokenizer ---------------------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in byte order (GPT-2's byte-to-unicode table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def base_tokenizer():
    """A tiny byte-level BART tokenizer (BART's special tokens and ``<s> ... </s>`` template, no merges): 261 ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import BartTokenizerFast

    vocab = {s: i for i, s in enumerate(["<s>", "<pad>", "</s>", "<unk>", *_byte_symbols(), "<mask>"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    return BartTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=1024,
    )


def tiny_tokenizer():
    """:func:`base_tokenizer` with the tokens Florence-2's processor adds, then FLOWER's ``<Flow>`` (1286 ids)."""
    tok = base_tokenizer()
    tok.add_tokens(FLORENCE2_PROCESSOR_TOKENS, special_tokens=True)
    tok.add_tokens([FLOW_TOKEN], special_tokens=True)
    return tok


def policy_prompt(instruction: str) -> str:
    """FLOWER's prompt for an instruction (``generate_policy_prompt``, style ``minimal``, as FLOWERVLA sets it up)."""
    meta = "Agent Type: 1-arm Franka Panda, Action Space: Delta End-Effector, "
    return " ".join(line.strip() for line in f"{meta} Task Instruction: {instruction}".strip().split("\n"))


# -- the DaViT vision tower -------------------------------------------------------------------------------------------
class MySequential(nn.Sequential):
    """A Sequential whose modules take and return ``(x, size)``."""

    def forward(self, *inputs):
        for module in self._modules.values():
            inputs = module(*inputs) if isinstance(inputs, tuple) else module(inputs)
        return inputs


class DropPath(nn.Module):
    """Stochastic depth (identity in eval mode)."""

    def __init__(self, p: float):
        super().__init__()
        self.drop_prob = float(p)

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.drop_prob).to(
            x.dtype
        )
        return x * keep / (1.0 - self.drop_prob)


class PreNorm(nn.Module):
    """``x + drop_path(fn(norm(x), size))``; ``fn`` holds the weights, returns ``(out, size)``."""

    def __init__(self, norm: nn.Module | None, fn: nn.Module, drop_path: nn.Module | None = None):
        super().__init__()
        self.norm, self.fn, self.drop_path = norm, fn, drop_path

    def forward(self, x, *args, **kwargs):
        y, size = self.fn(x if self.norm is None else self.norm(x), *args, **kwargs)
        if self.drop_path is not None:
            y = self.drop_path(y)
        return x + y, size


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(
                [("fc1", nn.Linear(dim, hidden)), ("act", nn.GELU()), ("fc2", nn.Linear(hidden, dim))]
            )
        )

    def forward(self, x, size):
        return self.net(x), size


def _tokens_to_map(x, size):
    h, w = size
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class DepthWiseConv2d(nn.Module):
    def __init__(self, dim: int, kernel: int = 3, padding: int = 1, stride: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, kernel_size=kernel, padding=padding, stride=stride, groups=dim)

    def forward(self, x, size):
        y = self.dw(_tokens_to_map(x, size))
        return y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1])


class ConvEmbed(nn.Module):
    """Patch embedding of one stage; its LayerNorm acts before (``pre_norm``) or after the convolution."""

    def __init__(self, patch: int, stride: int, padding: int, dim_in: int, dim: int, pre_norm: bool):
        super().__init__()
        self.patch_size, self.pre_norm = patch, pre_norm
        self.proj = nn.Conv2d(dim_in, dim, kernel_size=patch, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim_in if pre_norm else dim)

    def forward(self, x, size):
        if x.dim() == 3:  # tokens of the previous stage
            if self.pre_norm:
                x = self.norm(x)
            x = _tokens_to_map(x, size)
        y = self.proj(x)
        tokens = y.flatten(2).transpose(1, 2)
        if not self.pre_norm:
            tokens = self.norm(tokens)
        return tokens, (y.shape[-2], y.shape[-1])


class ChannelAttention(nn.Module):
    """Attention across channels within ``groups`` groups (an N x N-free (C/g x C/g) attention per group)."""

    def __init__(self, dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, size):
        b, n, c = x.shape
        q, k, v = (
            self.qkv(x).view(b, n, 3, self.groups, c // self.groups).permute(2, 0, 3, 4, 1)
        )  # (B, g, c/g, N)
        att = torch.softmax((q * n**-0.5) @ k.transpose(-1, -2), dim=-1)  # (B, g, c/g, c/g)
        out = (att @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.proj(out), size


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows (the map padded right/bottom to whole windows)."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, size):
        h, w = size
        b, _, c = x.shape
        ws = self.window_size
        ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
        grid = F.pad(x.view(b, h, w, c), (0, 0, 0, pw - w, 0, ph - h))
        win = grid.view(b, ph // ws, ws, pw // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        qkv = self.qkv(win).view(win.shape[0], ws * ws, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = self.softmax((q * self.scale) @ k.transpose(-1, -2))
        out = self.proj((att @ v).transpose(1, 2).reshape(win.shape[0], ws * ws, c))
        out = out.view(b, ph // ws, pw // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        return out[:, :h, :w].reshape(b, h * w, c), size


class _Block(nn.Module):
    """conv1 -> attention -> conv2 -> ffn, each a residual ``PreNorm``."""

    def __init__(self, dim: int, attn_name: str, attn: nn.Module, drop: float):
        super().__init__()
        self.conv1 = PreNorm(None, DepthWiseConv2d(dim))
        setattr(
            self, attn_name, PreNorm(nn.LayerNorm(dim), attn, DropPath(drop) if drop > 0 else nn.Identity())
        )
        self.conv2 = PreNorm(None, DepthWiseConv2d(dim))
        self.ffn = PreNorm(
            nn.LayerNorm(dim), Mlp(dim, 4 * dim), DropPath(drop) if drop > 0 else nn.Identity()
        )
        self._attn_name = attn_name

    def forward(self, x, size):
        for part in (self.conv1, getattr(self, self._attn_name), self.conv2, self.ffn):
            x, size = part(x, size)
        return x, size


class SpatialBlock(_Block):
    def __init__(self, dim: int, num_heads: int, window_size: int, drop: float = 0.0):
        super().__init__(dim, "window_attn", WindowAttention(dim, num_heads, window_size), drop)


class ChannelBlock(_Block):
    def __init__(self, dim: int, groups: int, drop: float = 0.0):
        super().__init__(dim, "channel_attn", ChannelAttention(dim, groups), drop)


class DaViT(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        dims, depths = vc["dim_embed"], vc["depths"]
        rates = torch.linspace(0, vc["drop_path_rate"], 2 * sum(depths)).tolist()
        convs, stages, offset = [], [], 0
        for s, dim in enumerate(dims):
            convs.append(
                ConvEmbed(
                    vc["patch_size"][s],
                    vc["patch_stride"][s],
                    vc["patch_padding"][s],
                    3 if s == 0 else dims[s - 1],
                    dim,
                    vc["patch_prenorm"][s],
                )
            )
            blocks = []
            for j in range(depths[s]):
                spatial = SpatialBlock(dim, vc["num_heads"][s], vc["window_size"], rates[offset + 2 * j])
                channel = ChannelBlock(dim, vc["num_groups"][s], rates[offset + 2 * j + 1])
                blocks.append(
                    MySequential(OrderedDict([("spatial_block", spatial), ("channel_block", channel)]))
                )
            stages.append(MySequential(*blocks))
            offset += 2 * depths[s]
        self.convs = nn.ModuleList(convs)
        self.blocks = nn.ModuleList(stages)
        self.avgpool = nn.AdaptiveAvgPool1d(1)

    def forward_features_unpool(self, x):
        """(B, 3, H, W) -> (B, N, C): the last stage's tokens in raster order."""
        size = (x.shape[2], x.shape[3])
        for conv, stage in zip(self.convs, self.blocks):
            x, size = conv(x, size)
            x, size = stage(x, size)
        return x


class LearnedAbsolutePositionEmbedding2D(nn.Module):
    def __init__(self, dim: int, num_pos: int):
        super().__init__()
        self.row_embeddings = nn.Embedding(num_pos, dim // 2)
        self.column_embeddings = nn.Embedding(num_pos, dim - dim // 2)

    def forward(self, grid):
        """(B, h, w, C) -> (B, h, w, C): per position [column embedding, row embedding]."""
        b, h, w = grid.shape[:3]
        cols = self.column_embeddings(torch.arange(w, device=grid.device))
        rows = self.row_embeddings(torch.arange(h, device=grid.device))
        pos = torch.cat([cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)], dim=-1)
        return pos[None].expand(b, h, w, -1)


class PositionalEmbeddingCosine1D(nn.Module):
    def __init__(self, dim: int, max_seq_len: int):
        super().__init__()
        freq = torch.exp(-math.log(10000) * torch.arange(0, dim, 2) / dim)
        angles = torch.arange(max_seq_len)[:, None] * freq
        table = torch.zeros(max_seq_len, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
        self.register_buffer("pos_idx_to_embed", table)

    def forward(self, seq):
        return self.pos_idx_to_embed[: seq.shape[-2]]


# -- the BART encoder (Florence-2's language model, decoder deleted) ---------------------------------------------------
class Florence2LearnedPositionalEmbedding(nn.Embedding):
    """Learned positions, offset by 2 (BART's convention)."""

    offset = 2

    def __init__(self, num: int, dim: int):
        super().__init__(num + self.offset, dim)

    def forward(self, ids_or_embeds, past_key_values_length: int = 0):
        b, s = ids_or_embeds.shape[:2]
        pos = torch.arange(past_key_values_length, past_key_values_length + s, device=self.weight.device)
        return super().forward(pos.expand(b, -1) + self.offset)


class Florence2SdpaAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.embed_dim, self.num_heads = dim, heads
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(
        self,
        hidden_states,
        key_value_states=None,
        past_key_value=None,
        attention_mask=None,
        layer_head_mask=None,
        output_attentions=False,
    ):
        b, s, d = hidden_states.shape

        def heads(t):
            return t.view(b, s, self.num_heads, d // self.num_heads).transpose(1, 2)

        q, k, v = (
            heads(self.q_proj(hidden_states)),
            heads(self.k_proj(hidden_states)),
            heads(self.v_proj(hidden_states)),
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, d)), None, None


class GELUActivation(nn.Module):
    def forward(self, x):
        return F.gelu(x)


class Florence2EncoderLayer(nn.Module):
    """Post-norm transformer layer; returns ``(hidden_states,)`` as the remote code's layers do."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = Florence2SdpaAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.activation_fn = GELUActivation()
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states, attention_mask, layer_head_mask=None, output_attentions=False):
        h = self.self_attn_layer_norm(
            hidden_states + self.self_attn(hidden_states, attention_mask=attention_mask)[0]
        )
        h = self.final_layer_norm(h + self.fc2(self.activation_fn(self.fc1(h))))
        return (h,)


class Florence2Encoder(nn.Module):
    def __init__(self, tc: dict, shared: nn.Embedding):
        super().__init__()
        self.embed_tokens = (
            shared  # tied (FLOWER's resize leaves a plain Embedding, shared with ``model.shared``)
        )
        self.embed_positions = Florence2LearnedPositionalEmbedding(
            tc["max_position_embeddings"], tc["d_model"]
        )
        self.layers = nn.ModuleList(
            Florence2EncoderLayer(tc["d_model"], tc["encoder_attention_heads"], tc["encoder_ffn_dim"])
            for _ in range(tc["encoder_layers"])
        )
        self.layernorm_embedding = nn.LayerNorm(tc["d_model"])

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden = self.layernorm_embedding(inputs_embeds + self.embed_positions(inputs_embeds))
        mask = None
        if attention_mask is not None:  # (B, S) 1/0 -> additive (B, 1, S, S)
            keep = attention_mask[:, None, None, :].to(torch.bool)
            mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(~keep, torch.finfo(hidden.dtype).min).expand(-1, 1, hidden.shape[1], -1)
        for layer in self.layers:
            hidden = layer(hidden, mask, layer_head_mask=None)[0]
        return BaseModelOutput(last_hidden_state=hidden)


class Florence2LanguageModel(nn.Module):
    def __init__(self, tc: dict, vocab: int):
        super().__init__()
        self.shared = nn.Embedding(vocab, tc["d_model"], tc["pad_token_id"])
        self.encoder = Florence2Encoder(tc, self.shared)  # the decoder: deleted by FLOWER


class Florence2LanguageForConditionalGeneration(nn.Module):
    def __init__(self, tc: dict, vocab: int):
        super().__init__()
        self.model = Florence2LanguageModel(tc, vocab)  # ``lm_head``: deleted by FLOWER
        self.register_buffer("final_logits_bias", torch.zeros(1, vocab))


class _Config:
    """The attribute view of a config dict that FLOWER reads (``vlm.config.text_config.d_model``)."""

    def __init__(self, data: dict):
        for key, value in data.items():
            setattr(
                self, key, _Config(value) if isinstance(value, dict) and key.endswith("_config") else value
            )


class Florence2ForConditionalGeneration(nn.Module):
    """The remote Florence-2 as FLOWER holds it (decoder and ``lm_head`` deleted, vocabulary resized)."""

    def __init__(self, config: dict, vocab: int):
        super().__init__()
        vc, tc = config["vision_config"], config["text_config"]
        self.config = _Config({**config, "vocab_size": vocab, "text_config": {**tc, "vocab_size": vocab}})
        self.vision_tower = DaViT(vc)
        self.image_projection = nn.Parameter(torch.empty(vc["dim_embed"][-1], vc["projection_dim"]))
        nn.init.trunc_normal_(self.image_projection, std=0.02)
        self.image_proj_norm = nn.LayerNorm(vc["projection_dim"])
        self.image_pos_embed = LearnedAbsolutePositionEmbedding2D(
            vc["dim_embed"][-1], vc["image_pos_embed"]["max_pos_embeddings"]
        )
        self.visual_temporal_embed = PositionalEmbeddingCosine1D(
            vc["dim_embed"][-1], vc["visual_temporal_embedding"]["max_temporal_embeddings"]
        )
        self.image_feature_source = list(vc["image_feature_source"])
        self.language_model = Florence2LanguageForConditionalGeneration(tc, vocab)

    def _encode_image(self, pixel_values):
        """(B, 3, H, W) -> (B, 1 + N, D): the spatial mean (global token) first, then N patches in raster order."""
        x = self.vision_tower.forward_features_unpool(pixel_values)
        b, n, c = x.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"Florence-2's 2-D position embedding needs a square feature map, got {n} tokens"
            )
        grid = x.view(b, side, side, c)
        x = (grid + self.image_pos_embed(grid)).view(b, n, c)
        x = x + self.visual_temporal_embed(x[:, :1])[None]  # one frame: temporal position 0
        feats = {"spatial_avg_pool": x.mean(1, keepdim=True), "temporal_avg_pool": x, "last_frame": x}
        x = torch.cat([feats[name] for name in self.image_feature_source], dim=1)
        return self.image_proj_norm(x @ self.image_projection)

    def get_encoder(self):
        return self.language_model.model.encoder

    def get_input_embeddings(self):
        return self.language_model.model.shared


# -- FLOWERVLA ---------------------------------------------------------------------------------------------------------
def encode_image(vlm, pixels):
    """Florence-2's image tokens (global first): the remote ``_encode_image`` or the native equivalent."""
    if hasattr(vlm, "_encode_image"):
        return vlm._encode_image(pixels)
    return vlm.model.get_image_features(pixels).pooler_output


class FLOWERVLA(nn.Module):
    """FLOWER's inference API over a Florence-2 (rebuilt remote or native) and a stand-in action head."""

    def __init__(
        self,
        vlm: nn.Module,
        tokenizer,
        act_window_size: int = 10,
        multistep: int = 10,
        num_sampling_steps: int = 4,
        action_dim: int = 7,
        use_second_view: bool = True,
        token_dropout: float = 0.1,
        **_ignored,
    ):
        super().__init__()
        self.vlm, self.tokenizer = vlm, tokenizer
        self.act_window_size, self.multistep = act_window_size, multistep
        self.num_sampling_steps, self.action_dim = num_sampling_steps, action_dim
        self.use_second_view = use_second_view
        self.format_instruction = policy_prompt
        flow = tokenizer.convert_tokens_to_ids(FLOW_TOKEN)
        embed = vlm.get_input_embeddings()(torch.tensor(flow)).detach()
        self.prompt_embeds = embed[None, None]  # a plain tensor, as in FLOWER (not a parameter, not a buffer)
        self.vlm_token_dropout = nn.Dropout(token_dropout)
        d = vlm.config.text_config.d_model
        self.cond_linear = nn.Linear(d, d)
        self.velocity = nn.Sequential(nn.Linear(action_dim + d + 1, d), nn.GELU(), nn.Linear(d, action_dim))
        self.rollout_step_counter = 0
        self.pred_action_seq = None

    @property
    def device(self):
        return self.cond_linear.weight.device

    def construct_prompts(self, dataset_batch):
        return [self.format_instruction(text) for text in dataset_batch["lang_text"]]

    def _get_text_embeddings(self, text, device):
        ids = self.tokenizer(text, **TOKENIZER_KWARGS)["input_ids"].to(device)
        return self.vlm.get_input_embeddings()(ids)

    def encode_observations(self, batch: dict) -> dict:
        """``[static (1+N), gripper (1+N), <Flow>, text]`` through the encoder, every position attended."""
        dtype = self.cond_linear.weight.dtype
        static = batch["rgb_obs"]["rgb_static"]
        b, t, c, h, w = static.shape
        feats = encode_image(self.vlm, static.reshape(-1, c, h, w).to(self.device, dtype))
        feats = feats.reshape(b, t * feats.shape[1], -1)
        if self.use_second_view:
            gripper = batch["rgb_obs"]["rgb_gripper"]
            g = encode_image(self.vlm, gripper.reshape(-1, c, h, w).to(self.device, dtype))
            feats = torch.cat([feats, g.reshape(b, t * g.shape[1], -1)], dim=1)
        text = self._get_text_embeddings(self.construct_prompts(batch), self.device)
        flow = self.prompt_embeds.expand(b, -1, -1).to(feats.device, dtype)
        merged = torch.cat([feats, flow, text.to(dtype)], dim=1)
        mask = torch.ones(merged.shape[:2], device=merged.device)
        features = self.vlm.get_encoder()(inputs_embeds=merged, attention_mask=mask)[0]
        return {
            "features": self.vlm_token_dropout(features),
            "frequency_embeds": None,
            "action_space_embeds": None,
            "action_type": torch.ones(b, self.act_window_size, self.action_dim),
            "proprio": None,
            "attention_mask": mask,
        }

    def dit_forward(self, z, t, cond_dict):
        """The stand-in velocity head (FLOWER's DiT is not rebuilt)."""
        cond = self.cond_linear(cond_dict["features"].mean(1))
        tt = t.view(-1, 1, 1).expand(-1, z.shape[1], 1).to(z.dtype)
        return self.velocity(torch.cat([z, cond[:, None].expand(-1, z.shape[1], -1), tt], dim=-1))

    def sample_actions(self, z, cond, inference: bool = False):
        """Euler steps of the flow from t=1 to 0, clamped to [-1, 1]."""
        steps = self.num_sampling_steps if inference else 5
        for i in range(steps, 0, -1):
            t = torch.full((z.shape[0],), i / steps, device=z.device)
            z = z - self.dit_forward(z, t, cond) / steps
        return z.clamp(-1, 1)

    def forward(self, obs: dict, goal: dict) -> torch.Tensor:
        batch = {
            "rgb_obs": {
                "rgb_static": obs["rgb_obs"]["rgb_static"],
                "rgb_gripper": obs["rgb_obs"]["rgb_gripper"],
            },
            "lang_text": [goal["lang_text"]],
        }
        features = self.encode_observations(batch)
        f = features["features"]
        noise = torch.randn(len(f), self.act_window_size, self.action_dim, device=f.device)
        return self.sample_actions(noise, features, inference=True)

    def step(self, obs: dict, goal: dict) -> torch.Tensor:
        """One action: a new chunk every ``multistep`` calls, then ``pred_action_seq[0, counter]``."""
        if self.rollout_step_counter % self.multistep == 0:
            self.pred_action_seq = self(obs, goal)
        action = self.pred_action_seq[0, self.rollout_step_counter]
        self.rollout_step_counter += 1
        if self.rollout_step_counter == self.multistep:
            self.rollout_step_counter = 0
        return action

    def reset(self):
        self.rollout_step_counter = 0
        self.pred_action_seq = None
        self.eval()


# -- deterministic weights, builders -----------------------------------------------------------------------------------
def fill_deterministic(module: nn.Module, scale: float = 0.1) -> nn.Module:
    """Overwrite every parameter with values that depend only on its dotted name and shape.

    ``scale * sin(0.37 i + phase(name))`` over the flattened tensor (LayerNorm weights: 1 + that); tied parameters
    get the value of their alphabetically last name. Both the recording script (on the real code) and the tests
    (on this rebuild) fill this way, so equal numbers mean equal computations.
    """
    named = []
    for mname, mod in module.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False):
            named.append(
                (
                    f"{mname}.{pname}" if mname else pname,
                    p,
                    isinstance(mod, nn.LayerNorm) and pname == "weight",
                )
            )
    with torch.no_grad():
        for name, p, is_norm in sorted(named, key=lambda t: t[0]):
            phase = (zlib.crc32(name.encode()) % 1000) * 0.01
            i = torch.arange(p.numel(), dtype=torch.float64)
            values = scale * torch.sin(0.37 * i + phase) + (1.0 if is_norm else 0.0)
            p.copy_(values.view(p.shape).to(p.dtype))
    return module


def probe_pixels(batch: int = 1, size: int = 112, phase: float = 0.0) -> torch.Tensor:
    """Deterministic images (B, 3, size, size) for numeric comparisons."""
    i = torch.arange(batch * 3 * size * size, dtype=torch.float64)
    return torch.sin(0.013 * i + phase).view(batch, 3, size, size).float()


def build_vlm(
    seed: int = 0, config: dict | None = None, vocab: int | None = None
) -> Florence2ForConditionalGeneration:
    config = TINY_CONFIG if config is None else config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm = Florence2ForConditionalGeneration(config, vocab or len(tiny_tokenizer()))
    return vlm.eval()


def build_native(seed: int = 0, vocab: int | None = None):
    """transformers 5's native Florence-2 at the tiny configuration (core environment only)."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig
    from transformers import Florence2ForConditionalGeneration as Native

    vc, tc = TINY_CONFIG["vision_config"], TINY_CONFIG["text_config"]
    vision = Florence2VisionConfig(
        depths=vc["depths"],
        patch_size=vc["patch_size"],
        patch_stride=vc["patch_stride"],
        patch_padding=vc["patch_padding"],
        patch_prenorm=vc["patch_prenorm"],
        embed_dim=vc["dim_embed"],
        num_heads=vc["num_heads"],
        num_groups=vc["num_groups"],
        window_size=vc["window_size"],
        projection_dim=vc["projection_dim"],
        max_temporal_embeddings=vc["visual_temporal_embedding"]["max_temporal_embeddings"],
        max_position_embeddings=vc["image_pos_embed"]["max_pos_embeddings"],
    )
    skip = ("is_encoder_decoder", "forced_bos_token_id", "forced_eos_token_id")
    text = BartConfig(**{k: v for k, v in tc.items() if k not in skip})
    vocab = vocab or len(tiny_tokenizer())
    cfg = Florence2Config(vision_config=vision, text_config=text, image_token_id=vocab - 1)
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Native(cfg)
        model.resize_token_embeddings(vocab)
    return model.eval()


def build_tiny(seed: int = 0, native: bool = False, **kwargs) -> FLOWERVLA:
    """A tiny random FLOWER at the fixture's configuration: the remote naming (default) or transformers' native
    Florence-2 (``native=True``); ``kwargs`` override :data:`TINY_FLOWER_KWARGS`."""
    tokenizer = tiny_tokenizer()
    vlm = build_native(seed, len(tokenizer)) if native else build_vlm(seed, vocab=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = FLOWERVLA(vlm, tokenizer, **{**TINY_FLOWER_KWARGS, **kwargs})
    return model.eval()


__all__ = [
    "FLOWERVLA",
    "FLORENCE2_PROCESSOR_TOKENS",
    "TINY_CONFIG",
    "TINY_FLOWER_KWARGS",
    "build_tiny",
    "build_vlm",
    "fill_deterministic",
    "policy_prompt",
    "probe_pixels",
    "tiny_tokenizer",
]
