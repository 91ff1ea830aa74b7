"""FLOWER's Florence-2 (remote-code module naming) rebuilt over transformers' native Florence-2 modules (ours).

FLOWER (intuitive-robots) loads ``microsoft/Florence-2-large`` with ``trust_remote_code`` (the remote Florence-2
code, which loads on transformers 4.46-4.51 only and cannot be downloaded here), deletes the BART decoder and uses:

* ``vlm._encode_image(pixels)`` once per camera (the DaViT tower with shared weights): (B, 1 + N, D), one global
  token (the spatial mean) first, then N patch tokens;
* ``vlm.get_encoder()(inputs_embeds=[static (1+N), gripper (1+N), <Flow> (1), text], attention_mask=...)``: the
  BART encoder (``vlm.language_model.model.encoder``) whose layers return tuples;
* a flow-matching action head on the encoder's output (a few Euler steps).

Module names as in the remote code: ``vlm.vision_tower.blocks[stage][block][0 = spatial, 1 = channel]``, the
channel block's attention wrapped as ``channel_attn.fn`` (a pre-norm wrapper), so its fused projection is
``vision_tower.blocks[-1][0][1].channel_attn.fn.qkv``. transformers 5's native Florence-2 computes the same thing
under other names (``model.vision_tower.blocks[-1][0].channel_block.channel_attn.qkv``,
``get_image_features(...).pooler_output``, ``model.language_model.encoder.layers`` returning tensors); the
rebuild wires the native modules (their weights and forward code) into the remote naming, so the two are
checked against each other. :class:`FLOWERVLA` accepts either VLM (``native=True`` keeps the native naming).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

FLOW_TOKEN = 100  # the <Flow> token id FLOWER adds to the tokenizer (tiny vocabulary here)


class PreNorm(nn.Module):
    """The remote code's pre-norm wrapper: ``fn(norm(x))`` (the residual add stays in the block)."""

    def __init__(self, norm: nn.Module, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = norm, fn

    def forward(self, x):
        return self.fn(self.norm(x))


class ChannelBlock(nn.Module):
    """Remote naming (``channel_attn.fn.qkv``) around a native ``Florence2VisionChannelBlock``'s modules."""

    def __init__(self, native: nn.Module):
        super().__init__()
        self.conv1, self.conv2, self.ffn, self.norm2 = native.conv1, native.conv2, native.ffn, native.norm2
        self.drop_path1, self.drop_path2 = native.drop_path1, native.drop_path2
        self.channel_attn = PreNorm(native.norm1, native.channel_attn)

    def forward(self, x):
        b, c, h, w = x.shape
        x = self.conv1(x) + x
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path1(self.channel_attn(t))
        x = t.transpose(1, 2).view(b, c, h, w)
        x = self.conv2(x) + x
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path2(self.ffn(self.norm2(t)))
        return t.transpose(1, 2).view(b, c, h, w)


class DaViT(nn.Module):
    """``blocks[stage]`` = Sequential of blocks, each ``Sequential(spatial_block, channel_block)``."""

    def __init__(self, native: nn.Module):
        super().__init__()
        self.convs = native.convs
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *[nn.Sequential(blk.spatial_block, ChannelBlock(blk.channel_block)) for blk in stage]
            )
            for stage in native.blocks
        )

    def forward_features_unpool(self, x):
        x = x.to(self.convs[0].conv.weight.dtype)
        for conv, stage in zip(self.convs, self.blocks):
            x = stage(conv(x))
        return x  # (B, C, H, W)


class TupleLayer(nn.Module):
    """An encoder layer that returns ``(hidden_states,)`` as the remote (transformers 4.4x BART) layers do."""

    def __init__(self, native: nn.Module):
        super().__init__()
        self.layer = native

    def forward(self, hidden_states, attention_mask=None):
        return (self.layer(hidden_states, attention_mask),)


class Encoder(nn.Module):
    def __init__(self, native: nn.Module):
        super().__init__()
        self.config = native.config
        self.embed_tokens, self.embed_positions = native.embed_tokens, native.embed_positions
        self.layernorm_embedding = native.layernorm_embedding
        self.layers = nn.ModuleList(TupleLayer(layer) for layer in native.layers)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden = self.layernorm_embedding(inputs_embeds + self.embed_positions(inputs_embeds[:, :, -1]))
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden = layer(hidden, mask)[0]
        return BaseModelOutput(last_hidden_state=hidden)


class _LM(nn.Module):
    def __init__(self, encoder: Encoder, shared: nn.Module):
        super().__init__()
        self.model = nn.Module()
        self.model.encoder, self.model.shared = encoder, shared  # the decoder is deleted, as FLOWER does


class RemoteFlorence2(nn.Module):
    """The remote Florence-2 as FLOWER holds it (decoder deleted), over a native model's modules."""

    def __init__(self, native: Florence2ForConditionalGeneration):
        super().__init__()
        self.config = native.config
        self.vision_tower = DaViT(native.model.vision_tower)
        self.projector = native.model.multi_modal_projector
        lm = native.model.language_model
        self.language_model = _LM(Encoder(lm.encoder), lm.shared)

    def _encode_image(self, pixel_values):
        """(B, 1 + N, D): the global (spatial mean) token first, then the patches in raster order."""
        return self.projector(self.vision_tower.forward_features_unpool(pixel_values))

    def get_encoder(self):
        return self.language_model.model.encoder

    def get_input_embeddings(self):
        return self.language_model.model.shared


def encode_image(vlm, pixels):
    if hasattr(vlm, "_encode_image"):
        return vlm._encode_image(pixels)
    return vlm.model.get_image_features(pixels).pooler_output


class FLOWERVLA(nn.Module):
    """FLOWER's inference path (rebuilt): two cameras, one DaViT pass each, the encoder, a flow head."""

    def __init__(self, vlm, action_dim: int = 7, chunk: int = 10, steps: int = 4):
        super().__init__()
        self.vlm = vlm
        d = vlm.config.text_config.d_model
        flow = vlm.get_input_embeddings()(torch.tensor(FLOW_TOKEN)).detach()
        self.prompt_embeds = nn.Parameter(flow[None, None], requires_grad=False)
        self.action_dim, self.chunk, self.steps = action_dim, chunk, steps
        self.cond = nn.Linear(d, d)
        self.head = nn.Sequential(nn.Linear(action_dim + d + 1, d), nn.GELU(), nn.Linear(d, action_dim))

    def encode_observations(self, static, gripper, text_ids, text_mask):
        s = encode_image(self.vlm, static)
        g = encode_image(self.vlm, gripper)
        text = self.vlm.get_input_embeddings()(text_ids)
        b = static.shape[0]
        merged = torch.cat([s, g, self.prompt_embeds.expand(b, -1, -1).to(s.dtype), text], dim=1)
        mask = torch.ones(merged.shape[:2], dtype=torch.long, device=merged.device)
        mask[:, merged.shape[1] - text.shape[1] :] = text_mask
        return self.vlm.get_encoder()(inputs_embeds=merged, attention_mask=mask).last_hidden_state

    def forward(self, static, gripper, text_ids, text_mask, noise):
        cond = self.cond(self.encode_observations(static, gripper, text_ids, text_mask).mean(1))
        z = noise
        for i in range(self.steps, 0, -1):
            t = torch.full((*z.shape[:2], 1), i / self.steps, dtype=z.dtype, device=z.device)
            v = self.head(torch.cat([z, cond[:, None].expand(-1, z.shape[1], -1), t], dim=-1))
            z = z - v / self.steps
        return z.clamp(-1, 1)


def build_native(
    seed: int = 0, encoder_layers: int = 12, attn: str = "eager"
) -> Florence2ForConditionalGeneration:
    """A tiny random native Florence-2 (two DaViT stages, 12 encoder layers like Florence-2-large)."""
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
        vocab_size=128,
        d_model=64,
        encoder_layers=encoder_layers,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    cfg = Florence2Config(vision_config=vc, text_config=tc, image_token_id=120)
    cfg._attn_implementation = attn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Florence2ForConditionalGeneration(cfg).eval()


def build_tiny(seed: int = 0, native: bool = False) -> FLOWERVLA:
    """A tiny random FLOWER: remote naming (default) or the native Florence-2 class (``native=True``)."""
    florence = build_native(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return FLOWERVLA(florence if native else RemoteFlorence2(florence)).eval()
