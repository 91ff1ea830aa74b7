"""ImageBlock.index: a block whose pooled tokens are not consecutive (e.g. letterbox padding columns left out)."""

from __future__ import annotations

import pytest
import torch

from ivra import plan
from ivra.adapters.base import ImageBlock


def test_index_places_the_keys_on_the_named_offsets():
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 2:8] = True
    mask[1, 1:7] = True
    keep = torch.tensor([0, 2, 3, 5])  # offsets 1 and 4 of each 6-token block are left alone
    blocks = [ImageBlock(torch.randn(4, 3), index=keep, length=6, sample=b) for b in (1, 0)]
    placed = plan.assign(blocks, mask)
    rows = {p.sample: p.rows.tolist() for p in placed}
    assert rows[0] == [2 + o for o in (0, 2, 3, 5)]
    assert rows[1] == [10 + 1 + o for o in (0, 2, 3, 5)]


def test_index_is_validated():
    with pytest.raises(ValueError, match="needs `length`"):
        ImageBlock(torch.randn(2, 3), index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one offset per key"):
        ImageBlock(torch.randn(2, 3), index=torch.tensor([0]), length=3)


def test_unnamed_blocks_skip_a_text_only_sample_between_two_image_samples():
    """Visual tokens per sample [2, 0, 2]: the second block goes to sample 2 (a sample with no visual token is
    passed over, however many there are in a row), not refused as straddling samples."""
    for counts in ([2, 0, 2], [2, 0, 0, 2]):
        mask = torch.zeros(len(counts), 5, dtype=torch.bool)
        for s, n in enumerate(counts):
            mask[s, 1 : 1 + n] = True
        blocks = [ImageBlock(torch.randn(2, 3)), ImageBlock(torch.randn(2, 3))]
        placed = plan.assign(blocks, mask)
        last = len(counts) - 1
        assert [p.sample for p in placed] == [0, last]
        assert [p.rows.tolist() for p in placed] == [[1, 2], [5 * last + 1, 5 * last + 2]]
