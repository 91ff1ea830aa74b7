"""IVRAHandle: applies IVRA to one model through its adapter, owning exactly the hooks it registers.

The adapter says where everything is (``ivra.adapters.base``); the engine never names a model class. Per pass
(one outermost call of an adapter's ``pass_modules``: a transformers model's forward, the prefix prefill of a
lerobot policy):

1. capture hooks record the vision encoder's keys during the model's own vision pass;
2. locate hooks record where the visual tokens are (placeholder ids in the input ids, or what the adapter knows
   of a fixed prefix layout; callers that splice image features themselves give the positions with
   :meth:`IVRAHandle.set_visual_positions`);
3. at language-model layer L the adapter maps keys to per-image blocks, :mod:`ivra.plan` places each block on its
   own sample's visual positions, :mod:`ivra.core` computes the affinity and the visual tokens are pooled where
   the adapter's edit points say (layer input, residual stream after attention, layer output);
4. when the pass returns, strict mode checks that IVRA acted: a prefill in which the vision encoder ran but
   nothing was edited, or a prefill with no visual tokens at all, raises :class:`ivra.IVRAError`. Decode steps
   (a pass that continues a KV cache; denoising steps that reuse a prefix cache) are exempt.

Keys and positions are consumed by the first layer-L call after they were recorded, so nothing leaks into the
next call. One exception: ``generate`` (transformers 5) runs the vision encoder once, before its loop, and hands
the resulting ``mm_encoder_outputs`` to every forward; without a KV cache each forward is a full prefill, so the
keys consumed with a given ``mm_encoder_outputs`` object are reused by later forwards that receive the very same
object (and only those). The handle never touches a weight; ``detach()`` removes exactly its own hooks.

Several handles may be attached to one model at once; :meth:`IVRAHandle.set_active_samples` restricts a handle
to some rows of the batch, so that one batch can carry several IVRA settings (or none) per sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ivra import core, plan
from ivra.adapters import Adapter, IVRAError, detect, get
from ivra.adapters.base import check_index
from ivra.config import IVRAConfig

#: vision captures allowed to pile up with no pass of the attached model in between (strict mode)
MAX_PENDING_CAPTURES = 16


@dataclass
class IVRAStats:
    """What the handle did, cumulative since attach."""

    calls: int = 0  # passes in which IVRA edited tokens
    images: int = 0  # image blocks pooled
    tokens: int = 0  # visual tokens edited
    fallback_rows: int = 0  # affinity rows that hit the <= floor rule (see ivra.core)
    vision_captures: int = 0  # times the vision encoder's capture point fired
    skipped: int = 0  # layer-L calls with neither visual tokens nor keys (decode steps, text only)
    unused_vision: int = 0  # non-strict: passes whose vision keys were never used (strict raises instead)
    text_only_prefills: int = 0  # non-strict: prefills with no visual tokens (strict raises instead)
    hook_seconds: float = 0.0  # wall time spent inside IVRA's hooks
    last_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"IVRA edited {self.tokens} visual tokens in {self.images} image block(s) over {self.calls} pass(es); "
            f"{self.vision_captures} vision capture(s), {self.skipped} layer call(s) without visual tokens "
            f"(decode steps, text only), {self.fallback_rows} affinity row(s) fell back to relu, "
            f"{1000 * self.hook_seconds:.1f} ms in hooks"
        )
        if self.unused_vision or self.text_only_prefills:
            text += f"; not strict: {self.unused_vision} unused vision pass(es), {self.text_only_prefills} text-only prefill(s)"
        return text


@dataclass
class _Plan:
    """The pooling of one pass: gather indices and weights per group of equal-size blocks."""

    groups: list[tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]]  # (rows (I, n), W (I, n, n), who)
    layer_input: torch.Tensor | None = None


class IVRAHandle:
    """Returned by :func:`attach`. Use as a context manager or call :meth:`detach`."""

    def __init__(self, model: nn.Module, config: IVRAConfig, adapter: Adapter):
        self.model, self.config, self.adapter = model, config, adapter
        self.stats = IVRAStats()
        self.last_affinity: list[torch.Tensor] = []  # per image block of the last edited pass, (n, n) float32
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._records: list[dict[str, Any]] = []
        self._located: list[dict[str, Any]] = []
        self._user_visual: torch.Tensor | list | None = None
        self._plan: _Plan | None = None
        self._active: torch.Tensor | None = None  # bool (B,): rows this handle edits; None = all
        self._mm_outputs: dict | None = None  # mm_encoder_outputs handed to the current pass
        self._decoding = False  # the current pass continues a non-empty KV cache
        self._reusable: tuple[dict, list[dict[str, Any]]] | None = None  # (mm_encoder_outputs, their records)
        self._depth = 0  # nesting of pass-module calls
        self._acted = False  # the current pass reached layer L with something to do (or a deliberate skip)
        self._captures_outside = 0  # captures since the last pass

        layers = adapter.lm_layers(model)
        self.layer = check_index(config.layer, len(layers), "layer")
        vision_layers = adapter.vision_layers(model)
        aff = (
            adapter.default_affinity_layer(model) if config.affinity_layer is None else config.affinity_layer
        )
        self.affinity_layer = check_index(aff, len(vision_layers), "affinity_layer")
        try:
            self._install()
        except BaseException:
            self.detach()
            raise

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _install(self) -> None:
        for module in self.adapter.pass_modules(self.model):
            self._hooks.append(module.register_forward_pre_hook(self._on_pass_start, with_kwargs=True))
            self._hooks.append(
                module.register_forward_hook(self._on_pass_end, with_kwargs=True, always_call=True)
            )
        for point in self.adapter.capture_points(
            self.model, self.affinity_layer, self.config.affinity_feature
        ):
            self._add_point(point, self._record)
        for point in self.adapter.locate_points(self.model):
            self._add_point(point, self._locate)
        for point in self.adapter.edit_points(self.model, self.layer, self.config.position):
            if point.kind in ("pre", "pre_inplace", "plan"):
                hook = self._make_pre_edit(point.kind)
                self._hooks.append(point.module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                hook = self._on_attention if point.kind == "attn_residual" else self._on_post
                self._hooks.append(point.module.register_forward_hook(hook, with_kwargs=True))

    def _add_point(self, point, sink) -> None:
        def pre(module, args, kwargs):
            sink(point.fn(module, args, kwargs))

        def fwd(module, args, kwargs, output):
            sink(point.fn(module, args, kwargs, output))

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
            if self._depth == 0:
                self._captures_outside += 1
                if self._captures_outside > MAX_PENDING_CAPTURES and self.config.strict:
                    n = self._captures_outside
                    self._reset_pass_state()
                    raise IVRAError(
                        f"IVRA could not act: the vision encoder ran {n} times but IVRA never reached language-"
                        f"model layer {self.layer} (adapter {self.adapter.name!r}): is the language model run "
                        "by a loop this adapter does not know? Attach to the policy object (e.g. the lerobot "
                        "policy) rather than to the VLM inside it"
                    )
        self.stats.hook_seconds += time.perf_counter() - t0

    def _locate(self, record: dict | None) -> None:
        if record is not None:
            self._located.append(record)

    def _on_pass_start(self, module, args, kwargs):
        self._depth += 1
        if self._depth > 1:
            return None
        mm = kwargs.get("mm_encoder_outputs")
        self._mm_outputs = mm if isinstance(mm, dict) and any(v is not None for v in mm.values()) else None
        self._decoding = self.adapter.is_decode(module, args, kwargs)
        self._captures_outside = 0  # (``_acted`` is not reset here: an encoder run before the pass counts)
        return None

    def _on_pass_end(self, module, args, kwargs, output):
        self._depth = max(0, self._depth - 1)
        if self._depth > 0:
            return None
        decoding, acted = self._decoding, self._acted
        pending = any(k in r for r in self._records for k in ("keys", "windows"))
        self._decoding = self._acted = False
        self._mm_outputs = None
        if output is None:  # the forward raised (always_call): drop this pass's state, the error propagates
            self._reset_pass_state()
            return None
        if pending:
            self._reset_pass_state()
            self.stats.unused_vision += 1
            self._cannot(
                f"the vision encoder ran but IVRA never edited language-model layer {self.layer} in this pass "
                f"(adapter {self.adapter.name!r}): no hook at that layer fired. Wrong adapter, or a layer loop the "
                "adapter does not know?"
            )
        elif not acted and not decoding:
            self._reset_pass_state()
            self.stats.text_only_prefills += 1
            self._cannot(
                "a prefill ran with IVRA attached but it had no visual tokens and no image went through the "
                "vision encoder (a text-only prompt? use strict=False to allow it, or detach IVRA for it)"
            )
        return None

    def _reset_pass_state(self) -> None:
        self._records, self._located, self._user_visual, self._plan = [], [], None, None
        self._captures_outside = 0

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

    def set_active_samples(self, rows) -> None:
        """Edit only these batch rows from now on (a length-B bool sequence or tensor); None = every row.

        Rows a handle does not own are left bit-identical. With one handle per setting and disjoint rows, one
        batch carries several IVRA arms (the baseline rows owned by none).
        """
        if rows is None:
            self._active = None
            return
        mask = torch.as_tensor(rows)
        if mask.dim() != 1 or mask.dtype != torch.bool:
            raise ValueError(
                f"active samples must be a 1-D bool sequence (one flag per batch row), got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        self._active = mask

    def _make_pre_edit(self, kind: str):
        def hook(module, args, kwargs):
            t0 = time.perf_counter()
            hidden = args[0] if args else kwargs["hidden_states"]
            try:
                made = self._make_plan(hidden)
                if made is None or kind == "plan":
                    self._plan = made
                    if made is not None:
                        made.layer_input = hidden
                    return None
                if kind == "pre_inplace":
                    self._apply(made, hidden, out=hidden)
                    return None
                new = self._apply(made, hidden)
            finally:
                self.stats.hook_seconds += time.perf_counter() - t0
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def _on_attention(self, module, args, kwargs, output):
        made, self._plan = self._plan, None
        if made is None:
            return None
        t0 = time.perf_counter()
        attn = output[0] if isinstance(output, tuple) else output
        h = made.layer_input
        # the residual stream after attention is h + attn; pool it and give the difference back as attn output
        pooled = self._apply(made, h + attn)
        new_attn = attn.clone()
        flat_new, flat_pooled, flat_h = (
            new_attn.view(-1, attn.shape[-1]),
            pooled.view(-1, attn.shape[-1]),
            h.reshape(-1, attn.shape[-1]),
        )
        for rows, _, _ in made.groups:
            rows = rows.reshape(-1)
            flat_new[rows] = flat_pooled[rows] - flat_h[rows]
        self.stats.hook_seconds += time.perf_counter() - t0
        return (new_attn, *output[1:]) if isinstance(output, tuple) else new_attn

    def _on_post(self, module, args, kwargs, output):
        made, self._plan = self._plan, None
        if made is None:
            return None
        t0 = time.perf_counter()
        hidden = output[0] if isinstance(output, tuple) else output
        new = self._apply(made, hidden)
        self.stats.hook_seconds += time.perf_counter() - t0
        return (new, *output[1:]) if isinstance(output, tuple) else new

    # -- planning and applying --------------------------------------------------------------------------------------
    def _take_visual_mask(self, hidden: torch.Tensor, records: list[dict[str, Any]]) -> torch.Tensor | None:
        located, user = self._located, self._user_visual
        self._located, self._user_visual = [], None
        if user is None:
            return self.adapter.visual_mask(self.model, located, records, hidden)
        if isinstance(user, list):
            mask = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            for b, spans in enumerate(user):
                for start, end in spans:
                    mask[b, start:end] = True
            return mask
        return user.to(hidden.device)

    def _make_plan(self, hidden: torch.Tensor) -> _Plan | None:
        from_ids = self._user_visual is None
        records, self._records = self._records, []
        mask = self._take_visual_mask(hidden, records)
        decoding = self._decoding
        mm = self._mm_outputs
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
            self.stats.skipped += 1  # decode step or text-only call: nothing to do (checked at the pass end)
            return None
        self._acted = True
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
        try:
            placed = plan.assign(blocks, mask.to(hidden.device))
        except IVRAError:
            if self.config.strict:
                raise
            return None
        return self._plan_groups(placed, hidden.device)

    def _plan_groups(self, placed: list[plan.Placed], device) -> _Plan:
        active = self._active
        if active is not None:
            active = active.tolist()
        by_size: dict[int, tuple[list, list, list]] = {}
        n_images = n_tokens = 0
        shapes = []
        for p in placed:
            if not p.block.pool:
                continue
            if active is not None and not (p.sample < len(active) and active[p.sample]):
                continue
            keys = p.block.keys
            if not bool(torch.isfinite(keys).all()):
                raise IVRAError(
                    f"IVRA could not act: non-finite keys (NaN or inf) in image {p.image} of sample {p.sample} "
                    f"from vision layer {self.affinity_layer}: the vision encoder's output is broken there"
                )
            rows, ks, who = by_size.setdefault(keys.shape[0], ([], [], []))
            rows.append(p.rows)
            ks.append(keys)
            who.append((p.sample, p.image))
            n_images += 1
            n_tokens += keys.shape[0]
            shapes.append(tuple(keys.shape))
        groups, affinities = [], []
        for rows, ks, who in by_size.values():
            A = core.affinity(torch.stack(ks).to(device))
            W, fallback = core.row_weights(A, self.config.affinity_mode, self.config.temperature)
            self.stats.fallback_rows += fallback
            groups.append((torch.stack(rows), W, who))
            affinities.extend(A)
        self.last_affinity = affinities
        if groups:
            self.stats.calls += 1
        self.stats.images += n_images
        self.stats.tokens += n_tokens
        self.stats.last_shapes = shapes
        return _Plan(groups)

    def _apply(self, made: _Plan, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Pool the planned rows of ``hidden``; into a copy, or into ``out`` in place."""
        d = hidden.shape[-1]
        flat = hidden.reshape(-1, d)
        if out is None:
            target = flat.clone()
        else:
            target = out.view(-1, d)  # in place: must be a view of ``out``
        mixed = []
        for rows, W, who in made.groups:
            tokens = flat[rows]  # (I, n, D)
            if not bool(torch.isfinite(tokens).all()):
                bad = (~torch.isfinite(tokens)).flatten(1).any(1).nonzero()[0, 0].item()
                sample, image = who[bad]
                raise IVRAError(
                    f"IVRA could not act: non-finite hidden states (NaN or inf) in the visual tokens of image "
                    f"{image} of sample {sample} at language-model layer {self.layer}"
                )
            mixed.append((rows, core.mix(tokens, W, self.config.lam)))
        for rows, new in mixed:  # write after all reads: the groups' rows are disjoint, but stay safe
            target[rows.reshape(-1)] = new.reshape(-1, d)
        return target.view_as(hidden)

    def _same_mm(self, a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(a[k] is b[k] for k in a)

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
        self._reset_pass_state()
        self._mm_outputs, self._reusable, self._decoding = None, None, False
        self._depth, self._acted = 0, False

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
