"""Reproducible training of the tiny LLaRA-style policy, in two stages (as real VLAs are built):

1. ``pretrain_vision``: the CLIP-style ViT learns contrastively from generated scenes and their captions
   (train split only), then is frozen;
2. ``train_policy``: projector + Llama learn from expert demonstrations (train split only) with the action written
   as text; the vision tower stays frozen. ``fraction`` < 1 trains on the first episodes only (low-data regime).

Every run writes ``log.jsonl`` (loss, seconds) and ``run.json`` (arguments, versions, wall time) beside its
weights, and is deterministic given its seed on the same machine and library versions.
"""

from __future__ import annotations

import json
import math
import platform
import time
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
        **kw,
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))


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


@torch.enable_grad()
def pretrain_vision(
    out: str | Path,
    steps: int = 800,
    batch: int = 64,
    n_pairs: int = 20000,
    lr: float = 5e-4,
    seed: int = 0,
    spec: MiniVLASpec | None = None,
) -> Path:
    spec = spec or MiniVLASpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = WordTokenizer.for_tabletop()
    t0 = time.time()
    images, texts = caption_pairs(n_pairs, seed=10_000_000 + seed, resolution=spec.image_size)
    rows = [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    print(f"pretrain_vision: {n_pairs} caption pairs in {time.time() - t0:.0f}s, caption length <= {length}")
    model = build_clip(spec, len(tok)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, steps // 20))
    g = torch.Generator().manual_seed(seed)
    log = out / "log.jsonl"
    log.unlink(missing_ok=True)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, n_pairs, (batch,), generator=g)
        b_ids = ids[idx]
        loss = model(
            input_ids=b_ids,
            attention_mask=(b_ids != tok.pad_id).long(),
            pixel_values=pixels(images[idx.numpy()]),
            return_loss=True,
        ).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            _log(log, step=step, loss=round(loss.item(), 4), seconds=round(time.time() - t0, 1))
            print(
                f"pretrain_vision step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
    state = {k: v.contiguous() for k, v in model.vision_model.state_dict().items()}
    save_file(state, str(out / "vision.safetensors"))
    _run_info(
        out,
        stage="pretrain_vision",
        steps=steps,
        batch=batch,
        n_pairs=n_pairs,
        lr=lr,
        seed=seed,
        spec=spec.to_dict(),
        seconds=round(time.time() - t0, 1),
    )
    return out / "vision.safetensors"


def demo_tensors(tok: WordTokenizer, spec: MiniVLASpec, demos: list[dict]) -> tuple[torch.Tensor, ...]:
    """Right-padded (ids, attention mask, labels) with labels only on the action tokens, and uint8 images."""
    rows, n_prompt = [], []
    for d in demos:
        p = prompt_ids(tok, spec, d["instruction"])
        rows.append(p + tok.encode_action(d["action"]))
        n_prompt.append(len(p))
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (r, n) in enumerate(zip(rows, n_prompt)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, n : len(r)] = torch.tensor(r[n:])
    images = np.stack([d["image"] for d in demos])
    return ids, (ids != tok.pad_id).long(), labels, images


@torch.enable_grad()
def train_policy(
    out: str | Path,
    vision: str | Path,
    episodes: int = 40000,
    fraction: float = 1.0,
    steps: int = 3000,
    batch: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
    spec: MiniVLASpec | None = None,
) -> Path:
    from ivra.tabletop.dataset import expert_demos

    spec = spec or MiniVLASpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = WordTokenizer.for_tabletop()
    t0 = time.time()
    n_episodes = max(1, round(episodes * fraction))
    demos = expert_demos(n_episodes, split="train", seed=0, resolution=spec.image_size)
    ids, mask, labels, images = demo_tensors(tok, spec, demos)
    print(
        f"train_policy: {n_episodes} episodes -> {len(demos)} steps of demonstrations in {time.time() - t0:.0f}s"
    )
    model = build_policy(spec, tok)
    model.model.vision_tower.load_state_dict(load_file(str(vision)), strict=True)
    model.model.vision_tower.requires_grad_(False)
    model.train()
    model.model.vision_tower.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, steps // 20))
    g = torch.Generator().manual_seed(seed)
    log = out / "log.jsonl"
    log.unlink(missing_ok=True)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(demos), (batch,), generator=g)
        loss = model(
            input_ids=ids[idx],
            attention_mask=mask[idx],
            labels=labels[idx],
            pixel_values=pixels(images[idx.numpy()]),
        ).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            _log(log, step=step, loss=round(loss.item(), 4), seconds=round(time.time() - t0, 1))
            print(
                f"train_policy step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
    model.eval()
    save_policy(model, tok, spec, out)
    _run_info(
        out,
        stage="train_policy",
        episodes=n_episodes,
        demo_steps=len(demos),
        fraction=fraction,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        spec=spec.to_dict(),
        seconds=round(time.time() - t0, 1),
    )
    return out


def save_policy(model, tok: WordTokenizer, spec: MiniVLASpec, out: Path, dtype=torch.float16) -> None:
    """Weights as safetensors (fp16 to keep the repository small), plus the spec and the tokenizer."""
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    tok.save(out / "tokenizer.json")
