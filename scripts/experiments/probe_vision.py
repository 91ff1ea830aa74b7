"""Linear probe: do a vision tower's patch features (the ones LLaVA feeds the LM) encode what is where?

    PYTHONPATH=src python scripts/experiments/probe_vision.py [vision.safetensors ...]

Fits linear heads (ivra.minivla.dense) on 1500 train-split episodes' frames, reports on 300 val episodes.
"random" = the same architecture untrained (a floor for what the architecture gives for free).
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel

from ivra.minivla.dense import features_of, labelled_frames, probe
from ivra.minivla.model import MiniVLASpec, vision_config

torch.manual_seed(0)
spec = MiniVLASpec()
grid = spec.image_size // spec.patch_size
t0 = time.time()
tr_img, tr_lab = labelled_frames(1500, "train", 0, spec.image_size, grid)
te_img, te_lab = labelled_frames(300, "val", 0, spec.image_size, grid)
print(f"{len(tr_img)} / {len(te_img)} frames in {time.time() - t0:.0f}s", flush=True)
for path in ["random", *sys.argv[1:]]:
    tower = CLIPVisionModel(vision_config(spec))
    if path != "random":
        state = load_file(path)
        state = {k.removeprefix("model.vision_tower."): v.float() for k, v in state.items()}
        tower.load_state_dict(state, strict=True)
    t0 = time.time()
    ftr, fte = features_of(tower, tr_img), features_of(tower, te_img)
    m = probe(ftr, torch.as_tensor(tr_lab), fte, torch.as_tensor(te_lab))
    print(path, f"({time.time() - t0:.0f}s)", json.dumps({k: round(v, 3) for k, v in m.items()}), flush=True)
