"""The pre-training world: tabletop scenes of every colour and shape, and referring questions about them.

A real VLA starts from a vision-language model pre-trained on web data (CLIP/SigLIP towers, then LLaVA- or
Prismatic-style instruction data with captions and referring expressions), which has seen far more objects than the
robot demonstrations ever show. These scenes play that role for the tiny policy, apart from every robot task:

* any colour (``pink`` included) and any shape (``heart`` included), anywhere on the table (the bottom-right region
  too), one or two containers, 2 to 8 objects, sometimes an object already inside a container;
* never the colour-shape pairs of :data:`~ivra.tabletop.tasks.HELD_OUT_COMBOS` (so the ``combination`` split still
  measures composition) and never a task instruction: the language side is referring questions only
  ("locate the pink heart" -> its centre bins), no pick-and-place.

So the robot demonstrations (train split) still never show pink or hearts, and ``novel_object`` measures what it
does in real VLAs: objects absent from the robot data but known to the pre-trained model.

Scenes come from their own seed stream, ``np.random.default_rng([WORLD_STREAM, seed])``, which no split uses.
"""

from __future__ import annotations

import numpy as np

from ivra.tabletop.scene import (
    COLORS,
    CONTAINER_RADIUS,
    CONTAINER_TYPES,
    SHAPES,
    SIZES,
    Container,
    Layout,
    Obj,
)
from ivra.tabletop.tasks import HELD_OUT_COMBOS

WORLD_STREAM = 1_000
WORLD_KINDS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT_COMBOS
)
#: words of the referring questions beyond the scene vocabulary
QUESTION_WORDS = ("locate", "the", "object", "large", "small")


def world_scene(seed: int) -> tuple[list[Obj], list[Container]]:
    """The pre-training scene of ``seed``: objects and containers."""
    rng = np.random.default_rng([WORLD_STREAM, int(seed)])
    while True:
        layout = Layout(rng, gap=0.02)
        containers = []
        for i in range(1 + int(rng.integers(2))):
            ctype = CONTAINER_TYPES[int(rng.integers(len(CONTAINER_TYPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            c = layout.add_container(color, ctype, CONTAINER_RADIUS[ctype], uid=100 + i)
            if c is not None:
                containers.append(c)
        if not containers:
            continue
        objects: list[Obj] = []
        for c in containers:  # now and then an object already put away
            if rng.random() < 0.3:
                kind = WORLD_KINDS[int(rng.integers(len(WORLD_KINDS)))]
                jx, jy = rng.uniform(-0.03, 0.03, size=2)
                objects.append(Obj(len(objects), kind[0], kind[1], SIZES["small"], c.x + jx, c.y + jy))
        for _ in range(2 + int(rng.integers(7))):
            kind = WORLD_KINDS[int(rng.integers(len(WORLD_KINDS)))]
            r = SIZES["small" if rng.random() < 0.5 else "large"]
            pos = layout.add_disc(r)
            if pos is not None:
                objects.append(Obj(len(objects), kind[0], kind[1], r, pos[0], pos[1]))
        if len(objects) >= 2:
            return objects, containers


def _size_word(o: Obj) -> str:
    return "small" if o.radius < 0.075 else "large"


def referring_questions(
    objects: list[Obj], containers: list[Container]
) -> list[tuple[str, tuple[float, float]]]:
    """Every unambiguous referring question about a scene, with the centre it refers to.

    Objects by colour and shape, by colour alone ("the pink object") or by shape alone ("the heart") when that names
    exactly one object, with the size word when only the size tells two of a kind apart; containers by colour and
    type, or by type alone when there is one of that type."""
    out = []

    def one(items, key, text):
        groups: dict = {}
        for it in items:
            groups.setdefault(key(it), []).append(it)
        for members in groups.values():
            if len(members) == 1:
                out.append((text(members[0]), (members[0].x, members[0].y)))
            elif key is _kind and len(members) == 2 and _size_word(members[0]) != _size_word(members[1]):
                for m in members:
                    out.append((f"locate the {_size_word(m)} {m.color} {m.shape}", (m.x, m.y)))

    one(objects, _kind, lambda o: f"locate the {o.color} {o.shape}")
    one(objects, lambda o: o.color, lambda o: f"locate the {o.color} object")
    one(objects, lambda o: o.shape, lambda o: f"locate the {o.shape}")
    one(containers, lambda c: (c.color, c.ctype), lambda c: f"locate the {c.color} {c.ctype}")
    one(containers, lambda c: c.ctype, lambda c: f"locate the {c.ctype}")
    return out


def _kind(o: Obj) -> tuple[str, str]:
    return o.kind


def grounding_set(
    n_scenes: int, seed: int, resolution: int
) -> tuple[np.ndarray, list[tuple[int, str, tuple]]]:
    """Rendered world scenes ``seed .. seed + n_scenes - 1`` and every referring question about them, as
    ``(scene index, question, (x, y))``."""
    from ivra.tabletop.render import render_scene

    images = np.zeros((n_scenes, resolution, resolution, 3), np.uint8)
    questions = []
    for i in range(n_scenes):
        objects, containers = world_scene(seed + i)
        images[i] = render_scene(objects, containers, resolution)
        questions += [(i, q, xy) for q, xy in referring_questions(objects, containers)]
    return images, questions


def labelled_world_frames(
    n_scenes: int, seed: int, resolution: int, grid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images and dense patch labels (:func:`ivra.minivla.dense.patch_labels`) of world scenes."""
    from ivra.minivla.dense import patch_labels
    from ivra.tabletop.render import render_scene

    images, labels = [], []
    for s in range(seed, seed + n_scenes):
        objects, containers = world_scene(s)
        images.append(render_scene(objects, containers, resolution))
        labels.append(patch_labels(objects, containers, grid))
    return np.stack(images), np.stack(labels)
