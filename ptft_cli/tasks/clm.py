"""Causal LM (next-token prediction): packed blocks, shifted targets, scoring the whole validation text.

A block is T+1 consecutive tokens: the model reads the first T and predicts the last T, so every
token of the stream is a target exactly once per epoch (as in nanoGPT), unlike the HF convention
of T-token blocks with T-1 targets. Blocks start every T tokens from a random per-epoch offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ptft_cli import corpus
from ptft_cli.tasks import lm

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware


def epoch_batches(n_tokens: int, length: int, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    starts = corpus.block_starts(n_tokens, length, length + 1, seed=seed, epoch=epoch, shuffle=True)
    return [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]


def collate_blocks(blocks: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """(B, T+1) token blocks → inputs (B, T) and next-token labels (B, T)."""
    import torch

    x = torch.from_numpy(blocks.astype(np.int64))
    return {"input_ids": x[:, :-1].to(device), "labels": x[:, 1:].to(device)}


def gather(ids: np.ndarray, starts: np.ndarray, span: int) -> np.ndarray:
    return ids[starts[:, None] + np.arange(span)[None, :]]


def loss_sum(model: Any, batch: dict[str, torch.Tensor], hw: Hardware) -> torch.Tensor:
    with hw.autocast():
        # no KV cache: training and scoring read each block once
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits
    return lm.summed_cross_entropy(logits, batch["labels"])


def evaluate(
    model: Any,
    stream: corpus.TokenStream,
    length: int,
    batch_size: int,
    hw: Hardware,
    max_blocks: int | None = None,
) -> dict[str, Any]:
    """Score every token of the stream after the first: non-overlapping blocks, the last one padded."""
    import torch

    ids = stream.ids.astype(np.int64)
    n_targets = len(ids) - 1
    n_full = n_targets // length
    starts = np.arange(n_full, dtype=np.int64) * length
    if max_blocks is not None:
        starts = starts[:max_blocks]
    nats, targets = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            batch = collate_blocks(gather(ids, starts[i : i + batch_size], length + 1), hw.device)
            nats += loss_sum(model, batch, hw).item()
            targets += batch["labels"].numel()
        rest = n_targets - n_full * length
        if rest > 0 and max_blocks is None:  # the tail that does not fill a block
            tail = torch.from_numpy(ids[n_full * length :])[None, :]
            batch = {"input_ids": tail[:, :-1].to(hw.device), "labels": tail[:, 1:].to(hw.device)}
            nats += loss_sum(model, batch, hw).item()
            targets += rest
    model.train(was_training)
    scored_all = max_blocks is None
    return lm.lm_metrics(
        nats, targets, stream.chars if scored_all else None, stream.bytes if scored_all else None
    )
