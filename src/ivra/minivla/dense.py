"""Position-aware vision pre-training targets: what each image patch shows, and where.

For every patch of the ViT grid we label the object nearest the patch centre whose disc reaches into the patch
(colour, shape, size, and the *absolute* bin of its centre, the same 50 bins as the action tokens), and the
container under the patch centre (colour, type, centre bins). Linear heads on the patch features the policy
reads (``vision_feature_layer``) are trained with cross-entropy on these labels, so the features the LLaVA
projector sees encode, linearly, which object is where, in the coordinates the action is written in.

The same heads on a frozen tower are a linear probe of what that tower's features encode
(:func:`probe`), which is how the contrastive tower was measured.
"""

from __future__ import annotations

import numpy as np
import torch

from ivra.minivla.tokenizer import BINS
from ivra.tabletop.scene import COLORS, CONTAINER_TYPES, NOVEL_COLOR, NOVEL_SHAPE, SHAPES

#: head name -> number of classes (0 = nothing there for the categorical heads; -100 = ignore for bins)
HEADS: dict[str, int] = {
    "obj_color": len(COLORS) + 1,
    "obj_shape": len(SHAPES) + 1,
    "obj_size": 3,
    "obj_x": BINS,
    "obj_y": BINS,
    "cont_color": len(COLORS) + 1,
    "cont_type": len(CONTAINER_TYPES) + 1,
    "cont_x": BINS,
    "cont_y": BINS,
}
_COLOR = {c: i + 1 for i, c in enumerate(COLORS)}
_SHAPE = {s: i + 1 for i, s in enumerate(SHAPES)}
_CTYPE = {t: i + 1 for i, t in enumerate(CONTAINER_TYPES)}


def _bin(v: float) -> int:
    return int(min(BINS - 1, max(0, int(v * BINS))))


def patch_labels(objects, containers, grid: int) -> np.ndarray:
    """``(len(HEADS), grid * grid)`` int64 labels for one scene (row-major patches, like the ViT)."""
    out = np.zeros((len(HEADS), grid * grid), np.int64)
    out[[3, 4, 7, 8]] = -100
    half = 0.5 / grid
    for p in range(grid * grid):
        cx, cy = (p % grid + 0.5) / grid, (p // grid + 0.5) / grid
        best, best_d = None, np.inf
        for o in objects:
            # distance from the object centre to the patch square, compared with the radius: the disc reaches in
            dx, dy = max(0.0, abs(o.x - cx) - half), max(0.0, abs(o.y - cy) - half)
            if dx * dx + dy * dy < (0.7 * o.radius) ** 2:
                d = (o.x - cx) ** 2 + (o.y - cy) ** 2
                if d < best_d:
                    best, best_d = o, d
        if best is not None:
            out[0, p], out[1, p] = _COLOR[best.color], _SHAPE[best.shape]
            out[2, p] = 1 if best.radius < 0.075 else 2
            out[3, p], out[4, p] = _bin(best.x), _bin(best.y)
        for c in containers:
            if c.contains(cx, cy):
                out[5, p], out[6, p] = _COLOR[c.color], _CTYPE[c.ctype]
                out[7, p], out[8, p] = _bin(c.x), _bin(c.y)
                break
    return out


def labelled_frames(n_episodes: int, split: str, seed: int, resolution: int, grid: int):
    """Images and patch labels of every expert step of ``n_episodes`` episodes (so mid-task states too)."""
    from ivra.tabletop.env import TabletopEnv

    env = TabletopEnv(resolution=resolution, split=split)
    images, labels = [], []
    for s in range(seed, seed + n_episodes):
        obs, _ = env.reset(seed=s)
        while True:
            images.append(obs["image"])
            labels.append(patch_labels(env.episode.objects, env.episode.containers, grid))
            obs, _, term, trunc, _ = env.step(env.expert_action())
            if term or trunc:
                break
    return np.stack(images), np.stack(labels)


class DenseHeads(torch.nn.Module):
    """One linear head per :data:`HEADS` entry; the loss is the weighted mean of the heads' cross-entropies
    (``weights``: head name -> weight, 1 for heads not named)."""

    def __init__(self, width: int, weights: dict[str, float] | None = None):
        super().__init__()
        unknown = sorted(set(weights or {}) - set(HEADS))
        if unknown:
            raise ValueError(f"unknown dense head(s) {unknown}; expected names from {sorted(HEADS)}")
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(width, n) for k, n in HEADS.items()})
        self.register_buffer(
            "weights", torch.tensor([float((weights or {}).get(k, 1.0)) for k in HEADS]), persistent=False
        )

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None):
        """``feats`` (B, P, width); ``labels`` (B, len(HEADS), P). Returns (mean loss, {head: logits})."""
        logits = {k: h(feats) for k, h in self.heads.items()}
        if labels is None:
            return None, logits
        losses = [
            torch.nn.functional.cross_entropy(lg.flatten(0, 1), labels[:, i].flatten(), ignore_index=-100)
            for i, lg in enumerate(logits.values())
        ]
        return (torch.stack(losses) * self.weights).sum() / self.weights.sum(), logits


def patch_features(tower, pixel_values: torch.Tensor, layer: int = -2) -> torch.Tensor:
    """Patch features as LLaVA's ``default`` strategy reads them: hidden state ``layer``, CLS dropped."""
    out = tower(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def metrics(logits: dict, labels: torch.Tensor) -> dict[str, float]:
    """Per-head accuracy on labelled patches (bins: exact and within 2 bins; categorical: on object patches)."""
    res = {}
    has_obj = labels[:, 0] > 0
    has_cont = labels[:, 5] > 0
    for i, (k, lg) in enumerate(logits.items()):
        pred, y = lg.argmax(-1), labels[:, i]
        mask = has_obj if k.startswith("obj") else has_cont
        if mask.sum() == 0:
            continue
        if k.endswith(("_x", "_y")):
            res[k + "_exact"] = float((pred == y)[mask].float().mean())
            res[k + "_within2"] = float(((pred - y).abs() <= 2)[mask].float().mean())
        else:
            res[k] = float((pred == y)[mask].float().mean())
    return res


def novel_metrics(logits: dict, labels: torch.Tensor) -> dict[str, float]:
    """Colour accuracy on patches of pink objects and shape accuracy on patches of hearts (the kinds the robot
    demonstrations never show); NaN where a scene set has none."""
    pink, heart = _COLOR[NOVEL_COLOR], _SHAPE[NOVEL_SHAPE]
    res = {}
    for key, row, cls in (("pink_color", 0, pink), ("heart_shape", 1, heart)):
        m = labels[:, row] == cls
        name = "obj_color" if row == 0 else "obj_shape"
        res[key] = (
            round(float((logits[name].argmax(-1) == cls)[m].float().mean()), 3) if m.any() else float("nan")
        )
    return res


@torch.no_grad()
def features_of(tower, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    from ivra.minivla.model import pixels

    tower.eval()
    return torch.cat(
        [patch_features(tower, pixels(images[i : i + batch])) for i in range(0, len(images), batch)]
    )


@torch.enable_grad()
def probe(
    train_feats, train_labels, test_feats, test_labels, steps: int = 400, lr: float = 3e-3, seed: int = 0
):
    """Linear probe: fit :class:`DenseHeads` on frozen features, report :func:`metrics` on held-out scenes."""
    torch.manual_seed(seed)
    heads = DenseHeads(train_feats.shape[-1])
    opt = torch.optim.AdamW(heads.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(train_feats), (256,), generator=g)
        loss, _ = heads(train_feats[idx].float(), train_labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, logits = heads(test_feats.float())
    return metrics(logits, test_labels)
