"""Task families, instruction templates and generalisation splits of the tabletop benchmark.

Every episode is a pure function of ``(task, split, seed)``: its scene RNG is
``np.random.default_rng([split_index, task_index, seed])`` (and, when no task is given, the task is drawn from
``np.random.default_rng([split_index, seed])``), so the same seed in two splits never yields the same scene,
and ``task=None`` with seed k gives exactly the scene of the task it samples with seed k.

Task families (keys of :data:`TASKS`):

* ``pick_place`` - "put the red cross into the blue bowl": target named by colour and shape, among distractors
  that often share its colour or its shape; one or two containers.
* ``color_match`` - "put the object with the same colour as the bowl into it": one bowl and one frame of
  different colours; exactly one object has the referenced container's colour, one decoy has the other's.
* ``clutter`` - like ``pick_place`` but the target is smaller and surrounded by many close distractors that
  share its colour or shape (cluttered localisation).
* ``relative_size`` - "put the larger green ring into the red frame": two objects of the same colour and
  shape, one small and one large.
* ``spatial`` - "put the blue star that is left of the yellow square into the green bowl": two identical
  candidates on opposite sides of a reference object along the named axis.
* ``multi_object`` - "put all red objects into the green frame": two or three targets (several steps).

Splits (what changes, besides the seed stream):

* ``train`` - training distribution. Target objects are never centred in the bottom-right region
  (x > 0.45 and y > 0.45); colours and shapes exclude ``pink`` and ``heart``; the colour-shape pairs of
  :data:`HELD_OUT_COMBOS` never appear at all (neither as target nor as distractor).
* ``val`` - the train distribution with a different seed stream.
* ``placement`` - new placements and layouts of seen objects (VIMA's placement level): train-distribution
  object kinds, target positions within train's support, a seed stream of its own, and one more distractor
  at the top of each family's range than train ever uses (see :data:`DISTRACTORS`), so every layout is new
  while success stays attainable from the training data.
* ``placement_extrapolation`` - every target object is centred in the bottom-right region that train never
  shows for targets (x > 0.55 and y > 0.55), among more distractors than train ever uses: spatial
  extrapolation, which an image-to-coordinate policy trained on train alone is not expected to solve.
* ``combination`` - the target (for ``multi_object``: one of the targets) is a held-out colour-shape pair;
  its colour and its shape are both seen in train, but never together.
* ``novel_object`` - the target has the unseen shape ``heart`` and/or the unseen colour ``pink``
  (colour-defined families, ``color_match`` and ``multi_object``, use the colour ``pink``). No other split
  ever shows them, so robot demonstrations never do; a policy can still know them from pre-training, as a real
  VLA knows objects from its vision-language model's web data (the shipped policy's world scenes:
  :mod:`ivra.minivla.world`).
* ``novel_task`` - held-out *phrasing*: train-distribution scenes, but the instruction puts the destination
  first ("into the blue bowl put the red cross"), a sentence structure no train instruction uses (all its
  words are train words). We hold out a phrasing rather than a family so that every family stays measurable
  and success remains attainable in principle from the training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .scene import (
    CLUTTER_RADIUS,
    COLORS,
    CONTAINER_RADIUS,
    CONTAINER_TYPES,
    NOVEL_COLOR,
    NOVEL_SHAPE,
    SHAPES,
    SIZES,
    TRAIN_COLORS,
    TRAIN_SHAPES,
    Container,
    Layout,
    Obj,
)

#: Order fixes each split's seed stream (index); new splits go at the end so existing streams never move.
SPLITS: tuple[str, ...] = (
    "train",
    "val",
    "placement",
    "combination",
    "novel_object",
    "novel_task",
    "placement_extrapolation",
)
SPLIT_INDEX: dict[str, int] = {s: i for i, s in enumerate(SPLITS)}
TUNING_SPLITS = ("train", "val")
#: every split a setting is *reported* on: all but the ones used for training and tuning
#: scored only on request (--splits): targets in a region training never shows, 0 % by construction
EXTRA_SPLITS = ("placement_extrapolation",)
#: the demo's default: VIMA-style generalisation splits
TEST_SPLITS = tuple(s for s in SPLITS if s not in TUNING_SPLITS + EXTRA_SPLITS)

#: Colour-shape pairs that never appear outside ``combination`` (whose targets they are).
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "circle"),
        ("yellow", "cross"),
        ("green", "triangle"),
        ("cyan", "square"),
        ("blue", "hexagon"),
        ("purple", "diamond"),
    }
)
TRAIN_KINDS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in TRAIN_COLORS for s in TRAIN_SHAPES if (c, s) not in HELD_OUT_COMBOS
)

#: Bottom-right region: train targets are centred outside ``x > TRAIN_EDGE and y > TRAIN_EDGE``,
#: placement_extrapolation targets inside ``x > PLACEMENT_EDGE and y > PLACEMENT_EDGE``.
TRAIN_EDGE = 0.45
PLACEMENT_EDGE = 0.55

#: Number of distractors (inclusive range) per family: every split but the placement ones (``default``),
#: ``placement`` (one more at the top than default: new layouts, seen counts mostly) and
#: ``placement_extrapolation`` (all above default).
DISTRACTORS: dict[str, dict[str, tuple[int, int]]] = {
    "pick_place": {"default": (2, 4), "placement": (3, 5), "placement_extrapolation": (5, 6)},
    "color_match": {"default": (1, 3), "placement": (2, 4), "placement_extrapolation": (4, 5)},
    "clutter": {"default": (6, 8), "placement": (7, 9), "placement_extrapolation": (9, 11)},
    "relative_size": {"default": (1, 3), "placement": (2, 4), "placement_extrapolation": (4, 5)},
    "spatial": {"default": (0, 2), "placement": (1, 3), "placement_extrapolation": (3, 4)},
    "multi_object": {"default": (1, 3), "placement": (2, 4), "placement_extrapolation": (4, 5)},
}

RELATIONS: dict[str, tuple[float, float]] = {
    "left of": (-1.0, 0.0),
    "right of": (1.0, 0.0),
    "above": (0.0, -1.0),
    "below": (0.0, 1.0),
}
SIZE_WORDS = ("larger", "smaller")


@dataclass
class Episode:
    """A generated episode: the initial scene, the instruction and what solves it."""

    task: str
    split: str
    seed: int
    instruction: str
    objects: list[Obj]
    containers: list[Container]
    target: int  # uid of the target container
    required: tuple[int, ...]  # uids of the objects that must end up in the target container
    max_steps: int

    def container(self, uid: int) -> Container:
        return next(c for c in self.containers if c.uid == uid)

    def obj(self, uid: int) -> Obj:
        return next(o for o in self.objects if o.uid == uid)


@dataclass(frozen=True)
class TaskFamily:
    name: str
    description: str
    templates: tuple[str, ...]  # train phrasings (used by every split but novel_task)
    novel_template: str  # held-out phrasing (novel_task only)
    generate: Callable[[_Builder], tuple[Container, list[Obj], dict[str, str]]] = field(repr=False)


class _Retry(Exception):
    pass


class _Builder:
    """Scene-building helpers bound to one RNG, split and family."""

    def __init__(self, rng: np.random.Generator, split: str, task: str, gap: float = 0.025):
        self.rng = rng
        self.split = split
        self.task = task
        self.layout = Layout(rng, gap=gap)
        self.objects: list[Obj] = []
        self.containers: list[Container] = []
        self._uid = 0

    # --- random choices -------------------------------------------------------------------------
    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def size(self) -> float:
        return SIZES[self.choice(("small", "large"))]

    def n_distractors(self) -> int:
        ranges = DISTRACTORS[self.task]
        lo, hi = ranges.get(self.split, ranges["default"])
        return int(self.rng.integers(lo, hi + 1))

    def container_colors(self, n: int, exclude: tuple[str, ...] = ()) -> list[str]:
        pool = [c for c in TRAIN_COLORS if c not in exclude]
        return [pool[i] for i in self.rng.permutation(len(pool))[:n]]

    def target_kind(self, color: str | None = None) -> tuple[str, str]:
        """A target kind for this split (``color`` fixes the colour for colour-defined families)."""
        if self.split == "combination":
            pool = sorted(k for k in HELD_OUT_COMBOS if color is None or k[0] == color)
            return self.choice(pool)
        if self.split == "novel_object":
            if color is not None:
                return color, self.choice(SHAPES)
            mode = int(self.rng.integers(3))  # 0: novel shape, 1: novel colour, 2: both
            c = NOVEL_COLOR if mode >= 1 else self.choice(TRAIN_COLORS)
            s = NOVEL_SHAPE if mode != 1 else self.choice(TRAIN_SHAPES)
            return c, s
        pool = [k for k in TRAIN_KINDS if color is None or k[0] == color]
        return self.choice(pool)

    def distractor_kind(
        self,
        exclude_kinds=(),
        exclude_colors=(),
        similar_to: tuple[str, str] | None = None,
        p_similar: float = 0.0,
    ) -> tuple[str, str]:
        pool = [k for k in TRAIN_KINDS if k not in exclude_kinds and k[0] not in exclude_colors]
        if similar_to is not None and self.rng.random() < p_similar:
            similar = [k for k in pool if k[0] == similar_to[0] or k[1] == similar_to[1]]
            if similar:
                pool = similar
        return self.choice(pool)

    def target_accept(self) -> Callable[[float, float], bool]:
        if self.split == "placement_extrapolation":
            return lambda x, y: x > PLACEMENT_EDGE and y > PLACEMENT_EDGE
        return lambda x, y: not (x > TRAIN_EDGE and y > TRAIN_EDGE)

    # --- placement ------------------------------------------------------------------------------
    def container(self, color: str, ctype: str | None = None, scale: float = 1.0) -> Container:
        ctype = ctype or self.choice(CONTAINER_TYPES)
        c = self.layout.add_container(
            color, ctype, CONTAINER_RADIUS[ctype] * scale, uid=100 + len(self.containers)
        )
        if c is None:
            raise _Retry
        self.containers.append(c)
        return c

    def obj(self, kind, radius, accept=None, sampler=None, gap=None, required=True) -> Obj | None:
        pos = self.layout.add_disc(radius, accept=accept, sampler=sampler, gap=gap)
        if pos is None:
            if required:
                raise _Retry
            return None
        o = Obj(self._uid, kind[0], kind[1], radius, pos[0], pos[1])
        self._uid += 1
        self.objects.append(o)
        return o

    def distractors(self, n: int, radius=None, sampler=None, gap=None, **kind_kw) -> None:
        for _ in range(n):
            r = self.size() if radius is None else radius
            self.obj(self.distractor_kind(**kind_kw), r, sampler=sampler, gap=gap, required=False)

    def some_containers(
        self, exclude_colors=(), scale_first: float = 1.0
    ) -> tuple[Container, list[Container]]:
        n = 1 + int(self.rng.integers(2))
        colors = self.container_colors(n, exclude_colors)
        conts = [self.container(c, scale=scale_first if i == 0 else 1.0) for i, c in enumerate(colors)]
        return conts[0], conts


# --- family generators ----------------------------------------------------------------------------


def _gen_pick_place(b: _Builder):
    target_c, _ = b.some_containers()
    kind = b.target_kind()
    t = b.obj(kind, b.size(), accept=b.target_accept())
    b.distractors(b.n_distractors(), exclude_kinds={kind}, similar_to=kind, p_similar=0.6)
    return target_c, [t], {"obj": t.name, "cont": target_c.name}


def _gen_color_match(b: _Builder):
    a = NOVEL_COLOR if b.split == "novel_object" else b.choice(TRAIN_COLORS)
    other = b.container_colors(1, exclude=(a,))[0]
    ref_type = b.choice(CONTAINER_TYPES)
    other_type = "frame" if ref_type == "bowl" else "bowl"
    conts = [(a, ref_type), (other, other_type)]
    if b.rng.random() < 0.5:
        conts.reverse()
    made = {ct: b.container(col, ct) for col, ct in conts}
    target_c = made[ref_type]
    kind = b.target_kind(color=a)
    t = b.obj(kind, b.size(), accept=b.target_accept())
    decoy = b.choice([k for k in TRAIN_KINDS if k[0] == other])
    b.obj(decoy, b.size())
    b.distractors(b.n_distractors(), exclude_colors=(a, other))
    return target_c, [t], {"ctype": ref_type}


def _gen_clutter(b: _Builder):
    target_c = b.container(b.container_colors(1)[0])
    kind = b.target_kind()
    t = b.obj(kind, CLUTTER_RADIUS, accept=b.target_accept(), gap=0.01)

    def near(rng):
        return t.x + rng.uniform(-0.3, 0.3), t.y + rng.uniform(-0.3, 0.3)

    for _ in range(b.n_distractors()):
        k = b.distractor_kind(exclude_kinds={kind}, similar_to=kind, p_similar=0.9)
        # close to the target when there is room, else anywhere (the scene is redrawn if even that fails)
        if b.obj(k, CLUTTER_RADIUS, sampler=near, gap=0.008, required=False) is None:
            b.obj(k, CLUTTER_RADIUS, gap=0.008)
    return target_c, [t], {"obj": t.name, "cont": target_c.name}


def _gen_relative_size(b: _Builder):
    target_c, _ = b.some_containers()
    kind = b.target_kind()
    which = b.choice(SIZE_WORDS)
    r_t, r_o = (SIZES["large"], SIZES["small"]) if which == "larger" else (SIZES["small"], SIZES["large"])
    t = b.obj(kind, r_t, accept=b.target_accept())
    b.obj(kind, r_o)
    b.distractors(b.n_distractors(), exclude_kinds={kind})
    return target_c, [t], {"size": which, "obj": t.name, "cont": target_c.name}


def _gen_spatial(b: _Builder):
    target_c, _ = b.some_containers()
    rel = b.choice(tuple(RELATIONS))
    dx, dy = RELATIONS[rel]
    kind = b.target_kind()
    ref_kind = b.distractor_kind(exclude_kinds={kind})
    radius = b.size()
    axis_ok = (lambda x, y: 0.28 < x < 0.72) if dx else (lambda x, y: 0.28 < y < 0.72)
    ref = b.obj(ref_kind, b.size(), accept=axis_ok)

    def side(sign):
        def sampler(rng):
            u, v = rng.uniform(0.17, 0.36), rng.uniform(-0.1, 0.1)
            return ref.x + sign * (dx * u) + dy * v, ref.y + sign * (dy * u) + dx * v

        return sampler

    t = b.obj(kind, radius, accept=b.target_accept(), sampler=side(+1), gap=0.02)
    b.obj(kind, radius, sampler=side(-1), gap=0.02)
    b.distractors(b.n_distractors(), exclude_kinds={kind, ref_kind})
    return target_c, [t], {"obj": t.name, "rel": rel, "ref": ref.name, "cont": target_c.name}


def _gen_multi_object(b: _Builder):
    color = NOVEL_COLOR if b.split == "novel_object" else b.choice(TRAIN_COLORS)
    target_c, _ = b.some_containers(exclude_colors=(color,), scale_first=1.15)
    n = 2 + int(b.rng.integers(2))
    first = b.target_kind(color=color)
    shapes_pool = SHAPES if b.split == "novel_object" else TRAIN_SHAPES
    rest = [s for s in shapes_pool if s != first[1] and (color, s) not in HELD_OUT_COMBOS]
    kinds = [first] + [(color, rest[i]) for i in b.rng.permutation(len(rest))[: n - 1]]
    accept = b.target_accept()
    targets = [b.obj(k, b.size(), accept=accept) for k in kinds]
    b.distractors(b.n_distractors(), exclude_colors=(color,))
    return target_c, targets, {"color": color, "cont": target_c.name}


TASKS: dict[str, TaskFamily] = {
    f.name: f
    for f in (
        TaskFamily(
            "pick_place",
            "target named by colour and shape",
            ("put the {obj} into the {cont}", "place the {obj} in the {cont}"),
            "into the {cont} put the {obj}",
            _gen_pick_place,
        ),
        TaskFamily(
            "color_match",
            "target deduced from the colour of the referenced container",
            (
                "put the object with the same colour as the {ctype} into it",
                "place the object that has the same colour as the {ctype} in it",
            ),
            "into the {ctype} put the object with the same colour",
            _gen_color_match,
        ),
        TaskFamily(
            "clutter",
            "small target among many close, similar distractors",
            ("put the {obj} into the {cont}", "find the {obj} and put it into the {cont}"),
            "into the {cont} put the {obj}",
            _gen_clutter,
        ),
        TaskFamily(
            "relative_size",
            "two objects of the same kind; the larger or the smaller one",
            ("put the {size} {obj} into the {cont}", "place the {size} {obj} in the {cont}"),
            "into the {cont} put the {size} {obj}",
            _gen_relative_size,
        ),
        TaskFamily(
            "spatial",
            "two identical candidates on either side of a reference object",
            (
                "put the {obj} that is {rel} the {ref} into the {cont}",
                "place the {obj} {rel} the {ref} in the {cont}",
            ),
            "into the {cont} put the {obj} that is {rel} the {ref}",
            _gen_spatial,
        ),
        TaskFamily(
            "multi_object",
            "every object of one colour (two or three placements)",
            ("put all {color} objects into the {cont}", "place every {color} object in the {cont}"),
            "into the {cont} put all {color} objects",
            _gen_multi_object,
        ),
    )
}
TASK_INDEX: dict[str, int] = {t: i for i, t in enumerate(TASKS)}

#: Extra steps allowed beyond the number of required placements before truncation.
SLACK_STEPS = 2


def check_task_split(task: str | None, split: str) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)} (or None to sample one)")
    if split not in SPLIT_INDEX:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def sample_task(split: str, seed: int) -> str:
    check_task_split(None, split)
    rng = np.random.default_rng([SPLIT_INDEX[split], int(seed)])
    return list(TASKS)[int(rng.integers(len(TASKS)))]


def make_episode(task: str | None, split: str, seed: int, max_attempts: int = 200) -> Episode:
    """Generate the episode of ``(task, split, seed)`` (``task=None`` samples a family from the seed)."""
    check_task_split(task, split)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if task is None:
        task = sample_task(split, seed)
    family = TASKS[task]
    rng = np.random.default_rng([SPLIT_INDEX[split], TASK_INDEX[task], seed])
    for _ in range(max_attempts):
        b = _Builder(rng, split, task, gap=0.01 if task == "clutter" else 0.025)
        try:
            target_c, targets, slots = family.generate(b)
        except _Retry:
            continue
        template = family.novel_template if split == "novel_task" else b.choice(family.templates)
        return Episode(
            task=task,
            split=split,
            seed=seed,
            instruction=template.format(**slots),
            objects=b.objects,
            containers=b.containers,
            target=target_c.uid,
            required=tuple(o.uid for o in targets),
            max_steps=len(targets) + SLACK_STEPS,
        )
    raise RuntimeError(f"could not lay out a {task!r} scene for split {split!r}, seed {seed}")


def vocabulary() -> list[str]:
    """Sorted list of every word any instruction of any split can contain."""
    words: set[str] = set()
    for fam in TASKS.values():
        for template in (*fam.templates, fam.novel_template):
            words.update(w for w in template.split() if not w.startswith("{"))
    words.update(COLORS)
    words.update(SHAPES)
    words.update(CONTAINER_TYPES)
    words.update(SIZE_WORDS)
    for rel in RELATIONS:
        words.update(rel.split())
    return sorted(words)
