"""Reproducible training of the tiny LLaRA-style policy, in two stages (as real VLAs are built):

1. ``pretrain_vision``: the CLIP-style ViT is pre-trained on generated train-split scenes, then frozen.
   ``objective="dense"`` (default, shipped): linear heads on the patch features LLaVA reads learn, per patch,
   which object/container is there and the absolute bin of its centre (:mod:`ivra.minivla.dense`);
   ``objective="clip"``: contrastive loss against scene captions (the earlier recipe, kept for comparison).
2. ``train_policy``: projector + Llama learn from expert demonstrations (train split only) with the action written
   as text; the vision tower stays frozen, so its patch features are computed once and cached.
   ``fraction`` < 1 trains on the first episodes only (low-data regime).

Both stages share one fitting loop (:func:`fit`: AdamW, warm-up + cosine, gradient clipping, a log line every
``log_every`` steps, and a resumable checkpoint every ``ckpt_every`` steps). Every run writes ``log.jsonl``
(loss, seconds) and ``run.json`` (arguments, versions, wall time) beside its weights, and is deterministic given
its seed on the same machine and library versions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ivra.minivla.captions import caption
from ivra.minivla.model import MiniVLASpec, build_clip, build_policy, pixels, prompt_ids
from ivra.minivla.tokenizer import WordTokenizer


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _log(path: Path, **row) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _run_info(out: Path, **kw) -> None:
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        **kw,
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))


def fit(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    out: Path,
    name: str,
    steps: int,
    batch: int,
    lr: float,
    weight_decay: float,
    seed: int,
    log_every: int = 25,
    ckpt_every: int = 250,
    stop: int | None = None,
) -> float:
    """The fitting loop both stages share: ``loss_fn(index batch)`` on ``steps`` random batches of ``n_items``.

    Trains the parameters of ``module`` that require grad. Every ``ckpt_every`` steps, ``out/ckpt.pt`` holds the
    module, optimiser, schedule and sampler state; a run started again on the same ``out`` resumes from it
    (same batches as an uninterrupted run). ``stop`` < ``steps`` ends the run early on the ``steps``-step
    schedule (the learning rate never reaches its floor). Returns the seconds spent in total.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, max(1, steps // 20)))
    g = torch.Generator().manual_seed(seed)
    log, ckpt = out / "log.jsonl", out / "ckpt.pt"
    first, spent = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)  # tensors and plain containers only, no pickled code
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["generator"])
        first, spent = state["step"], state["seconds"]
        # rows the interrupted run logged after its checkpoint are logged again by this one
        if log.exists():
            rows = [r for r in log.read_text().splitlines() if json.loads(r)["step"] < first]
            log.write_text("".join(r + "\n" for r in rows))
        print(f"{name}: resuming from {ckpt} at step {first}", flush=True)
    else:
        log.unlink(missing_ok=True)
    t0 = time.time() - spent
    end = steps if stop is None else min(stop, steps)
    for step in range(first, end):
        idx = torch.randint(0, n_items, (batch,), generator=g)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == end - 1:
            _log(log, step=step, loss=round(loss.item(), 4), seconds=round(time.time() - t0, 1))
            print(f"{name} step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
        if (step + 1) % ckpt_every == 0 and step + 1 < end:
            state = {
                "module": module.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "generator": g.get_state(),
                "step": step + 1,
                "seconds": time.time() - t0,
            }
            torch.save(state, out / "ckpt.tmp")
            (out / "ckpt.tmp").replace(ckpt)
    ckpt.unlink(missing_ok=True)
    return time.time() - t0


def caption_pairs(n: int, seed: int, resolution: int) -> tuple[np.ndarray, list[str]]:
    """``n`` (image, caption) pairs of train-split scenes with random task families."""
    from ivra.tabletop.render import render_scene
    from ivra.tabletop.tasks import make_episode

    images, texts = np.zeros((n, resolution, resolution, 3), np.uint8), []
    for i in range(n):
        ep = make_episode(None, "train", seed + i)
        images[i] = render_scene(ep.objects, ep.containers, resolution)
        texts.append(caption(ep))
    return images, texts


OBJECTIVES = ("dense", "clip")
VISION_SCENES = ("train", "world")


def vision_state(path: str | Path, spec: MiniVLASpec) -> dict[str, torch.Tensor]:
    """A vision tower's weights for ``spec`` as float32: a run's ``vision.safetensors``, or the shipped one (fp16,
    keys under the LLaVA model's prefix). ``ValueError`` when the file holds no such tower."""
    from transformers import CLIPVisionModel

    from ivra.minivla.model import vision_config

    try:
        raw = load_file(str(path))
    except Exception as exc:  # safetensors' own error type for a file that is not safetensors
        raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    state = {k.removeprefix("model.vision_tower."): v.float() for k, v in raw.items()}
    want = CLIPVisionModel(vision_config(spec)).state_dict()
    if state.keys() != want.keys() or any(state[k].shape != want[k].shape for k in want):
        raise ValueError(
            f"{path}: not a vision tower of this spec (expected a vision.safetensors of `ivra train vision`)"
        )
    return state


def pretrain_vision(
    out: str | Path,
    steps: int = 400,
    batch: int = 32,
    n_pairs: int = 5000,
    lr: float = 2e-3,
    seed: int = 0,
    spec: MiniVLASpec | None = None,
    objective: str = "dense",
    stop: int | None = None,
    init: str | Path | None = None,
    head_weights: dict[str, float] | None = None,
    scenes: str = "train",
) -> Path:
    """Stage 1. ``n_pairs``: episodes (dense: every expert step of each) or (image, caption) pairs (clip).

    ``init``: a ``vision.safetensors`` of an earlier dense run to continue from (fresh heads, new schedule);
    ``head_weights``: dense-loss weight per head (e.g. ``{"obj_shape": 3}``); ``scenes``: ``"train"`` (train-split
    episodes, every expert step) or ``"world"`` (dense only: the pre-training world of every colour and shape,
    :mod:`ivra.minivla.world`, ``n_pairs`` scenes)."""
    from transformers import CLIPVisionModel

    from ivra.minivla import dense
    from ivra.minivla.model import vision_config

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown vision objective {objective!r}; expected one of {OBJECTIVES}")
    if objective != "dense" and (init is not None or head_weights or scenes != "train"):
        raise ValueError(
            f"init / head_weights / world scenes apply to the dense objective only, not {objective!r}"
        )
    if scenes not in VISION_SCENES:
        raise ValueError(f"unknown vision scenes {scenes!r}; expected one of {VISION_SCENES}")
    spec = spec or MiniVLASpec()
    init_state = None if init is None else vision_state(init, spec)  # checked before any data is generated
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = WordTokenizer.for_tabletop()
    t0 = time.time()
    if objective == "clip":
        images, texts = caption_pairs(n_pairs, seed=10_000_000 + seed, resolution=spec.image_size)
        rows = [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        model = build_clip(spec, len(tok)).train()
        tower = model.vision_model

        def loss_fn(idx):
            b_ids = ids[idx]
            return model(
                input_ids=b_ids,
                attention_mask=(b_ids != tok.pad_id).long(),
                pixel_values=pixels(images[idx.numpy()]),
                return_loss=True,
            ).loss

        wd = 0.05
    else:
        grid = spec.image_size // spec.patch_size
        if scenes == "world":
            from ivra.minivla.world import labelled_world_frames

            images, labels = labelled_world_frames(
                n_pairs, 20_000_000 + seed * 1_000_000, spec.image_size, grid
            )
        else:
            images, labels = dense.labelled_frames(n_pairs, "train", 10_000_000 + seed, spec.image_size, grid)
        labels = torch.as_tensor(labels)
        vision = CLIPVisionModel(vision_config(spec))
        if init is not None:
            vision.load_state_dict(init_state)
        vision.train()
        heads = dense.DenseHeads(spec.vision_width, head_weights)
        model = torch.nn.ModuleDict({"vision": vision, "heads": heads})
        tower = vision

        def loss_fn(idx):
            feats = dense.patch_features(vision, pixels(images[idx.numpy()]))
            return heads(feats, labels[idx])[0]

        wd = 0.01
    print(
        f"pretrain_vision ({objective}): {len(images)} training images in {time.time() - t0:.0f}s", flush=True
    )
    seconds = fit(
        model,
        loss_fn,
        len(images),
        out,
        "pretrain_vision",
        steps,
        batch,
        lr,
        wd,
        seed,
        log_every=20,
        stop=stop,
    )
    state = {k: v.contiguous() for k, v in tower.state_dict().items()}
    save_file(state, str(out / "vision.safetensors"))
    held_out, world, world_novel = {}, {}, {}
    if objective == "dense":  # what the heads read from the features on unseen val scenes
        v_img, v_lab = dense.labelled_frames(max(1, n_pairs // 20), "val", 0, spec.image_size, grid)
        with torch.no_grad():
            _, logits = heads(dense.features_of(vision, v_img))
        held_out = {k: round(v, 3) for k, v in dense.metrics(logits, torch.as_tensor(v_lab)).items()}
        print("pretrain_vision: val-scene patch accuracy", held_out, flush=True)
        from ivra.minivla.world import labelled_world_frames

        w_img, w_lab = labelled_world_frames(max(1, n_pairs // 20), 90_000_000, spec.image_size, grid)
        with torch.no_grad():
            _, logits = heads(dense.features_of(vision, w_img))
        world = {k: round(v, 3) for k, v in dense.metrics(logits, torch.as_tensor(w_lab)).items()}
        world_novel = dense.novel_metrics(logits, torch.as_tensor(w_lab))
        print("pretrain_vision: world-scene patch accuracy", world, "pink/heart", world_novel, flush=True)
    _run_info(
        out,
        stage="pretrain_vision",
        objective=objective,
        steps=steps,
        stop=stop,
        batch=batch,
        n_pairs=n_pairs,
        n_images=len(images),
        lr=lr,
        seed=seed,
        init=None if init is None else str(init),
        head_weights=head_weights,
        spec=spec.to_dict(),
        seconds=round(seconds, 1),
        scenes=scenes,
        val_patch_accuracy=held_out,
        world_patch_accuracy=world,
        world_novel_accuracy=world_novel,
    )
    return out / "vision.safetensors"


def qa_tensors(
    tok: WordTokenizer, spec: MiniVLASpec, prompts: list[str], answers: list
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention mask, labels): each prompt in the spec's order, then its answer written as bins
    (an action's four, a point's two) and <eos>; labels only on the answer tokens."""
    rows, n_prompt = [], []
    for text, answer in zip(prompts, answers):
        p = prompt_ids(tok, spec, text)
        rows.append(p + tok.encode_action(answer))
        n_prompt.append(len(p))
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (r, n) in enumerate(zip(rows, n_prompt)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, n : len(r)] = torch.tensor(r[n:])
    return ids, (ids != tok.pad_id).long(), labels


def demo_tensors(tok: WordTokenizer, spec: MiniVLASpec, demos: list[dict]) -> tuple[torch.Tensor, ...]:
    """Right-padded (ids, attention mask, labels) with labels only on the action tokens, and uint8 images."""
    ids, mask, labels = qa_tensors(tok, spec, [d["instruction"] for d in demos], [d["action"] for d in demos])
    return ids, mask, labels, np.stack([d["image"] for d in demos])


def training_set(tok, spec, demos: list[dict], ground_scenes: int, ground_seed: int, resolution: int):
    """Robot demonstrations plus the referring questions of ``ground_scenes`` world scenes, as one set:
    (ids, mask, labels, image index per item, images). Items are padded to one length."""
    from ivra.minivla.world import grounding_set

    parts, images, offset = [], [], 0
    if demos:
        ids, mask, labels, img = demo_tensors(tok, spec, demos)
        parts.append((ids, labels, torch.arange(len(demos))))
        images.append(img)
        offset = len(img)
    if ground_scenes:
        img, qs = grounding_set(ground_scenes, ground_seed, resolution)
        ids, mask, labels = qa_tensors(tok, spec, [q for _, q, _ in qs], [xy for *_, xy in qs])
        parts.append((ids, labels, offset + torch.tensor([i for i, *_ in qs])))
        images.append(img)
    length = max(p[0].shape[1] for p in parts)
    ids = torch.cat(
        [torch.nn.functional.pad(p[0], (0, length - p[0].shape[1]), value=tok.pad_id) for p in parts]
    )
    labels = torch.cat(
        [torch.nn.functional.pad(p[1], (0, length - p[1].shape[1]), value=-100) for p in parts]
    )
    index = torch.cat([p[2] for p in parts])
    return ids, (ids != tok.pad_id).long(), labels, index, np.concatenate(images)


@torch.no_grad()
def tower_features(model, images: np.ndarray) -> torch.Tensor:
    """The frozen tower's selected patch features (what LLaVA projects) of uint8 ``images``."""
    cfg = model.config
    f = model.model.vision_tower(pixels(images), output_hidden_states=True).hidden_states[
        cfg.vision_feature_layer
    ]
    return f[:, 1:] if cfg.vision_feature_select_strategy == "default" else f


class FeatureCache:
    """:func:`tower_features` of every image, computed once per image on first use (so a run that sees only part
    of its data never pays for the rest)."""

    def __init__(self, model, images: np.ndarray):
        self.model, self.images = model, images
        n_tokens = model.config.vision_config.image_size // model.config.vision_config.patch_size
        self.feats = torch.zeros(len(images), n_tokens**2, model.config.vision_config.hidden_size)
        self.done = torch.zeros(len(images), dtype=torch.bool)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        todo = idx[~self.done[idx]].unique()
        if len(todo):
            self.feats[todo] = tower_features(self.model, self.images[todo.numpy()])
            self.done[todo] = True
        return self.feats[idx]


class EpisodeStream:
    """The train split's episodes ``0 .. n_episodes - 1`` rendered on demand: a batch of episode seeds becomes
    every expert step of those episodes (about 1.25 each), so each step of the set is drawn equally often, as from
    the in-memory set, but nothing is held (the 300k-episode set would need about 20 GB as frames + features)."""

    def __init__(self, tok: WordTokenizer, spec: MiniVLASpec, n_episodes: int):
        from ivra.tabletop.env import TabletopEnv

        self.tok, self.spec, self.n_episodes = tok, spec, n_episodes
        self.env = TabletopEnv(resolution=spec.image_size, split="train")

    def __call__(self, seeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from ivra.tabletop.dataset import expert_episode

        demos = [d for s in seeds.tolist() for d in expert_episode(self.env, s)]
        return demo_tensors(self.tok, self.spec, demos)


def policy_loss(model, ids, mask, labels, feats) -> torch.Tensor:
    """LLaVA's forward from cached patch features: projector output scattered into the image-token slots."""
    embeds = model.get_input_embeddings()(ids)
    proj = model.model.multi_modal_projector(feats.float())
    slots = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(slots, proj.to(embeds.dtype))
    return model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss


def _with_prompt(spec: MiniVLASpec, prompt: str | None, init, default: str | None = None) -> MiniVLASpec:
    """``spec`` with the prompt order ``prompt``, else that of the run ``init`` continues (a further cycle keeps
    the order it was trained with), else ``default`` (None: the spec's own)."""
    if prompt is None and init is not None:
        prompt = json.loads((Path(init) / "spec.json").read_text()).get("prompt")
    prompt = prompt or default
    return spec if prompt is None else dataclasses.replace(spec, prompt=prompt)


GROUND_SEED = (
    30_000_000  # first world scene of the grounding data (vision cycles on world scenes start at 20M)
)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One LM stage's optimisation schedule (fields in their ``run.json`` order); ``stop`` < ``steps`` ends the
    run early on the ``steps``-step schedule."""

    steps: int
    stop: int | None
    batch: int
    lr: float
    seed: int


@torch.enable_grad()
def _train_lm(
    out: Path,
    vision: str | Path,
    spec: MiniVLASpec,
    demos: list[dict],
    world_scenes: int,
    sched: Schedule,
    init: str | Path | None,
    name: str,
    questions_key: str,
    stream: int = 0,
    **info,
) -> None:
    """Projector + Llama on robot demonstrations and/or world referring questions, vision frozen; saves the run's
    weights, spec, tokenizer and ``run.json`` (the shared settings, ``info``, the number of referring questions
    under ``questions_key``, and whether it streamed). ``stream`` > 0: instead of ``demos``, the first ``stream``
    train-split episodes rendered per batch (:class:`EpisodeStream`; ``batch`` then counts episodes)."""
    steps, batch, lr, seed, stop = sched.steps, sched.batch, sched.lr, sched.seed, sched.stop
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # a continued run keeps its vocabulary; a fresh one has the question words only when it reads questions
    if init is not None:
        tok = WordTokenizer.load(Path(init) / "tokenizer.json")
    else:
        tok = WordTokenizer.for_tabletop(world=world_scenes > 0)
    if world_scenes and "locate" not in tok.stoi:
        raise ValueError(
            f"{init}: its vocabulary has no referring-question words; co-train from a grounding run"
        )
    t0 = time.time()
    model = build_policy(spec, tok)
    if init is not None:
        model.load_state_dict(
            {k: v.float() for k, v in load_file(str(Path(init) / "model.safetensors")).items()}
        )
    model.model.vision_tower.load_state_dict(load_file(str(vision)), strict=True)
    model.model.vision_tower.requires_grad_(False)
    model.train()
    model.model.vision_tower.eval()
    if stream:
        episodes = EpisodeStream(tok, spec, stream)
        n_items, n_questions = stream, 0
        print(f"{name}: streaming {stream} train-split episodes, {batch} per step", flush=True)

        def loss_fn(idx):
            ids, mask, labels, images = episodes(idx)
            return policy_loss(model, ids, mask, labels, tower_features(model, images))

    else:
        ids, mask, labels, index, images = training_set(
            tok, spec, demos, world_scenes, GROUND_SEED + seed * 1_000_000, spec.image_size
        )
        feats = FeatureCache(model, images)
        n_items, n_questions = len(ids), len(ids) - len(demos)
        print(
            f"{name}: {len(demos)} demonstration steps + {n_questions} referring questions on "
            f"{world_scenes} world scenes in {time.time() - t0:.0f}s",
            flush=True,
        )

        def loss_fn(idx):
            return policy_loss(model, ids[idx], mask[idx], labels[idx], feats[index[idx]])

    seconds = fit(model, loss_fn, n_items, out, name, steps, batch, lr, 0.01, seed, stop=stop)
    model.eval()
    save_policy(model, tok, spec, out)
    _run_info(
        out,
        stage=name,
        **info,
        **{questions_key: n_questions},
        **dataclasses.asdict(sched),
        streamed=stream > 0,
        init=None if init is None else str(init),
        vision=str(vision),
        spec=spec.to_dict(),
        seconds=round(seconds, 1),
    )


def train_grounding(
    out: str | Path,
    vision: str | Path,
    scenes: int = 40000,
    steps: int = 3000,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    spec: MiniVLASpec | None = None,
    stop: int | None = None,
    prompt: str | None = None,
    init: str | Path | None = None,
) -> Path:
    """Stage 2, vision-language pre-training: projector + Llama learn to answer referring questions ("locate the
    pink heart" -> its centre bins) about ``scenes`` world scenes (:mod:`ivra.minivla.world`); no robot data. From
    scratch, or from the grounding run ``init`` (a further cycle: new scenes via ``seed``, new schedule). A policy
    run continues from it with its own ``init``. ``prompt``: default instruction_first, or that of ``init``."""
    spec = _with_prompt(spec or MiniVLASpec(), prompt, init, default="instruction_first")
    out = Path(out)
    _train_lm(
        out,
        vision,
        spec,
        [],
        scenes,
        Schedule(steps, stop, batch, lr, seed),
        init,
        "train_grounding",
        "questions",
        scenes=scenes,
    )
    return out


def train_policy(
    out: str | Path,
    vision: str | Path,
    episodes: int = 200000,
    fraction: float = 1.0,
    steps: int = 3000,
    batch: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
    spec: MiniVLASpec | None = None,
    stop: int | None = None,
    init: str | Path | None = None,
    prompt: str | None = None,
    ground_scenes: int = 0,
    stream: bool = False,
) -> Path:
    """Stage 3. ``episodes``: size of the full data set; the first ``fraction`` of it is used. ``init``: a finished
    run directory to start from (a grounding run, or a policy run for a further warm-restart cycle), else from
    scratch. ``prompt``: the prompt order (:data:`ivra.minivla.model.PROMPTS`; default: the spec's, or that of
    ``init``). ``ground_scenes``: world scenes whose referring questions are mixed into the demonstrations
    (co-training, as RT-2 keeps its web data in the robot fine-tuning), 0 for none. ``stream``: render each
    batch's episodes on demand instead of holding the set in memory (:class:`EpisodeStream`, for the full set;
    ``batch`` then counts episodes; no ``ground_scenes``)."""
    from ivra.tabletop.dataset import expert_demos

    if stream and ground_scenes:
        raise ValueError("stream: co-training questions (ground_scenes) need the in-memory set")

    spec = _with_prompt(spec or MiniVLASpec(), prompt, init)
    out = Path(out)
    n_episodes = max(1, round(episodes * fraction))
    demos = []
    if not stream:
        t0 = time.time()
        demos = expert_demos(n_episodes, split="train", seed=0, resolution=spec.image_size)
        print(
            f"train_policy: {n_episodes} episodes -> {len(demos)} steps in {time.time() - t0:.0f}s",
            flush=True,
        )
    _train_lm(
        out,
        vision,
        spec,
        demos,
        ground_scenes,
        Schedule(steps, stop, batch, lr, seed),
        init,
        "train_policy",
        "ground_questions",
        stream=n_episodes if stream else 0,
        episodes=n_episodes,
        full_episodes=episodes,
        demo_steps=None if stream else len(demos),
        fraction=fraction,
        ground_scenes=ground_scenes,
    )
    return out


def save_policy(model, tok: WordTokenizer, spec: MiniVLASpec, out: Path, dtype=torch.float16) -> None:
    """Weights as safetensors (fp16 to keep the repository small), plus the spec and the tokenizer."""
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    tok.save(out / "tokenizer.json")
