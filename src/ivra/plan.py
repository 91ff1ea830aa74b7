"""Where each image block's pooled tokens sit in the language model's sequence: pure tensor bookkeeping.

Given the per-image :class:`~ivra.adapters.base.ImageBlock` s of one vision pass and the (B, S) mask of visual
positions at layer L, :func:`assign` returns, per block, the sample it belongs to and the flattened (B*S) row
indices of its pooled tokens. A block that names its sample is placed among that sample's visual positions, in
the order the adapter lists that sample's blocks; blocks without a sample fill the visual positions in sequence
order and may not straddle two samples. Either way each sample's visual-token count must equal what its blocks
take, so one sample's keys can never pool another sample's tokens. No hooks, no models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ivra.adapters.base import ImageBlock, IVRAError


@dataclass(frozen=True)
class Placed:
    """One image block placed in the sequence: ``rows`` (n,) flattened (B*S) indices of its pooled tokens."""

    block: ImageBlock
    sample: int
    image: int  # index of the block among its sample's blocks
    rows: torch.Tensor


def _mismatch(detail: str, blocks: list[ImageBlock]) -> IVRAError:
    return IVRAError(
        f"IVRA could not act: token count mismatch: {detail} ({len(blocks)} image blocks of sizes "
        f"{[b.n_positions for b in blocks]}); beam search / num_return_sequences > 1 duplicate prompts "
        "after the vision pass and are not supported"
    )


def assign(blocks: list[ImageBlock], mask: torch.Tensor) -> list[Placed]:
    """Place ``blocks`` on the True positions of ``mask`` (B, S); raise :class:`IVRAError` on any mismatch."""
    n_batch, seq = mask.shape
    counts = mask.sum(1).tolist()
    named = [b.sample is not None for b in blocks]
    if any(named) and not all(named):
        raise IVRAError(
            "IVRA could not act: the adapter named the sample of some image blocks but not of others"
        )
    per_sample: list[list[ImageBlock]] = [[] for _ in range(n_batch)]
    if all(named) and blocks:
        for b in blocks:
            if not 0 <= b.sample < n_batch:
                raise _mismatch(f"an image block names sample {b.sample} of a batch of {n_batch}", blocks)
            per_sample[b.sample].append(b)
    else:
        total = sum(b.n_positions for b in blocks)
        if total != sum(counts):
            raise _mismatch(
                f"the language model has {sum(counts)} visual tokens but the vision encoder's keys map to {total}",
                blocks,
            )
        sample, used = 0, 0
        for b in blocks:
            while sample < n_batch and used == counts[sample]:
                sample, used = sample + 1, 0
            if sample == n_batch or used + b.n_positions > counts[sample]:
                raise _mismatch(
                    f"an image block of {b.n_positions} tokens would straddle samples {sample} and {sample + 1} "
                    f"(visual tokens per sample: {counts})",
                    blocks,
                )
            per_sample[sample].append(b)
            used += b.n_positions
    placed = []
    for s, sample_blocks in enumerate(per_sample):
        need = sum(b.n_positions for b in sample_blocks)
        if need != counts[s]:
            raise _mismatch(
                f"sample {s} has {counts[s]} visual tokens but its image blocks take {need}; the language model "
                f"has {sum(counts)} visual tokens in all",
                blocks,
            )
        if not sample_blocks:
            continue
        positions = mask[s].nonzero().squeeze(1) + s * seq
        offset = 0
        for i, b in enumerate(sample_blocks):
            if b.index is not None:
                rows = positions[offset : offset + b.n_positions][b.index.to(positions.device)]
            else:
                start = offset + b.skip_before
                rows = positions[start : start + b.keys.shape[0]]
            placed.append(Placed(b, s, i, rows))
            offset += b.n_positions
    return placed
