"""IVRAConfig: what IVRA does, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

AFFINITY_MODES = ("cosine", "relu", "softmax", "cosine_authors")  # ivra.core's (here: no torch at import)

AFFINITY_FEATURES = ("key", "query", "value", "hidden")


class ConfigError(ValueError):
    """An invalid IVRA setting (field, value and what was expected in the message)."""


POSITIONS = ("pre", "post_attn", "post")

#: Settings of the paper's systems (``IVRAConfig.preset(name)``). ``source`` says where each comes from.
PRESETS: dict[str, dict] = {
    "llara": {
        "fields": {"layer": 20, "lam": 0.3},
        "source": "the paper's LLaRA setting: LLaVA-7B language-model layer 20 of 32, lam about 0.3",
    },
    "flower": {
        "fields": {
            "layer": -1,
            "position": "post",
            "lam": 0.2,
            "affinity_layer": -1,
            "affinity_mode": "cosine",
        },
        "source": "the authors' released FLOWER integration: keys of the last DaViT stage's channel attention, "
        "raw cosine, applied after the last of the 12 Florence-2 encoder layers, lam 0.2",
    },
    "openvla": {
        "fields": {"layer": 20, "lam": 0.3},
        "source": "OURS, not published and not tuned on OpenVLA: the paper gives no OpenVLA setting; its LLaRA "
        "setting (layer 20 of the same 32-layer Llama-2-7B depth, lam 0.3) carried over; affinity from the DINOv2 "
        "tower (the openvla adapter's default)",
    },
}


@dataclass(frozen=True)
class IVRAConfig:
    """Settings of one IVRA intervention.

    layer: language-model layer L whose visual tokens are pooled (negative counts from the end). The paper uses a
        mid layer, 20 of 32 for LLaVA-7B (LLaRA).
    lam: mixing weight in [0, 1]; 0 leaves the model bit-identical. The paper uses about 0.3.
    affinity_layer: index into the vision encoder's layers whose ``affinity_feature`` is read (negative counts from
        the end); None takes the adapter's documented default (for LLaVA, the layer whose input is the hidden
        state LLaVA projects, i.e. ``encoder.layers[-1]`` for ``vision_feature_layer=-2``).
    affinity_feature: key | query | value projection of that layer, or hidden (its input hidden states).
    affinity_mode: cosine (authors' raw cosine with row-sum normalisation, see ivra.core for the <= 0 rule) |
        relu (negatives clipped) | softmax (with ``temperature``) | cosine_authors (UNSAFE, off by default: the
        released FLOWER integration's rule, division by clamp(row sum, 1e-6) with no fallback; rows summing to
        <= 0 are multiplied by up to 1e6; only for reproducing that release's numbers, see ivra.core).
    position: pre (input of layer L, the paper's P0, default) | post_attn (the residual stream after L's attention)
        | post (output of layer L).
    strict: raise if IVRA was asked for but could not act (no visual tokens found, keys not captured, token count
        mismatch). A silent no-op would make every A/B a lie; turn off only for text-only calls you expect.
    """

    layer: int = 20
    lam: float = 0.3
    affinity_layer: int | None = None
    affinity_feature: str = "key"
    affinity_mode: str = "cosine"
    temperature: float = 0.1
    position: str = "pre"
    strict: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ConfigError(f"layer must be an int (negative counts from the end), got {self.layer!r}")
        try:
            lam = float(self.lam)
        except (TypeError, ValueError):
            raise ConfigError(f"lam must be a number in [0, 1], got {self.lam!r}") from None
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"lam must be in [0, 1], got {self.lam!r}")
        object.__setattr__(self, "lam", lam)
        if self.affinity_layer is not None and (
            isinstance(self.affinity_layer, bool) or not isinstance(self.affinity_layer, int)
        ):
            raise ConfigError(f"affinity_layer must be an int or None, got {self.affinity_layer!r}")
        if self.affinity_feature not in AFFINITY_FEATURES:
            raise ConfigError(
                f"affinity_feature must be one of {AFFINITY_FEATURES}, got {self.affinity_feature!r}"
            )
        if self.affinity_mode not in AFFINITY_MODES:
            raise ConfigError(f"affinity_mode must be one of {AFFINITY_MODES}, got {self.affinity_mode!r}")
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise ConfigError(f"temperature must be a number > 0, got {self.temperature!r}") from None
        if not temperature > 0 or temperature == float("inf"):
            raise ConfigError(f"temperature must be a number > 0, got {self.temperature!r}")
        if self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict must be a bool, got {self.strict!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> IVRAConfig:
        """The setting of one of the paper's systems (see :data:`PRESETS`), optionally with some fields changed."""
        if name not in PRESETS:
            raise ConfigError(f"unknown IVRA preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name]["fields"], **overrides})

    def replace(self, **changes) -> IVRAConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, defaults: bool = False) -> str:
        """``"layer=0, lam=0.1"``: the setting as a person reads it (``layer`` and ``lam`` always, every other field
        only where it differs from its default, unless ``defaults``)."""
        return describe_setting(self.to_dict(), defaults=defaults)

    @classmethod
    def parse(cls, spec: str) -> IVRAConfig:
        """Build from a CLI string such as ``"layer=3,lam=0.3,affinity_mode=relu"`` or ``"preset=flower,lam=0.1"``
        (a preset's fields first, the others override them).

        Every value is checked: ints for ``layer``/``affinity_layer`` (``none`` for the adapter default), numbers
        for ``lam``/``temperature``, and only ``true/false/1/0/yes/no`` for ``strict``; a bad one raises
        ``ValueError`` naming the field, the value and what was expected.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError("empty IVRA setting: expected key=value pairs, e.g. 'layer=20,lam=0.3'")
        fields: dict = {}
        preset = None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ConfigError(f"bad IVRA setting {part!r}: expected key=value, e.g. 'layer=20,lam=0.3'")
            key, value = (s.strip() for s in part.split("=", 1))
            if key == "preset":
                if value not in PRESETS:
                    raise ConfigError(f"unknown IVRA preset {value!r}; known: {sorted(PRESETS)}")
                if preset is not None:
                    raise ConfigError(f"IVRA setting 'preset' given twice in {spec!r}")
                preset = value
                continue
            if key not in cls.__dataclass_fields__:
                raise ConfigError(
                    f"unknown IVRA setting {key!r}; known: {', '.join(cls.__dataclass_fields__)}"
                )
            if key in fields:
                raise ConfigError(f"IVRA setting {key!r} given twice in {spec!r}")
            fields[key] = _parse_value(key, value)
        if preset is not None:
            return cls.preset(preset, **fields)
        return cls(**fields)


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(value: str, what: str = "value") -> bool:
    """``true/false/1/0/yes/no`` (any case) -> bool; anything else raises ``ValueError`` naming it."""
    try:
        return _BOOL_WORDS[str(value).strip().lower()]
    except KeyError:
        raise ConfigError(f"{what} must be true/false/1/0/yes/no, got {value!r}") from None


def _parse_value(key: str, value: str):
    if key in ("layer", "affinity_layer"):
        if key == "affinity_layer" and value.lower() == "none":
            return None
        try:
            return int(value)
        except ValueError:
            extra = " or none (the adapter's default)" if key == "affinity_layer" else ""
            raise ConfigError(f"{key} must be an integer{extra}, got {value!r}") from None
    if key in ("lam", "temperature"):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if key == "strict":
        return parse_bool(value, "strict")
    return value


def describe_setting(setting: dict | None, defaults: bool = False) -> str:
    """An IVRA setting dict (or None: no IVRA) as ``"layer=0, lam=0.1"`` (non-default extras appended)."""
    if not setting:
        return "off"
    base = IVRAConfig()
    parts = []
    for key, value in setting.items():
        if key in ("layer", "lam") or defaults or getattr(base, key, object()) != value:
            parts.append(f"{key}={'none' if value is None else value}")
    return ", ".join(parts)
