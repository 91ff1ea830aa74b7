import numpy as np
import pytest

from ivra.tabletop import HELD_OUT_COMBOS, NOVEL_COLOR, NOVEL_SHAPE, SPLITS, TASKS, make_episode, vocabulary
from ivra.tabletop.tasks import DISTRACTORS, PLACEMENT_EDGE, RELATIONS, TRAIN_EDGE

N = 150


def episodes(split, n=N):
    for task in TASKS:
        for seed in range(n):
            yield make_episode(task, split, seed)


def targets(ep):
    return [ep.obj(u) for u in ep.required]


def test_task_names():
    assert list(TASKS) == ["pick_place", "color_match", "clutter", "relative_size", "spatial", "multi_object"]


@pytest.mark.parametrize("split", ["train", "val", "placement", "novel_task", "placement_extrapolation"])
def test_held_out_and_novel_never_appear(split):
    for ep in episodes(split, n=600 if split == "train" else N):
        for o in ep.objects:
            assert o.kind not in HELD_OUT_COMBOS, (ep.task, ep.seed, o)
            assert o.color != NOVEL_COLOR and o.shape != NOVEL_SHAPE
        assert all(c.color != NOVEL_COLOR for c in ep.containers)


def test_combination_targets_are_held_out():
    for ep in episodes("combination"):
        assert any(o.kind in HELD_OUT_COMBOS for o in targets(ep)), (ep.task, ep.seed)
        assert NOVEL_COLOR not in {o.color for o in ep.objects}


def test_novel_object_targets_are_novel():
    for ep in episodes("novel_object"):
        assert all(o.color == NOVEL_COLOR or o.shape == NOVEL_SHAPE for o in targets(ep)), (ep.task, ep.seed)


def test_placement_is_new_layouts_of_seen_objects_within_train_support():
    """VIMA's placement level: seen object kinds, targets where train puts targets, a new layout each time."""
    for ep in episodes("train"):
        assert all(not (o.x > TRAIN_EDGE and o.y > TRAIN_EDGE) for o in targets(ep))
    for ep in episodes("placement"):
        assert all(not (o.x > TRAIN_EDGE and o.y > TRAIN_EDGE) for o in targets(ep)), (ep.task, ep.seed)
        assert all(o.kind not in HELD_OUT_COMBOS for o in ep.objects)
    for task in TASKS:
        lo, hi = DISTRACTORS[task]["default"]
        assert DISTRACTORS[task]["placement"] == (lo + 1, hi + 1)
        n_train = [len(make_episode(task, "train", s).objects) for s in range(80)]
        n_place = [len(make_episode(task, "placement", s).objects) for s in range(80)]
        assert np.mean(n_place) > np.mean(n_train), task  # more crowded on average...
        assert np.mean([n <= max(n_train) for n in n_place]) > 0.3, (
            task
        )  # ...mostly with counts train has seen
    a = {(ep.task, round(ep.objects[0].x, 6)) for ep in episodes("placement", n=40)}
    b = {(ep.task, round(ep.objects[0].x, 6)) for ep in episodes("val", n=40)}
    assert not a & b  # its own seed stream


def test_placement_extrapolation_targets_lie_in_the_region_train_never_shows():
    for ep in episodes("placement_extrapolation"):
        assert all(o.x > PLACEMENT_EDGE and o.y > PLACEMENT_EDGE for o in targets(ep)), (ep.task, ep.seed)
    for task in TASKS:
        n_train = max(len(make_episode(task, "train", s).objects) for s in range(60))
        n_place = np.mean([len(make_episode(task, "placement_extrapolation", s).objects) for s in range(60)])
        assert n_place > n_train - 0.5, task
    assert all(DISTRACTORS[t]["placement_extrapolation"][0] > DISTRACTORS[t]["default"][1] for t in TASKS)


def test_scenes_are_valid():
    for split in SPLITS:
        for ep in episodes(split, n=40):
            assert ep.instruction == " ".join(ep.instruction.split())
            assert ep.required and ep.max_steps == len(ep.required) + 2
            for o in ep.objects:
                assert o.radius <= o.x <= 1 - o.radius and o.radius <= o.y <= 1 - o.radius
                assert not any(c.contains(o.x, o.y) for c in ep.containers)
            for i, a in enumerate(ep.objects):
                for b in ep.objects[i + 1 :]:
                    assert np.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius


def test_targets_are_unambiguous():
    for split in ("train", "combination", "novel_object"):
        for ep in episodes(split, n=60):
            (t, *_) = targets(ep)
            same = [o for o in ep.objects if o.kind == t.kind and o.uid != t.uid]
            if ep.task in ("pick_place", "clutter"):
                assert not same
                assert f"the {t.color} {t.shape}" in ep.instruction
            elif ep.task == "relative_size":
                (o,) = same
                assert (t.radius > o.radius) == ("larger" in ep.instruction)
            elif ep.task == "spatial":
                (o,) = same
                rel = next(r for r in RELATIONS if f" {r} " in ep.instruction)
                ref = next(r for r in ep.objects if f"{rel} the {r.color} {r.shape}" in ep.instruction)
                dx, dy = RELATIONS[rel]
                assert dx * (t.x - ref.x) + dy * (t.y - ref.y) > 0.1
                assert dx * (o.x - ref.x) + dy * (o.y - ref.y) < -0.1
            elif ep.task == "color_match":
                c = ep.container(ep.target)
                assert c.ctype in ep.instruction and t.color == c.color
                assert [o.uid for o in ep.objects if o.color == c.color] == [t.uid]
                other = next(x for x in ep.containers if x.uid != ep.target)
                assert any(o.color == other.color for o in ep.objects)
            elif ep.task == "multi_object":
                color = t.color
                assert {o.uid for o in ep.objects if o.color == color} == set(ep.required)
                assert f" {color} " in ep.instruction


def test_novel_task_uses_held_out_phrasing_with_known_words():
    train_words = {w for ep in episodes("train", n=40) for w in ep.instruction.split()}
    for ep in episodes("novel_task", n=20):
        assert ep.instruction.startswith("into the ")
        assert set(ep.instruction.split()) <= train_words
    assert not any(ep.instruction.startswith("into") for ep in episodes("train", n=40))


def test_vocabulary_covers_every_instruction():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert all(w.isalpha() and w == w.lower() for w in vocab)
    seen = set()
    for split in SPLITS:
        for ep in episodes(split, n=40):
            seen.update(ep.instruction.split())
    assert seen <= set(vocab)
    assert len(vocab) < 80


def test_bad_task_or_split():
    with pytest.raises(ValueError, match="'nope'.*multi_object"):
        make_episode("nope", "train", 0)
    with pytest.raises(ValueError, match="'nope'.*placement"):
        make_episode("pick_place", "nope", 0)
