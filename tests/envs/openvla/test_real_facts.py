"""Our rebuild (``ivra.rebuilt.openvla``) held to facts recorded from the real OpenVLA and OpenVLA-OFT code.

The fixtures ``tests/fixtures/real/openvla.json`` (github.com/openvla/openvla) and ``openvla_oft.json``
(github.com/moojink/openvla-oft) were written by ``scripts/record_fixture_openvla.py`` from checkouts of those
repositories (commit and files named in each fixture), on the real classes with tiny random weights. Here the same
measuring functions of that script run on our rebuild at the same tiny sizes: module tree and classes, parameter
names and shapes, signatures, the towers' facts, the order of the tokens the language model sees (where the visual
patches, OFT's proprio token and action placeholders sit; which hidden states OFT's action head reads) and, with
every parameter set by the same rule on its name, a few outputs. Nothing of the real code is needed here.
"""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path

import pytest
import torch

from ivra.adapters import detect
from ivra.adapters.openvla import OpenVLAAdapter
from ivra.rebuilt import openvla as rebuilt

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "real"
_spec = importlib.util.spec_from_file_location(
    "record_fixture_openvla", ROOT / "scripts" / "record_fixture_openvla.py"
)
rec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rec)

FILES = {"openvla": "openvla.json", "oft": "openvla_oft.json"}
CASES = {  # (family, recorded variant): build_tiny options
    ("openvla", "default"): {},
    ("oft", "two_images_proprio"): {"num_images_in_input": 2, "use_proprio": True},
    ("oft", "film"): {"num_images_in_input": 2, "use_proprio": True, "use_film": True},
}
COMPANIONS = ("proprio_projector", "action_head")  # separate modules in OFT; children of our OFT model


@cache
def facts(family: str) -> dict:
    return json.loads((FIXTURES / FILES[family]).read_text())


def recorded(case) -> dict:
    family, variant = case
    return facts(family)["variants"][variant]


@cache
def model_for(case):
    family, _ = case
    text = facts(family)["tiny_config"]["text_config"]
    return rebuilt.build_tiny(
        hidden=text["hidden_size"],
        text_layers=text["num_hidden_layers"],
        base_vocab=text["vocab_size"] - 64,
        norm_stats=rec.norm_stats(),
        **CASES[case],
    )


def roots(case) -> dict[str, torch.nn.Module]:
    model = model_for(case)
    return {"vla": model, **{c: getattr(model, c) for c in COMPANIONS if case[0] == "oft"}}


@cache
def measured(case) -> dict:
    model = model_for(case)
    if case[0] == "openvla":
        return rec.measure_openvla(model)
    return rec.measure_oft(model, model.proprio_projector, model.action_head, use_film=model.config.use_film)


def diff(ours: dict, real: dict) -> list[str]:
    out = [f"missing {k} ({real[k]})" for k in real if k not in ours]
    out += [f"extra {k} ({ours[k]})" for k in ours if k not in real]
    out += [f"{k}: ours {ours[k]}, real {real[k]}" for k in real if k in ours and ours[k] != real[k]]
    return out


IDS = [f"{f}-{v}" for f, v in CASES]


@pytest.mark.parametrize("family", sorted(FILES))
def test_fixture_names_its_source(family):
    src = facts(family)["source"]
    assert src["repository"] == {"openvla": "https://github.com/openvla/openvla",
                                 "oft": "https://github.com/moojink/openvla-oft"}[family]  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{40}", src["commit"])
    assert any(f.endswith("prismatic/extern/hf/modeling_prismatic.py") for f in src["files"].values())
    env = facts(family)["environment"]
    assert env["timm"].startswith("0.9.") and env["transformers"] == "4.40.1"


@pytest.mark.parametrize("family", sorted(FILES))
def test_recorded_at_our_tiny_sizes(family):
    tiny = facts(family)["tiny_config"]
    assert tiny["timm_override_kwargs"] == rebuilt.TINY_TOWER == rec.TINY_TOWER
    assert tiny["text_config"] == rec.TINY_TEXT
    ours = model_for(next(c for c in CASES if c[0] == family)).config.text_config
    for key, value in tiny["text_config"].items():
        assert getattr(ours, key) == value, key


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_module_tree(case):
    real = recorded(case)["modules"]
    for name, module in roots(case).items():
        ours = rec.module_tree(module, skip=COMPANIONS if name == "vla" else ())
        real_root, our_root = real[name][""], ours.pop("")
        assert real_root in [c.__name__ for c in type(module).__mro__], (name, real_root, our_root)
        problems = diff(ours, {k: v for k, v in real[name].items() if k})
        assert not problems, f"{name}: our module tree drifts from the real one:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameter_names_and_shapes(case):
    real = recorded(case)["parameters"]
    for name, module in roots(case).items():
        ours = rec.param_shapes(module, skip=COMPANIONS if name == "vla" else ())
        problems = diff(ours, real[name])
        assert not problems, f"{name}: our parameters drift from the real ones:\n" + "\n".join(problems[:20])


def _callable(model, name):
    inner = rec.inner_backbone(model)
    return {
        "forward": type(model).forward,
        "predict_action": type(model).predict_action,
        "prepare_inputs_for_generation": type(model).prepare_inputs_for_generation,
        "vision_backbone.forward": type(model.vision_backbone).forward,
        "proprio_projector.forward": lambda: type(model.proprio_projector).forward,
        "action_head.predict_action": lambda: type(model.action_head).predict_action,
        "film_block.forward": lambda: type(inner.featurizer.blocks[0]).forward,
    }[name]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_signatures(case):
    model = model_for(case)
    for name, real in recorded(case)["signatures"].items():
        fn = _callable(model, name)
        fn = fn() if getattr(fn, "__name__", "") == "<lambda>" else fn
        assert rec.signature(fn) == real, f"{name}: ours {rec.signature(fn)}, real {real}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_towers_and_where_the_adapter_hooks(case):
    model = model_for(case)
    real = recorded(case)
    assert rec.tower_facts(model) == real["towers"]
    assert rec.backbone_path(model) == real["paths"]["vision_backbone"]
    for key in ("projector", "language_model", "lm_layers", "embedding"):
        model.get_submodule(real["paths"][key])  # exists in ours
    assert type(model.language_model.model.layers[0].self_attn).__name__ == real["llm_attention"]
    adapter = detect(model)
    assert isinstance(adapter, OpenVLAAdapter)
    towers = adapter.towers(model)
    assert towers["dinov2"] is model.get_submodule(real["towers"]["featurizer"]["path"])
    assert towers["siglip"] is model.get_submodule(real["towers"]["fused_featurizer"]["path"])
    both = OpenVLAAdapter(tower="both")
    depth = real["towers"]["featurizer"]["depth"]
    hooked = [p.module for p in both.capture_points(model, depth - 1, "key")]
    expected = [model.get_submodule(real["towers"][t]["qkv_path"].format(i=depth - 1)) for t in ("featurizer", "fused_featurizer")]  # fmt: skip
    assert hooked[0] is expected[0] and hooked[1] is expected[1]
    assert adapter.lm_layer_paths[0] == real["paths"]["lm_layers"]


def _without_probes(d):
    if isinstance(d, dict):
        return {k: _without_probes(v) for k, v in d.items() if not k.startswith("probe_")}
    return d


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_token_order_the_language_model_sees(case):
    ours, real = _without_probes(measured(case)), _without_probes(recorded(case)["measured"])
    for entry in real:
        assert ours[entry] == real[entry], f"{entry}: ours {ours[entry]}\nreal {real[entry]}"
    images = 1 if case[0] == "openvla" else 2
    for entry in [e for e in real if "visual_positions" in real[e]]:  # the layout the adapter assumes
        assert real[entry]["visual_positions"] == [[1, 256 * images]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_numeric_probe(case):
    """Same weights (set from parameter names) and inputs: the same logits and actions as the real code."""
    ours, real = measured(case), recorded(case)["measured"]
    for entry, values in real.items():
        for key in [k for k in (values if isinstance(values, dict) else {}) if k.startswith("probe_")]:
            got, want = torch.tensor(ours[entry][key]), torch.tensor(values[key])
            assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), f"{entry} {key}: ours {got}\nreal {want}"


def test_config_fields_the_project_reads():
    real = facts("openvla")["config"]
    ours = model_for(("openvla", "default")).config
    assert list(ours.timm_model_ids) == real["timm_model_ids"]
    assert ours.use_fused_vision_backbone == real["use_fused_vision_backbone"]
    for field in ("timm_model_ids", "use_fused_vision_backbone", "norm_stats", "n_action_bins", "pad_to_multiple_of",
                  "text_config"):  # fmt: skip
        assert field in real["fields"] and hasattr(ours, field), field
