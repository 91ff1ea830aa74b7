"""IVRAConfig validation and parsing: errors name the bad value."""

from __future__ import annotations

import dataclasses

import pytest

import ivra
from ivra import IVRAConfig


def test_defaults_and_roundtrip():
    cfg = IVRAConfig()
    assert (cfg.layer, cfg.lam, cfg.position, cfg.affinity_mode, cfg.strict) == (
        20,
        0.3,
        "pre",
        "cosine",
        True,
    )
    assert IVRAConfig(**cfg.to_dict()) == cfg
    assert cfg.replace(lam=0.5).lam == 0.5 and cfg.lam == 0.3
    assert isinstance(IVRAConfig(lam=1).lam, float)


@pytest.mark.parametrize("lam", [1.5, -0.1, float("nan")])
def test_lam_out_of_range(lam):
    with pytest.raises(ValueError, match=rf"lam.*{lam}"):
        IVRAConfig(lam=lam)


def test_lam_not_a_number():
    with pytest.raises(ValueError, match="'abc'"):
        IVRAConfig(lam="abc")


@pytest.mark.parametrize(
    "field, value",
    [
        ("affinity_mode", "dot"),
        ("position", "middle"),
        ("affinity_feature", "token"),
        ("temperature", 0.0),
        ("temperature", -2.0),
    ],
)
def test_unknown_choice_names_value(field, value):
    with pytest.raises(
        ValueError, match=rf"{field}.*{value!r}" if isinstance(value, str) else rf"{field}.*{value}"
    ):
        IVRAConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value", [("layer", 2.5), ("layer", True), ("layer", "3"), ("affinity_layer", 1.0)]
)
def test_layer_types(field, value):
    with pytest.raises(ValueError, match=field):
        IVRAConfig(**{field: value})


def test_frozen():
    cfg = IVRAConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lam = 0.5  # type: ignore[misc]


def test_parse():
    cfg = IVRAConfig.parse(
        "layer=3, lam=0.25,affinity_mode=relu,affinity_layer=none,strict=false,position=post"
    )
    assert cfg == IVRAConfig(
        layer=3, lam=0.25, affinity_mode="relu", affinity_layer=None, strict=False, position="post"
    )
    assert IVRAConfig.parse("affinity_layer=-2").affinity_layer == -2
    with pytest.raises(ValueError, match="'bogus'"):
        IVRAConfig.parse("bogus=1")
    with pytest.raises(ValueError, match="'layer3'"):
        IVRAConfig.parse("layer3")
    with pytest.raises(ValueError, match="1.5"):
        IVRAConfig.parse("lam=1.5")


@pytest.mark.parametrize(
    "word, value",
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("NO", False),
    ],
)
def test_parse_booleans_accept_only_the_usual_words(word, value):
    assert IVRAConfig.parse(f"strict={word}").strict is value


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("strict=ture", "strict must be true/false/1/0/yes/no, got 'ture'"),
        ("strict=", "strict must be true/false/1/0/yes/no, got ''"),
        ("layer=x", "layer must be an integer, got 'x'"),
        ("layer=1.5", "layer must be an integer, got '1.5'"),
        (
            "affinity_layer=top",
            "affinity_layer must be an integer or none (the adapter's default), got 'top'",
        ),
        ("lam=high", "lam must be a number, got 'high'"),
        ("temperature=0", "temperature must be a number > 0"),
        ("layer=1,layer=2", "'layer' given twice"),
        ("", "empty IVRA setting"),
    ],
)
def test_parse_names_the_bad_value(spec, needle):
    from ivra.config import ConfigError

    with pytest.raises(ConfigError) as info:
        IVRAConfig.parse(spec)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_strict_must_be_a_bool():
    with pytest.raises(ValueError, match="strict must be a bool"):
        IVRAConfig(strict="ture")


def test_describe_is_what_a_person_reads():
    from ivra.config import describe_setting

    assert IVRAConfig(layer=0, lam=0.1).describe() == "layer=0, lam=0.1"
    cfg = IVRAConfig(layer=-1, lam=0.3, affinity_mode="relu", affinity_layer=-2, strict=False)
    assert cfg.describe() == "layer=-1, lam=0.3, affinity_layer=-2, affinity_mode=relu, strict=False"
    assert describe_setting(None) == "off"


def test_attach_overrides_validate():
    """attach(model, **overrides) goes through the same validation (before touching the model)."""
    import torch

    with pytest.raises(ValueError, match="1.5"):
        ivra.attach(torch.nn.Linear(2, 2), lam=1.5)
    with pytest.raises(ValueError, match="'sideways'"):
        ivra.attach(torch.nn.Linear(2, 2), IVRAConfig(), position="sideways")
    with pytest.raises(TypeError, match="dict"):
        ivra.attach(torch.nn.Linear(2, 2), {"lam": 0.3})
