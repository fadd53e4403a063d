"""AdamW with the usual no-decay groups, and the learning-rate schedule (warmup, then linear/cosine/constant)."""

from __future__ import annotations

import math

import torch

from ptft_cli.config import TrainingConfig


def decay_split(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Trainable parameters that are decayed (matrices: weights and embeddings) and those that are
    not (biases and norm weights: 1-D tensors). AdamW's weight decay and `training.l1` both use it."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def adamw(model: torch.nn.Module, t: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over trainable parameters; matrices decay, biases and norm weights (1-D tensors) do not."""
    decay, no_decay = decay_split(model)
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one pass over memory: ~1.5x faster steps on CPU here.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=t.learning_rate,
        betas=(t.adam_betas[0], t.adam_betas[1]),
        eps=t.adam_epsilon,
        fused=fused,
    )


def warmup_steps(t: TrainingConfig, total_steps: int) -> int:
    if t.warmup_steps is not None:
        return min(t.warmup_steps, total_steps)
    return math.ceil(t.warmup_ratio * total_steps)


def lr_factor(step: int, *, total: int, warmup: int, kind: str, floor: float) -> float:
    """Multiplier of the peak learning rate for the update at `step` (0-based).

    Warmup rises linearly from 0 (the first update uses lr=0 when warmup > 0, as in Hugging Face);
    then linear or cosine decay reaches `floor` (min_learning_rate / learning_rate) at `total`.
    """
    if step < warmup:
        return step / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        shape = 1.0 - progress
    else:  # cosine
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * shape


def scheduler(
    optimizer: torch.optim.Optimizer, t: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warm = warmup_steps(t, total_steps)
    floor = t.min_learning_rate / t.learning_rate
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total=total_steps, warmup=warm, kind=t.lr_scheduler, floor=floor),
    )
