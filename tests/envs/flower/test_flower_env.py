"""FLOWER's stack (transformers 4.51.3, torch 2.13.0, timm, torchvision): our rebuild of FLOWERVLA is held to the
facts recorded from the real code, the flower and florence2 adapters act on it, and FlowerPolicy drives it through
FLOWER's LIBERO protocol (images checked against FLOWER's own torchvision transforms) and a LIBERO A/B episode.
The checks are those of tests/test_flower.py (imported), run here on FLOWER's stack."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ivra

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("core_test_flower", ROOT / "tests/test_flower.py")
T = importlib.util.module_from_spec(_spec)
sys.modules["core_test_flower"] = T
_spec.loader.exec_module(T)


@pytest.fixture(scope="module")
def measured():
    return T.recorder().measure(T.build_tiny(seed=3))


@pytest.mark.parametrize(
    "section",
    ["tree", "parameters", "signatures", "tokenizer", "token_order", "global_token", "chunking", "numerics"],
)
def test_rebuild_matches_the_real_code_here(measured, section):
    assert T.compare(T.FIXTURE[section], measured[section], section) == []


def test_flower_adapter_each_camera_its_own_block():
    T.test_each_camera_its_own_block_global_token_alone(native=False)


def test_flower_adapter_authors_spans_and_rule():
    T.test_authors_spans_and_their_row_rule()


def test_lam_zero_batch_and_detach():
    T.test_lam_zero_bit_identical_batch_consistent_and_detach(native=False)


def test_one_vision_pass_per_camera():
    T.test_one_vision_pass_per_camera_per_step()


def test_bare_remote_florence2():
    T.test_bare_remote_florence2_is_detected_and_edited()


def test_policy_images_are_flowers_own_transforms():
    """FlowerPolicy.pixels == FLOWER's val transforms (torchvision Resize(112, antialias) on uint8, ScaleImageTensor,
    Normalize with CLIP's mean/std) on LIBERO's own (upside-down) frame."""
    from torchvision.transforms import Normalize, Resize

    from ivra.policies.flower import CLIP_MEAN, CLIP_STD, FlowerPolicy

    policy = FlowerPolicy(model="tiny")
    rng = np.random.default_rng(0)
    for size in (224, 128):
        upright = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        raw = torch.from_numpy(np.ascontiguousarray(upright[::-1, ::-1])).permute(2, 0, 1)[None]
        ref = Normalize(CLIP_MEAN, CLIP_STD)(Resize(112, antialias=True)(raw).float().div(255))
        assert torch.allclose(policy.pixels(upright)[0], ref, atol=1e-6)


def test_policy_predicts_chunks_with_paired_noise():
    T.test_policy_predicts_flowers_chunks_with_paired_noise_and_ivra()


def test_runner_gives_flowervla_steps_own_actions():
    T.test_runner_gives_flowervla_steps_own_actions()


@pytest.mark.libero
@pytest.mark.slow
@pytest.mark.skipif(T._libero_missing() is not None, reason=str(T._libero_missing()))
def test_libero_ab_episode(tmp_path):
    T.test_libero_ab_episode_with_tiny_weights(tmp_path)


def test_attach_through_the_policy_and_detach():
    from ivra.policies.flower import FlowerPolicy

    policy = FlowerPolicy(model="tiny", ivra=ivra.IVRAConfig.preset("flower").to_dict())
    policy.predict(T.frames(0), ["open the drawer"], [0])
    assert policy.ivra_counters()["tokens"] == 2 * T.N
    policy.set_ivra(None)
    assert T.hooks(policy.model) == 0
