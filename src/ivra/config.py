"""IVRAConfig: what IVRA does, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ivra.core import AFFINITY_MODES

AFFINITY_FEATURES = ("key", "query", "value", "hidden")
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
        relu (negatives clipped) | softmax (with ``temperature``).
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
            raise ValueError(f"layer must be an int (negative counts from the end), got {self.layer!r}")
        try:
            lam = float(self.lam)
        except (TypeError, ValueError):
            raise ValueError(f"lam must be a number in [0, 1], got {self.lam!r}") from None
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam!r}")
        object.__setattr__(self, "lam", lam)
        if self.affinity_layer is not None and (
            isinstance(self.affinity_layer, bool) or not isinstance(self.affinity_layer, int)
        ):
            raise ValueError(f"affinity_layer must be an int or None, got {self.affinity_layer!r}")
        if self.affinity_feature not in AFFINITY_FEATURES:
            raise ValueError(
                f"affinity_feature must be one of {AFFINITY_FEATURES}, got {self.affinity_feature!r}"
            )
        if self.affinity_mode not in AFFINITY_MODES:
            raise ValueError(f"affinity_mode must be one of {AFFINITY_MODES}, got {self.affinity_mode!r}")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> IVRAConfig:
        """The setting of one of the paper's systems (see :data:`PRESETS`), optionally with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown IVRA preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name]["fields"], **overrides})

    def replace(self, **changes) -> IVRAConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, spec: str) -> IVRAConfig:
        """Build from a CLI string such as ``"layer=3,lam=0.3,affinity_mode=relu"`` or ``"preset=flower,lam=0.1"``
        (a preset's fields first, the others override them)."""
        fields = {}
        preset = None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValueError(f"bad IVRA setting {part!r}: expected key=value, e.g. 'layer=20,lam=0.3'")
            key, value = (s.strip() for s in part.split("=", 1))
            if key == "preset":
                if value not in PRESETS:
                    raise ValueError(f"unknown IVRA preset {value!r}; known: {sorted(PRESETS)}")
                preset = value
                continue
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown IVRA setting {key!r}; known: {sorted(cls.__dataclass_fields__)}")
            if key in ("layer", "affinity_layer"):
                fields[key] = None if value.lower() == "none" else int(value)
            elif key in ("lam", "temperature"):
                fields[key] = float(value)
            elif key == "strict":
                fields[key] = value.lower() in ("1", "true", "yes")
            else:
                fields[key] = value
        if preset is not None:
            return cls.preset(preset, **fields)
        return cls(**fields)
