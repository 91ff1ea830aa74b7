"""The tiny LLaRA-style policy: tokenizer, model build, a short real training run, shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ivra.minivla.model import MiniVLASpec, build_policy, predict, prompt_ids
from ivra.minivla.policy import WEIGHTS, load_model
from ivra.minivla.tokenizer import BINS, WordTokenizer

SMALL = MiniVLASpec.small()


def test_tokenizer_covers_every_instruction_word_and_round_trips_actions():
    from ivra.tabletop import vocabulary

    tok = WordTokenizer.for_tabletop()
    assert all(tok.stoi.get(w, tok.unk_id) != tok.unk_id for w in vocabulary())
    a = np.array([0.0, 0.31, 0.999, 0.5])
    decoded = tok.decode_action(tok.encode_action(a))
    assert np.all(np.abs(decoded - a) <= 0.5 / BINS + 1e-6)
    assert tok.decode_action(tok.encode("put the")) is None  # words, not numbers
    assert tok.decode_action(tok.encode_action(a)[:3]) is None  # too short
    assert tok.decode_action(tok.encode_action(a)[:4] + tok.encode_action(a)[:1] + [tok.eos_id]) is None


def test_tokenizer_save_load(tmp_path):
    tok = WordTokenizer.for_tabletop()
    tok.save(tmp_path / "t.json")
    back = WordTokenizer.load(tmp_path / "t.json")
    assert back.itos == tok.itos and back.encode("put the red star") == tok.encode("put the red star")


def test_policy_is_a_llava_with_one_image_token_per_patch():
    tok = WordTokenizer.for_tabletop()
    model = build_policy(SMALL, tok)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    ids = prompt_ids(tok, SMALL, "put the red star into the blue bowl")
    assert ids.count(tok.image_id) == SMALL.n_patches == 16


def test_short_training_run_writes_safetensors_that_load(tmp_path):
    from ivra.minivla.train import pretrain_vision, train_policy

    vision = pretrain_vision(tmp_path / "vision", steps=2, batch=4, n_pairs=8, spec=SMALL)
    run = train_policy(tmp_path / "policy", vision, episodes=4, steps=2, batch=4, spec=SMALL)
    assert (run / "model.safetensors").exists() and (run / "log.jsonl").read_text().count("loss") >= 2
    model, tok, spec = load_model(str(run))
    assert spec == SMALL
    # the frozen vision tower is exactly the pre-trained one (up to the fp16 storage)
    from safetensors.torch import load_file

    pre = load_file(str(vision))
    got = model.model.vision_tower.state_dict()
    assert all(torch.equal(got[k], v.half().float()) for k, v in pre.items())
    actions, ok = predict(
        model, tok, spec, np.zeros((2, 48, 48, 3), np.uint8), ["put the red star into the blue bowl"] * 2
    )
    assert actions.shape == (2, 4) and len(ok) == 2
    assert all(np.isnan(a).all() for a, good in zip(actions, ok) if not good)


@pytest.mark.skipif(not (WEIGHTS / "low.safetensors").exists(), reason="shipped weights not built yet")
@pytest.mark.parametrize("regime", ["low", "full"])
def test_shipped_policy_solves_some_validation_episodes(regime):
    """The shipped weights load and act sensibly: over 10x the ~0.4 % of a uniform random policy on val."""
    from ivra.minivla.policy import MiniVLAPolicy
    from ivra.tabletop.rollout import rollout

    policy = MiniVLAPolicy(regime)
    episodes = rollout(policy, "val", list(range(40)))
    rate = np.mean([e["success"] for e in episodes])
    assert rate >= 0.05, f"{regime}: {rate:.2f} success on 40 val episodes"
