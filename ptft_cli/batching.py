"""Batch order and padding: which examples go together, and how they become tensors.

Batch order is a pure function of (seed, epoch), so a resumed run can rebuild the exact order
of the epoch it stopped in and skip the batches it already took.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

# Sorting windows of up to 50 batches by length removes almost all padding while keeping the batch
# order random. As in Hugging Face's LengthGroupedSampler, a small data set gets at least 4 windows:
# sorting it whole would give every epoch the same batches, and a tiny model can latch onto them.
GROUP_WINDOW_BATCHES = 50


def epoch_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """Index lists for one epoch: shuffled, optionally length-grouped, last batch possibly short."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * max(1, min(GROUP_WINDOW_BATCHES, len(order) // (batch_size * 4)))
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def inference_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of similar length, longest first (fails fast on memory); callers restore input order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest one: (B, T) int64."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def attention_mask(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """1 for real tokens, 0 for padding: (B, T) int64."""
    width = max(len(s) for s in seqs)
    lengths = torch.as_tensor([len(s) for s in seqs])
    return (torch.arange(width)[None, :] < lengths[:, None]).long()
