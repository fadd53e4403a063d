"""Padding token-id lists into tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
