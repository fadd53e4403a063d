"""Streaming corpora: token chunks cut into blocks and shuffled in a bounded buffer, resumable.

`BlockStream` holds everything that decides which block comes next (the reader's cursor, tokens
read but not yet cut into blocks, the shuffle buffer, the generator's state), so `state()` after any
block and `BlockStream(..., state)` continue the epoch exactly, without reading the corpus again
from its start. Memory stays bounded by the buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptft_cli.data.corpus import Cursor

Chunks = Callable[[Cursor | None], Iterator[tuple[np.ndarray, Cursor]]]


@dataclass(frozen=True)
class Cutting:
    """How a token stream becomes blocks: `span` tokens every `stride`, shuffled in a buffer."""

    span: int
    stride: int
    buffer_blocks: int
    seed: int


class BlockStream:
    """Blocks of a chunked token stream, cut and shuffled as `cut` says; `state` resumes one."""

    def __init__(self, chunks: Chunks, cut: Cutting, epoch: int, state: dict | None = None):
        self.span, self.stride, self.buffer_blocks = cut.span, cut.stride, cut.buffer_blocks
        self.rng = np.random.default_rng([cut.seed, epoch, 1])
        self.cursor: Cursor | None = None  # after the last chunk read; None: the corpus's start
        self.pending = np.zeros(0, dtype=np.uint32)  # tokens read but not yet cut into blocks
        self.buffer: list[np.ndarray] = []
        self.draining = False  # the corpus is exhausted: the buffer empties in a shuffled order
        if state is not None:
            self._load(state)
        self._chunks = None if self.draining else chunks(self.cursor)

    def __iter__(self) -> BlockStream:
        return self

    def __next__(self) -> np.ndarray:
        while not self.draining:
            if len(self.pending) >= self.span:
                block = self.pending[: self.span].copy()
                self.pending = self.pending[self.stride :]
                self.buffer.append(block)
                if len(self.buffer) >= self.buffer_blocks:
                    j = int(self.rng.integers(len(self.buffer)))
                    self.buffer[j], self.buffer[-1] = self.buffer[-1], self.buffer[j]
                    return self.buffer.pop()
                continue
            chunk = next(self._chunks, None) if self._chunks is not None else None
            if chunk is None:
                self.draining = True
                self.rng.shuffle(self.buffer)
                self.buffer.reverse()  # popped from the end: the shuffled order, first to last
                break
            tokens, self.cursor = chunk
            self.pending = np.concatenate([self.pending, tokens])
        if not self.buffer:
            raise StopIteration
        return self.buffer.pop()

    def state(self) -> dict[str, Any]:
        """Where the stream stands: plain values plus arrays (saved with `np.savez`, no pickles)."""
        width = self.span
        return {
            "cursor": self.cursor.to_dict() if self.cursor else None,
            "draining": self.draining,
            "rng": self.rng.bit_generator.state,
            "arrays": {
                "pending": self.pending.copy(),
                "buffer": np.stack(self.buffer) if self.buffer else np.zeros((0, width), np.uint32),
            },
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.cursor = Cursor(**state["cursor"]) if state["cursor"] else None
        self.draining = bool(state["draining"])
        self.rng.bit_generator.state = state["rng"]
        self.pending = np.asarray(state["arrays"]["pending"], dtype=np.uint32)
        self.buffer = [row.copy() for row in np.asarray(state["arrays"]["buffer"], dtype=np.uint32)]
