"""The pre-training world (scenes of every colour and shape, referring questions) and the grounding stage."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from ivra.minivla.model import MiniVLASpec
from ivra.minivla.world import WORLD_KINDS, grounding_set, referring_questions, world_scene
from ivra.tabletop.scene import NOVEL_COLOR, NOVEL_SHAPE
from ivra.tabletop.tasks import HELD_OUT_COMBOS, make_episode

SMALL = MiniVLASpec.small()


def test_world_scenes_show_every_colour_and_shape_but_never_a_held_out_pair():
    kinds, places = set(), []
    for s in range(400):
        objects, containers = world_scene(s)
        assert 2 <= len(objects) and 1 <= len(containers) <= 2
        kinds.update(o.kind for o in objects)
        places += [(o.x, o.y) for o in objects]
        assert all(0.0 < o.x < 1.0 and 0.0 < o.y < 1.0 for o in objects)
    assert not kinds & HELD_OUT_COMBOS
    assert {k for k in kinds if NOVEL_COLOR in k or NOVEL_SHAPE in k}  # what the robot data never shows
    assert len(kinds) > 0.9 * len(WORLD_KINDS)
    # anywhere on the table, the bottom-right region that train targets avoid included
    assert any(x > 0.6 and y > 0.6 for x, y in places)
    a, b = world_scene(7), world_scene(7)
    assert [o.kind for o in a[0]] == [o.kind for o in b[0]]  # a pure function of the seed


def test_world_scenes_are_not_the_scenes_of_any_split():
    ours = world_scene(3)[0]
    for split in ("train", "val", "novel_object"):
        theirs = make_episode(None, split, 3).objects
        assert [(o.x, o.y) for o in ours] != [(o.x, o.y) for o in theirs]


def _matches(obj, words: list[str]) -> bool:
    size = {"small": obj.radius < 0.075, "large": obj.radius >= 0.075}
    return all(w == obj.color or w == obj.shape or (w in size and size[w]) or w == "object" for w in words)


def test_every_referring_question_names_exactly_one_thing_and_answers_its_centre():
    n = 0
    for s in range(200):
        objects, containers = world_scene(s)
        for question, (x, y) in referring_questions(objects, containers):
            words = question.split()
            assert words[:2] == ["locate", "the"]
            words = words[2:]
            if words[-1] in ("bowl", "frame"):
                hits = [
                    c for c in containers if c.ctype == words[-1] and all(w == c.color for w in words[:-1])
                ]
            else:
                hits = [o for o in objects if _matches(o, words)]
            assert len(hits) == 1, (s, question)
            assert (hits[0].x, hits[0].y) == (x, y)
            n += 1
    assert n > 1000


def test_grounding_set_pairs_each_question_with_its_own_scene_image():
    from ivra.tabletop.render import render_scene

    images, questions = grounding_set(5, 100, 48)
    assert len(images) == 5 and {i for i, *_ in questions} == set(range(5))
    i, q, xy = questions[-1]
    objects, containers = world_scene(100 + i)
    assert np.array_equal(images[i], render_scene(objects, containers, 48))
    assert (q, xy) in referring_questions(objects, containers)


def test_training_set_labels_only_the_answer_and_indexes_the_right_image():
    from ivra.minivla.tokenizer import WordTokenizer
    from ivra.minivla.train import training_set
    from ivra.tabletop.dataset import expert_demos

    tok = WordTokenizer.for_tabletop(world=True)
    demos = expert_demos(3, resolution=48)
    ids, mask, labels, index, images = training_set(tok, SMALL, demos, 2, 500, 48)
    _, questions = grounding_set(2, 500, 48)
    assert len(ids) == len(demos) + len(questions) == len(index)
    assert len(images) == len(demos) + 2
    k = len(demos) + 4  # a question of the world part
    scene, question, (x, y) = questions[4]
    assert np.array_equal(images[index[k]], grounding_set(2, 500, 48)[0][scene])
    answer = labels[k][labels[k] != -100].tolist()
    assert answer == tok.encode_action([x, y])  # two bins and <eos>
    assert "<bos> " + question + " <sep>" in tok.decode(ids[k][mask[k].bool()].tolist())
    demo_answer = labels[0][labels[0] != -100].tolist()
    assert demo_answer == tok.encode_action(demos[0]["action"]) and torch.equal(
        index[: len(demos)], torch.arange(len(demos))
    )


def test_grounding_stage_then_a_co_trained_policy_continues_from_it(tmp_path):
    from safetensors.torch import load_file

    from ivra.minivla.train import pretrain_vision, train_grounding, train_policy

    vision = pretrain_vision(tmp_path / "v", steps=1, batch=4, n_pairs=4, spec=SMALL, scenes="world")
    info = json.loads((tmp_path / "v" / "run.json").read_text())
    assert info["scenes"] == "world" and set(info["world_novel_accuracy"]) == {"pink_color", "heart_shape"}
    ground = train_grounding(tmp_path / "g", vision, scenes=4, steps=2, batch=4, spec=SMALL)
    g_info = json.loads((ground / "run.json").read_text())
    assert g_info["stage"] == "train_grounding" and g_info["questions"] > 4
    assert json.loads((ground / "spec.json").read_text())["prompt"] == "instruction_first"
    again = train_grounding(
        tmp_path / "g2", vision, scenes=4, steps=1, batch=4, spec=SMALL, init=ground, seed=1
    )
    assert json.loads((again / "run.json").read_text())["init"] == str(ground)
    a, b = load_file(str(ground / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a if "language_model" in k)
    run = train_policy(
        tmp_path / "p", vision, episodes=4, steps=1, batch=4, spec=SMALL, init=ground, ground_scenes=2
    )
    p_info = json.loads((run / "run.json").read_text())
    assert p_info["init"] == str(ground) and p_info["ground_questions"] > 2
    assert json.loads((run / "spec.json").read_text())["prompt"] == "instruction_first"  # kept from init
    g, p = load_file(str(ground / "model.safetensors")), load_file(str(run / "model.safetensors"))
    lm = [k for k in g if "language_model" in k]
    assert any(not torch.equal(g[k], p[k]) for k in lm)  # it trained on from the grounding weights
    # one step at a warm-up learning rate moves weights only a little from where they started
    k = next(k for k in lm if "q_proj" in k)
    assert (g[k].float() - p[k].float()).abs().max() < 0.05 < g[k].float().abs().max()


@pytest.mark.parametrize(
    "stage, args, expected",
    [
        ("ground", ["--vision", "nowhere.safetensors"], "--vision nowhere.safetensors: no such file"),
        ("ground", ["--scenes", "0"], "expected an integer > 0, got '0'"),
        ("vision", ["--scenes", "web"], "invalid choice: 'web'"),
        ("vision", ["--objective", "clip", "--scenes", "world"], "apply to --objective dense"),
        ("policy", ["--ground-scenes", "-1"], "-1"),
        (
            "policy",
            ["--vision", "VISION", "--stream", "--ground-scenes", "3"],
            "--stream with --ground-scenes 3",
        ),
        ("ground", ["--vision", "VISION", "--init", "nowhere"], "--init nowhere: no model.safetensors there"),
        (
            "policy",
            ["--vision", "VISION", "--init", "OLD_RUN", "--ground-scenes", "5"],
            "never read referring questions",
        ),
    ],
)
def test_grounding_options_are_refused_in_one_line(stage, args, expected, capsys, tmp_path):
    from ivra.cli import main
    from ivra.minivla.tokenizer import WordTokenizer

    (tmp_path / "v.safetensors").write_bytes(b"")
    old = tmp_path / "old"  # a policy run trained without the world: no question words
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"")
    WordTokenizer.for_tabletop().save(old / "tokenizer.json")
    files = {"VISION": tmp_path / "v.safetensors", "OLD_RUN": old}
    args = [str(files.get(a, a)) for a in args]

    try:
        code = main(["train", stage, *args])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(re.escape(expected), err[-1]), err


def test_ship_and_card_describe_the_world_vision_cycle_grounding_and_co_training(tmp_path, monkeypatch):
    from ivra.minivla import card
    from ivra.minivla.ship import ship
    from ivra.minivla.train import pretrain_vision, train_grounding, train_policy

    runs = tmp_path / "runs"
    first = pretrain_vision(runs / "vision", steps=1, batch=4, n_pairs=4, spec=SMALL)
    world = pretrain_vision(
        runs / "vision-2", steps=1, batch=4, n_pairs=4, spec=SMALL, init=first, scenes="world"
    )
    ground = train_grounding(runs / "ground", world, scenes=3, steps=1, batch=4, spec=SMALL)
    train_policy(
        runs / "policy-low", world, episodes=4, steps=1, batch=4, spec=SMALL, init=ground, ground_scenes=2
    )
    dest = tmp_path / "weights"
    ship(runs, dest)
    assert json.loads((dest / "run-low-cycle1.json").read_text())["stage"] == "train_grounding"
    assert json.loads((dest / "run-vision.json").read_text())["scenes"] == "world"
    monkeypatch.setattr(card, "WEIGHTS", dest)
    row = {"n": 1, "success": 0.5, "malformed": 0.0, "families": {"spatial": 0.5}}
    locate = {"low": {k: {"n": 2, "within2": 0.5} for k in ("all", "novel", "seen")}}
    card.write_card({"low": {"val": row}}, 1, locate)
    text = (dest / "MODEL_CARD.md").read_text()
    assert "world scenes of every colour and shape" in text and "pink read on" in text
    assert "Vision-language pre-training (for `low`)" in text and "co-trained with" in text
    assert "name pink or a heart" in text


def test_runs_without_the_world_keep_the_shipped_vocabulary():
    """The question words join the vocabulary only for runs that read questions, so the shipped recipe still
    reproduces the shipped tokenizer (and, through the embedding size, its weights)."""
    from ivra.minivla.policy import WEIGHTS
    from ivra.minivla.tokenizer import WordTokenizer

    plain, world = WordTokenizer.for_tabletop(), WordTokenizer.for_tabletop(world=True)
    assert "locate" not in plain.stoi and "locate" in world.stoi
    if (WEIGHTS / "tokenizer.json").exists():
        assert WordTokenizer.load(WEIGHTS / "tokenizer.json").itos == plain.itos
