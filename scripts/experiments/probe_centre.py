"""Linear probe of a vision tower's patch features: shape and colour read at the patch that holds each object's
centre (besides every object patch), the question behind the second vision round in docs/minivla-experiments.md.

    PYTHONPATH=src python scripts/experiments/probe_centre.py VISION.safetensors

Heads fitted on 800 train-split episodes' frames (600 steps), read on 200 val episodes' frames.
"""

import sys

import torch

from ivra.minivla.dense import DenseHeads, features_of, labelled_frames
from ivra.minivla.model import MiniVLASpec, build_policy
from ivra.minivla.tokenizer import BINS, WordTokenizer
from ivra.minivla.train import vision_state

torch.manual_seed(0)
spec = MiniVLASpec()
grid = spec.image_size // spec.patch_size
tower = build_policy(spec, WordTokenizer.for_tabletop()).model.vision_tower
tower.load_state_dict(vision_state(sys.argv[1], spec))
train_images, train_labels = labelled_frames(800, "train", 0, spec.image_size, grid)
val_images, val_labels = labelled_frames(200, "val", 0, spec.image_size, grid)
train_feats, val_feats = features_of(tower, train_images), features_of(tower, val_images)
train_labels, val_labels = torch.as_tensor(train_labels), torch.as_tensor(val_labels)
heads = DenseHeads(train_feats.shape[-1])
opt = torch.optim.AdamW(heads.parameters(), lr=3e-3)
for _ in range(600):
    idx = torch.randint(0, len(train_feats), (256,))
    loss, _ = heads(train_feats[idx], train_labels[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
with torch.no_grad():
    _, logits = heads(val_feats)
patch = torch.arange(grid * grid)
holds_centre = (
    (val_labels[:, 0] > 0)
    & ((val_labels[:, 3] * grid) // BINS == patch % grid)
    & ((val_labels[:, 4] * grid) // BINS == patch // grid)
)
for head, row in (("shape", 1), ("colour", 0)):
    right = logits[f"obj_{'shape' if row else 'color'}"].argmax(-1) == val_labels[:, row]
    print(
        f"{head}: {float(right[val_labels[:, 0] > 0].float().mean()):.3f} of object patches, "
        f"{float(right[holds_centre].float().mean()):.3f} of centre patches (n={int(holds_centre.sum())})"
    )
