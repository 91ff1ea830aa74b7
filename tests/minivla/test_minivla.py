"""The tiny LLaRA-style policy: tokenizer, model build, a short real training run, shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ivra.minivla.model import MiniVLASpec, build_policy, predict, prompt_ids
from ivra.minivla.policy import WEIGHTS, load_model, shipped
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


def test_instruction_first_prompt_puts_the_visual_tokens_after_the_words_and_ivra_finds_them():
    import dataclasses

    import ivra

    tok = WordTokenizer.for_tabletop()
    spec = dataclasses.replace(SMALL, prompt="instruction_first")
    words = tok.encode("put the red star into the blue bowl")
    ids = prompt_ids(tok, spec, "put the red star into the blue bowl")
    assert ids == [tok.bos_id] + words + [tok.image_id] * spec.n_patches + [tok.sep_id]
    with pytest.raises(ValueError, match="'sideways'"):
        dataclasses.replace(SMALL, prompt="sideways")
    # IVRA edits the visual tokens wherever they sit: after the edited layer, the words before them are unchanged
    torch.manual_seed(0)
    model = build_policy(spec, tok).eval()
    images = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    from ivra.minivla.model import prompt_batch

    batch = prompt_batch(tok, spec, images, ["put the red star into the blue bowl"] * 2)
    seen = {}
    layer = model.model.language_model.layers[1]
    hook = layer.register_forward_hook(
        lambda m, a, out: seen.setdefault(len(seen), (out[0] if isinstance(out, tuple) else out).clone())
    )
    try:
        with torch.no_grad():
            model(**batch)
            with ivra.attach(model, ivra.IVRAConfig(layer=1, lam=0.5)):
                model(**batch)
    finally:
        hook.remove()
    base, edited = seen[0], seen[1]
    visual = batch["input_ids"] == tok.image_id
    before = torch.cumsum(visual.long(), dim=1) == 0  # padding, BOS and the words
    assert not torch.allclose(base[visual], edited[visual])
    assert torch.equal(base[before], edited[before])


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
    images, text = np.zeros((2, 48, 48, 3), np.uint8), ["put the red star into the blue bowl"] * 2
    free, ok = predict(model, tok, spec, images, text, grammar=False)
    assert free.shape == (2, 4) and len(ok) == 2
    assert all(np.isnan(a).all() for a, good in zip(free, ok) if not good)
    actions, ok_again = predict(model, tok, spec, images, text)  # under the action grammar: always an action
    assert ok_again == ok and np.isfinite(actions).all()
    np.testing.assert_array_equal(actions[ok], free[ok])


def test_vision_stage_continues_from_a_tower_and_weights_a_head(tmp_path):
    from safetensors.torch import load_file

    from ivra.minivla.dense import HEADS, DenseHeads
    from ivra.minivla.train import pretrain_vision

    first = pretrain_vision(tmp_path / "a", steps=1, batch=4, n_pairs=4, spec=SMALL)
    again = pretrain_vision(
        tmp_path / "b", steps=1, batch=4, n_pairs=4, spec=SMALL, init=first, head_weights={"obj_shape": 3.0}
    )
    a, b = load_file(str(first)), load_file(str(again))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # it trained on from `first`
    # the loss is the weighted mean of the heads' cross-entropies
    heads = DenseHeads(8, {"obj_shape": 3.0})
    feats, labels = torch.randn(2, 4, 8), torch.randint(0, 3, (2, len(HEADS), 4))
    total, logits = heads(feats, labels)
    ce = [
        torch.nn.functional.cross_entropy(lg.flatten(0, 1), labels[:, i].flatten(), ignore_index=-100)
        for i, lg in enumerate(logits.values())
    ]
    w = torch.tensor([3.0 if k == "obj_shape" else 1.0 for k in HEADS])
    assert torch.allclose(total, (torch.stack(ce) * w).sum() / w.sum())
    with pytest.raises(ValueError, match="obj_shap"):
        DenseHeads(8, {"obj_shap": 2.0})


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--head-weight", "shape=3"], "'shape=3': expected HEAD=W"),
        (["--head-weight", "obj_shape=-1"], "expected a number > 0, got '-1'"),
        (["--init", "nowhere.safetensors"], "--init nowhere.safetensors: no such file"),
        (["--init", "NOT_SAFETENSORS"], "not a safetensors file"),
        (["--init", "OTHER_WEIGHTS"], "not a vision tower of this spec"),
        (["--objective", "clip", "--head-weight", "obj_shape=2"], "apply to --objective dense"),
    ],
)
def test_vision_stage_refuses_bad_options_in_one_line(args, expected, capsys, tmp_path):
    from safetensors.torch import save_file

    from ivra.cli import main

    (tmp_path / "text.safetensors").write_text("not weights")
    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    files = {
        "NOT_SAFETENSORS": tmp_path / "text.safetensors",
        "OTHER_WEIGHTS": tmp_path / "other.safetensors",
    }
    args = [str(files.get(a, a)) for a in args]

    try:
        code = main(["train", "vision", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_dense_labels_name_the_object_and_its_absolute_bin():
    from ivra.minivla.dense import HEADS, patch_labels
    from ivra.tabletop.scene import COLORS, SHAPES, Container, Obj

    objs = [Obj(0, "red", "star", 0.06, 0.31, 0.69)]
    conts = [Container(100, "blue", "bowl", 0.15, 0.75, 0.25)]
    lab = patch_labels(objs, conts, grid=6)
    assert lab.shape == (len(HEADS), 36)
    p = int(0.69 * 6) * 6 + int(0.31 * 6)  # the patch holding the object's centre
    assert lab[0, p] == list(COLORS).index("red") + 1 and lab[1, p] == list(SHAPES).index("star") + 1
    assert lab[3, p] == int(0.31 * BINS) and lab[4, p] == int(0.69 * BINS)
    assert lab[0, 0] == 0 and lab[3, 0] == -100  # an empty corner
    q = int(0.25 * 6) * 6 + int(0.75 * 6)
    assert lab[5, q] == list(COLORS).index("blue") + 1 and lab[7, q] == int(0.75 * BINS)


def test_cached_feature_loss_is_llavas_own_forward():
    from ivra.minivla.model import pixels
    from ivra.minivla.train import FeatureCache, demo_tensors, policy_loss
    from ivra.tabletop.dataset import expert_demos

    tok = WordTokenizer.for_tabletop()
    model = build_policy(SMALL, tok).eval()
    ids, mask, labels, images = demo_tensors(tok, SMALL, expert_demos(3, resolution=48))
    cache = FeatureCache(model, images)
    idx = torch.arange(len(ids))
    ours = policy_loss(model, ids, mask, labels, cache[idx])
    ref = model(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels(images)).loss
    assert torch.allclose(ours, ref, atol=1e-5) and bool(cache.done.all())


def test_streamed_batches_are_the_in_memory_set_s_steps_of_those_episodes_in_any_order():
    from ivra.minivla.train import EpisodeStream, demo_tensors, policy_loss, tower_features
    from ivra.tabletop.dataset import expert_demos

    tok = WordTokenizer.for_tabletop()
    model = build_policy(SMALL, tok).eval()
    stream = EpisodeStream(tok, SMALL, 10)
    demos = expert_demos(10, resolution=48)
    for seeds in ([7, 2, 9], [2, 7, 9], [4]):
        ids, mask, labels, images = stream(torch.tensor(seeds))
        ref = [d for s in seeds for d in demos if d["episode"] == s]
        r_ids, r_mask, r_labels, r_images = demo_tensors(tok, SMALL, ref)
        assert torch.equal(ids, r_ids) and torch.equal(labels, r_labels) and np.array_equal(images, r_images)
    # features computed per batch are the tower's own: the loss is LLaVA's forward on pixels
    ours = policy_loss(model, ids, mask, labels, tower_features(model, images))
    from ivra.minivla.model import pixels

    ref = model(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels(images)).loss
    assert torch.allclose(ours, ref, atol=1e-5)


def test_streamed_training_run_records_it_and_the_card_says_so(tmp_path):
    from ivra.minivla.card import lm_stage_line
    from ivra.minivla.train import pretrain_vision, train_policy

    vision = pretrain_vision(tmp_path / "vision", steps=1, batch=4, n_pairs=4, spec=SMALL)
    run = train_policy(tmp_path / "p", vision, episodes=6, steps=2, batch=3, spec=SMALL, stream=True)
    info = json.loads((run / "run.json").read_text())
    assert info["streamed"] is True and info["demo_steps"] is None and info["episodes"] == 6
    assert (run / "log.jsonl").read_text().count("loss") == 2
    text = lm_stage_line("full", info, 2)
    assert "streamed" in text and "1.00 passes" in text
    with pytest.raises(ValueError, match="ground_scenes"):
        train_policy(
            tmp_path / "q", vision, episodes=6, steps=1, batch=3, spec=SMALL, stream=True, ground_scenes=2
        )


def test_card_names_the_shipped_regime_a_streamed_full_run_continues_from(tmp_path, monkeypatch):
    from ivra.minivla import card
    from ivra.minivla.ship import ship
    from ivra.minivla.train import pretrain_vision, train_policy

    runs = tmp_path / "runs"
    vision = pretrain_vision(runs / "vision", steps=1, batch=4, n_pairs=4, spec=SMALL)
    train_policy(runs / "policy-low-1", vision, episodes=4, steps=1, batch=4, spec=SMALL)
    train_policy(
        runs / "policy-low", vision, episodes=4, steps=1, batch=4, spec=SMALL, init=runs / "policy-low-1"
    )
    train_policy(
        runs / "policy-full",
        vision,
        episodes=8,
        steps=2,
        batch=2,
        spec=SMALL,
        init=runs / "policy-low",
        stream=True,
    )
    dest = tmp_path / "weights"
    ship(runs, dest)
    monkeypatch.setattr(card, "WEIGHTS", dest)
    row = {"n": 1, "success": 0.5, "malformed": 0.0, "families": {"spatial": 0.5}}
    card.write_card({"low": {"val": row}, "full": {"val": row}}, 1)
    text = (dest / "MODEL_CARD.md").read_text()
    stages = [line for line in text.splitlines() if "projector + Llama" in line]
    # low's two cycles once each, then full's own stage naming low; nothing of low repeated under full
    assert [line[:10] for line in stages] == ["2. `low`: ", "2. `low`: ", "3. `full`:"]
    assert "continued from `low` as shipped (above)" in stages[2] and "0.50 passes" in stages[2]


def test_fit_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    from ivra.minivla.train import fit

    def run(out, stop=None):
        torch.manual_seed(0)
        lin = torch.nn.Linear(3, 1)
        x, y = torch.randn(40, 3), torch.randn(40, 1)

        def loss_fn(idx):
            return torch.nn.functional.mse_loss(lin(x[idx]), y[idx])

        fit(
            lin,
            loss_fn,
            40,
            out,
            "t",
            steps=8,
            batch=4,
            lr=0.1,
            weight_decay=0.0,
            seed=0,
            log_every=1,
            ckpt_every=3,
            stop=stop,
        )
        return lin.weight.detach().clone()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = run(tmp_path / "a")
    stopped = run(
        tmp_path / "b", stop=4
    )  # leaves the step-3 checkpoint behind? no: a finished run removes it
    assert not (tmp_path / "b" / "ckpt.pt").exists() and not torch.equal(stopped, whole)
    # an interrupted run (after its step-3 checkpoint) resumes to the weights of the uninterrupted one
    import shutil

    shutil.rmtree(tmp_path / "b")
    (tmp_path / "b").mkdir()

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    x, y = torch.randn(40, 3), torch.randn(40, 1)

    def crashing(idx):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return torch.nn.functional.mse_loss(lin(x[idx]), y[idx])

    with pytest.raises(Interrupt):
        fit(
            lin,
            crashing,
            40,
            tmp_path / "b",
            "t",
            steps=8,
            batch=4,
            lr=0.1,
            weight_decay=0.0,
            seed=0,
            log_every=1,
            ckpt_every=3,
        )
    assert (tmp_path / "b" / "ckpt.pt").exists()
    assert torch.equal(run(tmp_path / "b"), whole)
    # steps 0-3 were logged before the crash, step 3 after its step-2 checkpoint: the log has each step once
    steps = [json.loads(r)["step"] for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(8))


@pytest.mark.skipif(not (WEIGHTS / "low.safetensors").exists(), reason="shipped weights not built yet")
@pytest.mark.parametrize("regime", shipped())
def test_shipped_policy_solves_some_validation_episodes(regime):
    """The shipped weights load and act sensibly: over 10x the ~0.4 % of a uniform random policy on val."""
    from ivra.minivla.policy import MiniVLAPolicy
    from ivra.tabletop.rollout import rollout

    policy = MiniVLAPolicy(regime)
    episodes = rollout(policy, "val", list(range(40)))
    rate = np.mean([e["success"] for e in episodes])
    assert rate >= 0.05, f"{regime}: {rate:.2f} success on 40 val episodes"


@pytest.fixture(scope="module")
def low_policy():
    from ivra.minivla.policy import MiniVLAPolicy

    return MiniVLAPolicy("low")


def _mixed_inputs():
    """12 validation observations, 4 uniform-noise images and 4 all-black ones, each with a validation
    instruction (free decoding of the shipped policy is malformed for some of the last eight)."""
    from ivra.tabletop.env import TabletopEnv

    env, obs = TabletopEnv(resolution=96, split="val"), []
    for seed in range(12):
        o, _ = env.reset(seed=seed)
        obs.append({"image": o["image"], "instruction": o["instruction"]})
    rng = np.random.default_rng(0)
    for k in range(8):
        img = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) if k < 4 else np.zeros((96, 96, 3), np.uint8)
        obs.append({"image": img, "instruction": obs[k]["instruction"]})
    return obs


@pytest.mark.skipif(not (WEIGHTS / "low.safetensors").exists(), reason="shipped weights not built yet")
@pytest.mark.parametrize("arm", [None, {"layer": 0, "lam": 0.1}])
def test_grammar_decoding_answers_every_row_and_changes_no_well_formed_one(low_policy, arm):
    """Free greedy decoding leaves NaN rows where the tokens do not decode; decoding under the action grammar
    answers every row with an action, the same action wherever free decoding was well-formed, and counts the rows
    it had to constrain (in both arms)."""
    obs = _mixed_inputs()
    ins = [o["instruction"] for o in obs]
    counts, actions = {}, {}
    for decode in ("free", "grammar"):
        low_policy.decode, low_policy.malformed = decode, 0
        actions[decode] = low_policy.act(obs, ins, ivra=[arm] * len(obs))
        counts[decode] = low_policy.malformed
    low_policy.decode = "grammar"
    a_free, a_gram = actions["free"], actions["grammar"]
    bad = ~np.isfinite(a_free).all(axis=1)
    assert bad[12:].sum() >= 2, (
        "free decoding is malformed for some noise/black images (else this checks nothing)"
    )
    assert not bad[:12].any(), "the validation observations decode"
    assert np.isfinite(a_gram).all()
    np.testing.assert_array_equal(a_gram[~bad], a_free[~bad])
    assert counts["free"] == counts["grammar"] == int(bad.sum())
    assert ((a_gram[bad] > 0) & (a_gram[bad] < 1)).all()  # bin centres, as any decoded action


def test_decode_must_be_grammar_or_free():
    from ivra.minivla.policy import MiniVLAPolicy

    with pytest.raises(ValueError, match="decode must be 'grammar' or 'free', got 'beam'"):
        MiniVLAPolicy("low", decode="beam")


def test_a_regime_that_is_not_shipped_is_named_as_such(tmp_path):
    # a weights folder with the tower and the low-data regime only
    (tmp_path / "vision.safetensors").write_bytes(b"")
    (tmp_path / "low.safetensors").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match="policy 'full' is not shipped in this version \\(shipped: low\\)"
    ):
        load_model("full", tmp_path)


def test_ship_copies_the_vision_runs_the_policy_was_trained_on(tmp_path):
    import json

    from ivra.minivla.ship import ship
    from ivra.minivla.train import pretrain_vision, train_policy

    runs = tmp_path / "runs"
    first = pretrain_vision(runs / "vision-a", steps=1, batch=4, n_pairs=4, spec=SMALL)
    second = pretrain_vision(runs / "vision-b", steps=1, batch=4, n_pairs=4, spec=SMALL, init=first)
    train_policy(runs / "policy-low", second, episodes=4, steps=1, batch=4, spec=SMALL)
    dest = tmp_path / "weights"
    ship(runs, dest)
    assert json.loads((dest / "run-vision.json").read_text())["init"] == str(first)
    assert json.loads((dest / "run-vision-cycle1.json").read_text()).get("init") is None
    assert (dest / "train-log-vision-cycle1.jsonl").exists() and (dest / "low.safetensors").exists()
    from safetensors.torch import load_file

    shipped, trained = load_file(str(dest / "vision.safetensors")), load_file(str(second))
    assert all(torch.equal(shipped[f"model.vision_tower.{k}"], v.half()) for k, v in trained.items())
