"""Linear probe: do a vision tower's patch features (the ones LLaVA feeds the LM) encode what is where?

    PYTHONPATH=src python scripts/experiments/probe_vision.py [vision.safetensors ...]

Fits linear heads (ivra.minivla.dense) on 1500 train-split episodes' frames, reports on 300 val episodes.
"random" = the same architecture untrained (a floor for what the architecture gives for free); "random:P" is
the untrained tower with P px patches. The patch size of a weights file is read off its patch embedding.
"""

import dataclasses
import json
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel

from ivra.minivla.dense import features_of, labelled_frames, probe
from ivra.minivla.model import MiniVLASpec, vision_config

torch.manual_seed(0)
data = {}
for path in sys.argv[1:] or ["random:12"]:
    state = None
    if path.startswith("random"):
        patch = int(path.partition(":")[2] or 12)
    else:
        state = load_file(path)
        state = {k.removeprefix("model.vision_tower."): v.float() for k, v in state.items()}
        patch = state["embeddings.patch_embedding.weight"].shape[-1]
    spec = dataclasses.replace(MiniVLASpec(), patch_size=patch)
    grid = spec.image_size // spec.patch_size
    if grid not in data:
        t0 = time.time()
        data[grid] = (
            *labelled_frames(1500, "train", 0, spec.image_size, grid),
            *labelled_frames(300, "val", 0, spec.image_size, grid),
        )
        print(f"{len(data[grid][0])} / {len(data[grid][2])} frames in {time.time() - t0:.0f}s", flush=True)
    tr_img, tr_lab, te_img, te_lab = data[grid]
    torch.manual_seed(0)
    tower = CLIPVisionModel(vision_config(spec))
    if state is not None:
        tower.load_state_dict(state, strict=True)
    t0 = time.time()
    ftr, fte = features_of(tower, tr_img), features_of(tower, te_img)
    m = probe(ftr, torch.as_tensor(tr_lab), fte, torch.as_tensor(te_lab))
    print(path, f"({time.time() - t0:.0f}s)", json.dumps({k: round(v, 3) for k, v in m.items()}), flush=True)
