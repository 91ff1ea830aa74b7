"""IVRAHandle: applies IVRA to one model through its adapter, owning exactly the hooks it registers.

Per forward pass (the prefill of ``generate`` or a plain forward):

1. the capture hooks record the vision encoder's keys during the model's own vision pass;
2. a pre-hook on the token embedding reads the input ids and marks where the visual placeholders are (decode
   steps carry no placeholders, so they are left alone; callers that pass ``inputs_embeds`` give the positions
   with :meth:`IVRAHandle.set_visual_positions`);
3. at language-model layer L the adapter maps keys to per-image blocks, ``ivra.core`` computes the affinity and
   the visual tokens are pooled in place of the layer's input (``pre``), its post-attention residual stream
   (``post_attn``) or its output (``post``).

Keys and positions are consumed by the first layer-L call after they were recorded, so nothing leaks into the
next call. One exception: ``generate`` (transformers 5) runs the vision encoder once, before its loop, and hands
the resulting ``mm_encoder_outputs`` to every forward; without a KV cache each forward is a full prefill, so the
keys consumed with a given ``mm_encoder_outputs`` object are reused by later forwards that receive the very same
object (and only those). The handle never touches a weight; ``detach()`` removes exactly its own hooks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ivra import core
from ivra.adapters import Adapter, ImageBlock, IVRAError, detect, get
from ivra.adapters.base import check_index
from ivra.config import IVRAConfig


@dataclass
class IVRAStats:
    """What the handle did, cumulative since attach."""

    calls: int = 0  # forward passes in which IVRA edited tokens
    images: int = 0  # image blocks pooled
    tokens: int = 0  # visual tokens edited
    fallback_rows: int = 0  # affinity rows that hit the <= floor rule (see ivra.core)
    vision_captures: int = 0  # times the vision encoder's capture point fired
    skipped: int = 0  # layer-L calls with neither visual tokens nor keys (decode steps, text only)
    hook_seconds: float = 0.0  # wall time spent inside IVRA's hooks
    last_shapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class _Plan:
    """The pooling of one forward pass: gather indices and weights per group of equal-size blocks."""

    groups: list[
        tuple[torch.Tensor, torch.Tensor]
    ]  # (index (I, n) into the flattened (B*S) rows, W (I, n, n))
    layer_input: torch.Tensor | None = None


class IVRAHandle:
    """Returned by :func:`attach`. Use as a context manager or call :meth:`detach`."""

    def __init__(self, model: nn.Module, config: IVRAConfig, adapter: Adapter):
        self.model, self.config, self.adapter = model, config, adapter
        self.stats = IVRAStats()
        self.last_affinity: list[torch.Tensor] = []  # per image block of the last edited pass, (n, n) float32
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._records: list[dict[str, Any]] = []
        self._visual: torch.Tensor | None = None
        self._user_visual: torch.Tensor | None = None
        self._plan: _Plan | None = None
        self._visual_ids: torch.Tensor | None = None
        self._mm_outputs: dict | None = None  # mm_encoder_outputs handed to the current top-level forward
        self._decoding = False  # the current top-level forward continues a non-empty KV cache
        self._reusable: tuple[dict, list[dict[str, Any]]] | None = None  # (mm_encoder_outputs, their records)

        layers = adapter.lm_layers(model)
        self.layer = check_index(config.layer, len(layers), "layer")
        vision_layers = adapter.vision_layers(model)
        aff = (
            adapter.default_affinity_layer(model) if config.affinity_layer is None else config.affinity_layer
        )
        self.affinity_layer = check_index(aff, len(vision_layers), "affinity_layer")
        self._visual_ids = torch.tensor(adapter.visual_token_ids(model))
        try:
            self._install(layers[self.layer])
        except BaseException:
            self.detach()
            raise

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _install(self, layer: nn.Module) -> None:
        self._hooks.append(self.model.register_forward_pre_hook(self._on_model, with_kwargs=True))
        for point in self.adapter.capture_points(
            self.model, self.affinity_layer, self.config.affinity_feature
        ):
            self._add_capture(point)
        self._hooks.append(
            self.adapter.embedding(self.model).register_forward_pre_hook(self._on_embed, with_kwargs=True)
        )
        self._hooks.append(layer.register_forward_pre_hook(self._on_layer_pre, with_kwargs=True))
        if self.config.position == "post_attn":
            attn = self.adapter.attention(layer)
            self._hooks.append(attn.register_forward_hook(self._on_attention, with_kwargs=True))
        elif self.config.position == "post":
            self._hooks.append(layer.register_forward_hook(self._on_layer_post, with_kwargs=True))

    def _add_capture(self, point) -> None:
        def pre(module, args, kwargs):
            self._record(point.fn(module, args, kwargs))

        def fwd(module, args, kwargs, output):
            self._record(point.fn(module, args, kwargs, output))

        if point.kind == "pre":
            self._hooks.append(point.module.register_forward_pre_hook(pre, with_kwargs=True))
        elif point.kind == "forward":
            self._hooks.append(point.module.register_forward_hook(fwd, with_kwargs=True))
        else:
            raise ValueError(f"capture point kind must be 'pre' or 'forward', got {point.kind!r}")

    def _record(self, record: dict | None) -> None:
        if record is None:
            return
        t0 = time.perf_counter()
        self._records.append({k: (v.detach() if torch.is_tensor(v) else v) for k, v in record.items()})
        if any(k in record for k in ("keys", "windows")):
            self.stats.vision_captures += 1
        self.stats.hook_seconds += time.perf_counter() - t0

    def _on_model(self, module, args, kwargs):
        mm = kwargs.get("mm_encoder_outputs")
        self._mm_outputs = mm if isinstance(mm, dict) and any(v is not None for v in mm.values()) else None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        try:
            self._decoding = cache is not None and int(cache.get_seq_length()) > 0
        except Exception:  # legacy tuple caches and the like: no decode-step exemption
            self._decoding = False
        return None

    def _same_mm(self, a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(a[k] is b[k] for k in a)

    def _on_embed(self, module, args, kwargs):
        ids = args[0] if args else kwargs.get("input", kwargs.get("input_ids"))  # an embedding, or a model
        if ids is None or ids.dim() != 2:  # e.g. the scalar look-up of a placeholder's embedding
            return None
        t0 = time.perf_counter()
        if self._visual_ids.device != ids.device:
            self._visual_ids = self._visual_ids.to(ids.device)
        mask = torch.isin(ids, self._visual_ids)
        self._visual = mask if bool(mask.any()) else None
        self.stats.hook_seconds += time.perf_counter() - t0
        return None

    def set_visual_positions(self, positions) -> None:
        """For callers that pass ``inputs_embeds``: where the visual tokens are in the next forward pass.

        ``positions`` is a bool tensor (B, S), or per sample a list of ``(start, end)`` spans (end exclusive),
        one span per image in image order; then the sequence length is taken from the first forward.
        """
        if torch.is_tensor(positions):
            if positions.dtype != torch.bool or positions.dim() != 2:
                raise ValueError(
                    f"positions must be a bool tensor (B, S), got {positions.dtype} {tuple(positions.shape)}"
                )
            self._user_visual = positions
        else:
            self._user_visual = [list(map(tuple, spans)) for spans in positions]

    def _on_layer_pre(self, module, args, kwargs):
        t0 = time.perf_counter()
        hidden = args[0] if args else kwargs["hidden_states"]
        try:
            plan = self._make_plan(hidden)
            if plan is None or self.config.position != "pre":
                self._plan = plan
                if plan is not None:
                    plan.layer_input = hidden
                return None
            new = self._apply(plan, hidden)
        finally:
            self.stats.hook_seconds += time.perf_counter() - t0
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    def _on_attention(self, module, args, kwargs, output):
        plan, self._plan = self._plan, None
        if plan is None:
            return None
        t0 = time.perf_counter()
        attn = output[0] if isinstance(output, tuple) else output
        h = plan.layer_input
        # the residual stream after attention is h + attn; pool it and give the difference back as attn output
        pooled = self._apply(plan, h + attn)
        new_attn = attn.clone()
        flat_new, flat_pooled, flat_h = (
            new_attn.view(-1, attn.shape[-1]),
            pooled.view(-1, attn.shape[-1]),
            h.reshape(-1, attn.shape[-1]),
        )
        for idx, _ in plan.groups:
            rows = idx.reshape(-1)
            flat_new[rows] = flat_pooled[rows] - flat_h[rows]
        self.stats.hook_seconds += time.perf_counter() - t0
        return (new_attn, *output[1:]) if isinstance(output, tuple) else new_attn

    def _on_layer_post(self, module, args, kwargs, output):
        plan, self._plan = self._plan, None
        if plan is None:
            return None
        t0 = time.perf_counter()
        hidden = output[0] if isinstance(output, tuple) else output
        new = self._apply(plan, hidden)
        self.stats.hook_seconds += time.perf_counter() - t0
        return (new, *output[1:]) if isinstance(output, tuple) else new

    # -- planning and applying --------------------------------------------------------------------------------------
    def _take_visual_mask(self, hidden: torch.Tensor) -> torch.Tensor | None:
        mask, user = self._visual, self._user_visual
        self._visual = self._user_visual = None
        if user is not None:
            if isinstance(user, list):
                mask = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
                for b, spans in enumerate(user):
                    for start, end in spans:
                        mask[b, start:end] = True
            else:
                mask = user.to(hidden.device)
        return mask

    def _make_plan(self, hidden: torch.Tensor) -> _Plan | None:
        from_ids = self._user_visual is None
        mask = self._take_visual_mask(hidden)
        decoding, self._decoding = self._decoding, False
        records, self._records = self._records, []
        mm, self._mm_outputs = self._mm_outputs, None
        has_keys = any(k in r for r in records for k in ("keys", "windows"))
        if has_keys:
            self._reusable = (mm, records) if mm is not None else None
        elif mm is not None and self._reusable is not None and self._same_mm(mm, self._reusable[0]):
            records, has_keys = (
                self._reusable[1],
                True,
            )  # no-cache generate: same precomputed features as before
        if mask is not None and not has_keys and decoding and from_ids:
            mask = None  # a decode step whose generated id is the image placeholder: no image features there
        if mask is None and not has_keys:
            self.stats.skipped += 1  # decode step or text-only call: nothing to do
            return None
        if mask is None:
            return self._cannot(
                "the vision encoder ran but no visual token positions were found in the input ids (inputs_embeds "
                "passed? give the positions with handle.set_visual_positions(...))"
            )
        if not has_keys:
            return self._cannot(
                f"{int(mask.sum())} visual tokens found but no keys were captured from vision layer "
                f"{self.affinity_layer}: were image features precomputed outside the model's own vision pass?"
            )
        if tuple(mask.shape) != tuple(hidden.shape[:2]):
            return self._cannot(
                f"visual-position mask {tuple(mask.shape)} does not match the hidden states {tuple(hidden.shape[:2])} "
                "at the IVRA layer (chunked prefill is not supported)"
            )
        blocks = self.adapter.image_blocks(self.model, records)
        positions = mask.reshape(-1).nonzero().squeeze(1)
        expected = sum(b.n_positions for b in blocks)
        if expected != positions.numel():
            return self._cannot(
                f"token count mismatch: the language model has {positions.numel()} visual tokens but the vision "
                f"encoder's keys map to {expected} ({len(blocks)} image blocks of sizes "
                f"{[b.n_positions for b in blocks]}); beam search / num_return_sequences > 1 duplicate prompts "
                "after the vision pass and are not supported"
            )
        return self._plan_groups(blocks, positions)

    def _plan_groups(self, blocks: list[ImageBlock], positions: torch.Tensor) -> _Plan:
        by_size: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        offset = 0
        for block in blocks:
            n = block.keys.shape[0]
            start = offset + block.skip_before
            idx, keys = by_size.setdefault(n, ([], []))
            idx.append(positions[start : start + n])
            keys.append(block.keys)
            offset += block.n_positions
        groups, affinities = [], []
        for idx, keys in by_size.values():
            A = core.affinity(torch.stack(keys).to(positions.device))
            W, fallback = core.row_weights(A, self.config.affinity_mode, self.config.temperature)
            self.stats.fallback_rows += fallback
            groups.append((torch.stack(idx), W))
            affinities.extend(A)
        self.last_affinity = affinities
        self.stats.calls += 1
        self.stats.images += len(blocks)
        self.stats.tokens += sum(b.keys.shape[0] for b in blocks)
        self.stats.last_shapes = [tuple(b.keys.shape) for b in blocks]
        return _Plan(groups)

    def _apply(self, plan: _Plan, hidden: torch.Tensor) -> torch.Tensor:
        d = hidden.shape[-1]
        flat = hidden.reshape(-1, d)
        out = flat.clone()
        for idx, W in plan.groups:
            tokens = flat[idx]  # (I, n, D)
            out[idx.reshape(-1)] = core.mix(tokens, W, self.config.lam).reshape(-1, d)
        return out.view_as(hidden)

    def _cannot(self, reason: str) -> None:
        if self.config.strict:
            raise IVRAError(f"IVRA could not act: {reason}")
        return None

    # -- lifetime --------------------------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    def detach(self) -> None:
        """Remove exactly the hooks this handle registered; safe to call twice."""
        hooks, self._hooks = self._hooks, []
        for h in hooks:
            h.remove()
        self._records, self._visual, self._user_visual, self._plan = [], None, None, None
        self._mm_outputs, self._reusable, self._decoding = None, None, False

    def __enter__(self) -> IVRAHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"IVRAHandle({self.adapter.name}, layer={self.layer}, affinity_layer={self.affinity_layer}, {state}, {self.stats})"


def attach(
    model: nn.Module, config: IVRAConfig | None = None, *, adapter: str | Adapter | None = None, **overrides
) -> IVRAHandle:
    """Apply IVRA to ``model`` until the returned handle is detached.

    ``adapter``: a registered name or instance; auto-detected from the model's class when omitted.
    Keyword overrides build or modify the config: ``attach(model, layer=20, lam=0.3)``.
    """
    if config is None:
        config = IVRAConfig(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    if not isinstance(config, IVRAConfig):
        raise TypeError(f"config must be an ivra.IVRAConfig, got {type(config).__name__}")
    if adapter is None:
        adapter = detect(model)
    elif isinstance(adapter, str):
        adapter = get(adapter)
    return IVRAHandle(model, config, adapter)
