"""A small word-level tokenizer for the tiny LLaRA-style policy: instructions, captions and action numbers.

Actions are written as text, LLaRA style: four integers ``pick_x pick_y place_x place_y``, each the bin of an
image coordinate in [0, 1] among ``BINS`` uniform bins, each bin one token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", "<image>", "<sep>")
BINS = 50


class WordTokenizer:
    def __init__(self, words: list[str]):
        numbers = [str(i) for i in range(BINS)]
        extra = [w for w in sorted(set(words)) if w not in SPECIALS and w not in numbers]
        self.itos = list(SPECIALS) + numbers + extra
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.image_id, self.sep_id = range(len(SPECIALS))
        self.number_ids = list(range(len(SPECIALS), len(SPECIALS) + BINS))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in text.lower().split()]

    def decode(self, ids) -> str:
        return " ".join(self.itos[int(i)] for i in ids)

    # -- actions ---------------------------------------------------------------------------------------------------
    def encode_action(self, action) -> list[int]:
        a = np.clip(np.asarray(action, dtype=np.float64), 0.0, 1.0)
        bins = np.minimum((a * BINS).astype(int), BINS - 1)
        return [self.number_ids[b] for b in bins] + [self.eos_id]

    def decode_action(self, ids) -> np.ndarray | None:
        """Four number tokens then <eos> (or end) -> bin centres in [0, 1]; anything else is malformed (None)."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        ids = [i for i in ids if i != self.pad_id]
        if len(ids) != 4 or any(i not in self.number_ids for i in ids):
            return None
        return (np.array([i - self.number_ids[0] for i in ids], dtype=np.float32) + 0.5) / BINS

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"itos": self.itos, "bins": BINS}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("bins") != BINS:
            raise ValueError(f"tokenizer {path} was built for {data.get('bins')} bins, this code uses {BINS}")
        tok = cls([])
        tok.itos = data["itos"]
        tok.stoi = {w: i for i, w in enumerate(tok.itos)}
        return tok

    @classmethod
    def for_tabletop(cls, world: bool = False) -> WordTokenizer:
        """Every instruction and caption word; ``world`` adds the referring-question words of
        :mod:`ivra.minivla.world` (kept apart so that runs without them keep their vocabulary, and their weights)."""
        from ivra.minivla.captions import caption_vocabulary
        from ivra.minivla.world import QUESTION_WORDS
        from ivra.tabletop import vocabulary

        return cls(list(vocabulary()) + caption_vocabulary() + (list(QUESTION_WORDS) if world else []))
