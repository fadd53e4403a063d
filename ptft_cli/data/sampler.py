"""Batch order: which examples go together in which epoch, and where a resumed run picks it up.

Every epoch's order is a pure function of (seed, epoch), so a resumed run rebuilds the epoch it
stopped in and starts at the batch it had reached by index, never by replaying batches. A stream
(`StreamBatches`) instead reports its position after each batch, and reopens there.

The unit is the optimizer step's global batch (batch_size × accumulation × processes).
`micro_batches` then gives each process its contiguous share, cut into micro-batches. So the data
of every step depends only on the global batch: 2 processes × batch 4, 1 × 4 with accumulation 2
and 1 × 8 train on the same examples, and a checkpoint resumes with any such split.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from ptft_cli.config import TrainingConfig

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


def global_batch(t: TrainingConfig, processes: int) -> int:
    """Examples (or blocks) per optimizer step, over all processes: the unit of batch order."""
    return t.batch_size * t.gradient_accumulation_steps * processes


def micro_batches(
    step_batch: Sequence[Any], rank: int, processes: int, accumulation: int
) -> list[tuple[Any, bool]]:
    """This process's micro-batches of one step batch, as (spec, real). The step batch is cut into
    `processes × accumulation` contiguous parts as even as possible (a short last step included);
    rank r takes parts r·A .. r·A+A-1. With several processes every rank returns exactly A parts: an
    empty one becomes a filler (`real` False: the first example, weighted 0), because every rank must
    run as many forward and backward passes as the others (DDP's last one, every one under FSDP)."""
    n = len(step_batch)
    parts = processes * accumulation
    bounds = [k * n // parts for k in range(parts + 1)]  # as np.array_split, larger parts last
    mine = [
        step_batch[bounds[k] : bounds[k + 1]] for k in range(rank * accumulation, (rank + 1) * accumulation)
    ]
    if processes == 1:
        return [(spec, True) for spec in mine if len(spec)]
    return [(spec, True) if len(spec) else (step_batch[:1], False) for spec in mine]


def inference_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of similar length, longest first (fails fast on memory); callers restore input order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def n_blocks(n_tokens: int, stride: int, span: int) -> int:
    """Blocks of `span` tokens every `stride` tokens that fit for every start offset in [0, stride)."""
    return max(0, (n_tokens - span - (stride - 1)) // stride + 1)


def block_starts(
    n_tokens: int, stride: int, span: int, *, seed: int, epoch: int, shuffle: bool
) -> np.ndarray:
    """Start positions of one epoch's blocks; a per-epoch random offset varies the cut points."""
    count = n_blocks(n_tokens, stride, span)
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(0, stride)) if shuffle and stride > 1 else 0
    starts = offset + stride * np.arange(count, dtype=np.int64)
    if shuffle:
        rng.shuffle(starts)
    return starts


def block_batches(
    n_tokens: int, stride: int, span: int, batch_size: int, *, seed: int, epoch: int
) -> list[np.ndarray]:
    """One epoch of packed blocks, shuffled, as batches of start positions."""
    starts = block_starts(n_tokens, stride, span, seed=seed, epoch=epoch, shuffle=True)
    return [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]


# ---------------------------------------------------------------------------------------------
# Batch sources: what the training loop iterates


class BatchSource(Protocol):
    """Batch specs (index lists, block starts, token blocks) for the loop, epoch by epoch."""

    batches_per_epoch: int | None  # None: a stream of unknown length

    def iterate(self, epoch: int, start: int, position: dict[str, Any] | None) -> Iterator[Any]:
        """The batches of `epoch` from batch `start` (map-style) or from a stream `position`."""
        ...

    def position(self) -> dict[str, Any] | None:
        """Where a stream stands after the last batch it yielded (None for map-style data)."""
        ...


class EpochBatches:
    """Map-style data: each epoch's batch list is rebuilt from (seed, epoch) and entered by index."""

    def __init__(self, make: Callable[[int], Sequence[Any]]):
        self.make = make
        self.batches_per_epoch: int | None = len(make(0))

    def iterate(self, epoch: int, start: int, position: dict[str, Any] | None = None) -> Iterator[Any]:
        return iter(self.make(epoch)[start:])

    def position(self) -> dict[str, Any] | None:
        return None


class StreamBatches:
    """A stream of blocks (`data.stream.BlockStream`) cut into batches; resumable at any batch."""

    def __init__(self, open_stream: Callable[[int, dict[str, Any] | None], Any], batch_size: int):
        self.open_stream = open_stream
        self.batch_size = batch_size
        self.batches_per_epoch: int | None = None
        self._stream: Any = None

    def iterate(self, epoch: int, start: int, position: dict[str, Any] | None = None) -> Iterator[np.ndarray]:
        self._stream = self.open_stream(epoch, position)
        batch: list[np.ndarray] = []
        for block in self._stream:
            batch.append(block)
            if len(batch) == self.batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def position(self) -> dict[str, Any] | None:
        return self._stream.state() if self._stream is not None else None
