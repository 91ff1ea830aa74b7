"""The adapter protocol and the adapter registry.

An adapter answers questions about one model family; it holds no state between calls. The engine asks it:

* ``lm_layers(model)``: the language-model layers IVRA's ``layer`` indexes (for encoder-decoder LMs, the encoder);
* ``attention(layer)``: the self-attention module of one such layer (for ``position="post_attn"``);
* ``embedding(model)``: the token embedding whose input ids reveal where the visual tokens are;
* ``visual_token_ids(model)``: the placeholder ids of visual tokens in those input ids;
* ``vision_layers(model)`` and ``default_affinity_layer(model)``: what ``affinity_layer`` indexes;
* ``capture_points(model, layer, feature)``: which modules to hook during the model's own vision pass, and how to
  turn what they see into a record (a dict of tensors);
* ``image_blocks(model, records)``: turn the records of one vision pass into per-image :class:`ImageBlock` s, in
  the order the images' tokens appear in the language model's sequence, with patches already mapped to tokens
  (CLS/register tokens dropped, pixel shuffle / 2x2 merges / window permutations undone).

The integration points are the adapter's too, so the engine never names a model class:

* ``locate_points(model)``: hooks whose records say where the visual tokens are (default: the token embedding's
  input ids compared with ``visual_token_ids``), and ``visual_mask(model, located, records, hidden)`` which turns
  them (and the vision records, for models whose prefix layout is fixed) into the (B, S) mask at layer L;
* ``edit_points(model, layer, position)``: where and how the edit is made (:class:`EditPoint`): a pre-hook that
  returns new hidden states, an in-place edit where a hand-written layer loop reuses the tensor as its residual,
  an attention-output hook for ``post_attn``, an output hook for ``post``;
* ``pass_modules(model)`` and ``is_decode(module, args, kwargs)``: which module's forward is one pass (the unit
  at whose end strict mode checks that IVRA acted) and whether a call continues a KV cache (exempt).

Third parties add a family with ``@register`` on an :class:`Adapter` subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


class IVRAError(RuntimeError):
    """IVRA was asked for but cannot act (bad model, token count mismatch, keys not captured, ...)."""


@dataclass(frozen=True)
class CapturePoint:
    """A hook the engine registers for the adapter.

    ``kind`` is ``"forward"`` (``fn(module, args, kwargs, output) -> record | None``) or ``"pre"``
    (``fn(module, args, kwargs) -> record | None``). Records are dicts appended, in call order, to the list the
    engine later hands to :meth:`Adapter.image_blocks`.
    """

    module: nn.Module
    kind: str
    fn: Callable[..., dict[str, Any] | None]


EDIT_KINDS = ("pre", "pre_inplace", "plan", "attn_residual", "post")


@dataclass(frozen=True)
class EditPoint:
    """Where the engine edits the hidden states, and how.

    * ``pre``: forward pre-hook; the pooled hidden states replace the module's first argument (or
      ``hidden_states=``).
    * ``pre_inplace``: forward pre-hook; the visual rows of the first argument are overwritten in place (for
      hand-written layer loops that use the same tensor as the residual, e.g. lerobot's SmolVLA).
    * ``plan``: forward pre-hook that only records the layer input (for the two kinds below).
    * ``attn_residual``: forward hook on a module whose output is added to the recorded layer input (attention
      output): the output is changed so that ``input + output`` becomes the pooled residual stream.
    * ``post``: forward hook; the pooled output replaces the module's output (or its first element).
    """

    module: nn.Module
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"edit point kind must be one of {EDIT_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class ImageBlock:
    """One image (or camera view, or sub-image tile) as the language model sees it.

    ``keys`` (n, Dk): one feature per pooled visual token, in the token order. The block occupies
    ``skip_before + n + skip_after`` consecutive visual positions; the skipped ones (e.g. a kept CLS or
    Florence-2's global token) are left alone.
    ``sample``: the batch row the image belongs to, where the adapter knows it (records that come camera-major,
    e.g. lerobot's one vision call per camera); None places blocks in sequence order (see :mod:`ivra.plan`).
    ``pool``: False for an image whose tokens are counted but left alone (a padding-masked empty camera).
    ``index``: for blocks whose pooled tokens are not consecutive (e.g. letterbox padding columns left out of
    the affinity): (n,) long offsets of the keys' tokens inside the block's ``n_positions`` positions, which are
    then given by ``length``; ``skip_before`` / ``skip_after`` must be 0.
    """

    keys: torch.Tensor
    skip_before: int = 0
    skip_after: int = 0
    sample: int | None = None
    pool: bool = True
    index: torch.Tensor | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if self.index is not None:
            if self.length is None or self.skip_before or self.skip_after:
                raise ValueError("an ImageBlock with `index` needs `length` and no skip_before/skip_after")
            if self.index.shape != (self.keys.shape[0],):
                raise ValueError(
                    f"ImageBlock index {tuple(self.index.shape)} must have one offset per key ({self.keys.shape[0]})"
                )

    @property
    def n_positions(self) -> int:
        if self.index is not None:
            return int(self.length)
        return self.skip_before + self.keys.shape[0] + self.skip_after


def first_arg(args: tuple, kwargs: dict, name: str) -> Any:
    """The first positional argument of a call, or the keyword ``name``."""
    return args[0] if args else kwargs.get(name)


def resolve(obj: Any, paths: Sequence[str]) -> Any:
    """The first attribute path (dotted) that exists on ``obj``."""
    for path in paths:
        cur = obj
        try:
            for part in path.split("."):
                cur = getattr(cur, part)
        except AttributeError:
            continue
        return cur
    raise IVRAError(f"{type(obj).__name__} has none of the expected submodules {list(paths)}")


def check_index(value: int, length: int, what: str) -> int:
    """Normalise a possibly negative index, or raise naming the bad value and the valid range."""
    if not -length <= value < length:
        raise IVRAError(
            f"{what} {value} is out of range: the model has {length}, valid are {-length}..{length - 1}"
        )
    return value % length


class Adapter:
    """Base class with the common transformers layout; families override what differs."""

    name: ClassVar[str] = ""
    #: class names (of the model or any of its bases) this adapter handles, for auto-detection
    model_classes: ClassVar[tuple[str, ...]] = ()
    lm_layer_paths: ClassVar[tuple[str, ...]] = ()
    vision_layer_paths: ClassVar[tuple[str, ...]] = ()
    #: the layer's attention submodule name and the names of its q/k/v projections
    vision_attn: ClassVar[str] = "self_attn"
    qkv_names: ClassVar[dict[str, str]] = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}

    # -- language model side -------------------------------------------------------------------------------------
    def lm_layers(self, model: nn.Module) -> Sequence[nn.Module]:
        return resolve(model, self.lm_layer_paths)

    def attention(self, layer: nn.Module) -> nn.Module:
        return resolve(layer, ("self_attn", "attn", "attention"))

    def embedding(self, model: nn.Module) -> nn.Module:
        return model.get_input_embeddings()

    def visual_token_ids(self, model: nn.Module) -> list[int]:
        cfg = model.config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(cfg, name, None)
            if value is not None:
                return [int(value)]
        raise IVRAError(f"{type(model).__name__}'s config names no image token id")

    def edit_points(self, model: nn.Module, layer: int, position: str) -> list[EditPoint]:
        """Default: hooks on the decoder layer ``layer`` (and its attention module for ``post_attn``)."""
        target = self.lm_layers(model)[layer]
        if position == "pre":
            return [EditPoint(target, "pre")]
        if position == "post_attn":
            return [EditPoint(target, "plan"), EditPoint(self.attention(target), "attn_residual")]
        return [EditPoint(target, "plan"), EditPoint(target, "post")]

    def locate_points(self, model: nn.Module) -> list[CapturePoint]:
        """Default: the token embedding's input ids; a record ``{"visual": (B, S) bool}`` per 2-D call."""
        ids = torch.tensor(self.visual_token_ids(model))

        def on_embed(module, args, kwargs):
            x = args[0] if args else kwargs.get("input", kwargs.get("input_ids"))
            if x is None or x.dim() != 2:  # e.g. the scalar look-up of a placeholder's embedding
                return None
            return {"visual": torch.isin(x, ids.to(x.device))}

        return [CapturePoint(self.embedding(model), "pre", on_embed)]

    def visual_mask(
        self, model: nn.Module, located: list[dict[str, Any]], records: list[dict[str, Any]], hidden
    ) -> torch.Tensor | None:
        """The (B, S) mask of visual positions for the hidden states at layer L, or None if there are none.

        Default: the last located mask (the embedding call that built this sequence), None if it has no True.
        """
        for record in reversed(located):
            if "visual" in record:
                mask = record["visual"]
                return mask if bool(mask.any()) else None
        return None

    def pass_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules whose (outermost) forward call is one pass; strict checks run when it returns."""
        return [model]

    def is_decode(self, module: nn.Module, args: tuple, kwargs: dict) -> bool:
        """Whether this pass continues a non-empty KV cache (decode steps are exempt from IVRA)."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        try:
            return cache is not None and int(cache.get_seq_length()) > 0
        except Exception:  # legacy tuple caches and the like: no decode-step exemption
            return False

    # -- vision side -----------------------------------------------------------------------------------------------
    def vision_layers(self, model: nn.Module) -> Sequence[nn.Module]:
        return resolve(model, self.vision_layer_paths)

    def default_affinity_layer(self, model: nn.Module) -> int:
        """The last encoder layer: its keys are computed from the features of the layer below."""
        return len(self.vision_layers(model)) - 1

    def capture_points(self, model: nn.Module, layer: int, feature: str) -> list[CapturePoint]:
        block = self.vision_layers(model)[layer]
        if feature == "hidden":
            return [CapturePoint(block, "pre", lambda m, a, kw: {"keys": first_arg(a, kw, "hidden_states")})]
        proj = getattr(resolve(block, (self.vision_attn,)), self.qkv_names[feature])
        return [CapturePoint(proj, "forward", lambda m, a, kw, out: {"keys": out})]

    def image_blocks(self, model: nn.Module, records: list[dict[str, Any]]) -> list[ImageBlock]:
        """Default: each record holds keys (n_images, n_patches, Dk), one token per patch, no CLS."""
        return [ImageBlock(k) for r in records for k in _as_batch(r["keys"])]


def _as_batch(keys: torch.Tensor) -> torch.Tensor:
    return keys if keys.dim() == 3 else keys.unsqueeze(0)


# -- registry ----------------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available by ``cls.name`` and for auto-detection by class name."""
    if not cls.name:
        raise ValueError(f"adapter {cls.__qualname__} needs a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> Adapter:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise IVRAError(f"unknown adapter {name!r}; registered: {sorted(_REGISTRY)}") from None


def list_adapters() -> list[str]:
    return sorted(_REGISTRY)


def detect(model: nn.Module) -> Adapter:
    """The adapter whose ``model_classes`` names the model's class or one of its bases."""
    names = [c.__name__ for c in type(model).__mro__]
    for name in names:  # most specific class first
        for cls in _REGISTRY.values():
            if name in cls.model_classes:
                return cls()
    raise IVRAError(
        f"unknown model {type(model).__name__}: no registered adapter handles it (registered: "
        f"{sorted(_REGISTRY)}). Pass adapter=NAME to ivra.attach, or write one with @ivra.adapters.register."
    )
