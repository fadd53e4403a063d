"""EDA-style text augmentation for classification training rows (Wei & Zou 2019, without synonyms).

Three word-level operations, each with a per-word probability: random deletion, random swap and
random insertion of a copy of a word of the same text. Every augmented view is a pure function of
(seed, epoch, row, probabilities): a resumed run, any number of processes and any batch split
see exactly the views the uninterrupted run saw. Pure Python: `ptft validate` imports no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ptft_cli.config import AugmentConfig


@dataclass(frozen=True)
class Rates:
    """Per-word probabilities of the three operations."""

    delete: float = 0.0
    swap: float = 0.0
    insert: float = 0.0

    def scaled(self, factor: float) -> Rates:
        return Rates(self.delete * factor, self.swap * factor, self.insert * factor)

    def __bool__(self) -> bool:
        return bool(self.delete or self.swap or self.insert)


def augment_words(words: list[str], rates: Rates, rng: random.Random) -> list[str]:
    """Delete, then swap, then insert (EDA's order of operations applied in sequence)."""
    out = list(words)
    if rates.delete and len(out) > 1:
        kept = [w for w in out if rng.random() >= rates.delete]
        out = kept or [out[rng.randrange(len(out))]]  # a text never becomes empty
    if rates.swap and len(out) > 1:
        for i in range(len(out)):
            if rng.random() < rates.swap:
                j = rng.randrange(len(out) - 1)
                j += j >= i  # another position than i
                out[i], out[j] = out[j], out[i]
    if rates.insert and out:
        source = list(out)  # copies come from the text before insertion
        for _ in range(len(source)):
            if rng.random() < rates.insert:
                out.insert(rng.randrange(len(out) + 1), source[rng.randrange(len(source))])
    return out


def augment_text(text: str, rates: Rates, rng: random.Random) -> str:
    """`text` with its whitespace-separated words augmented (runs of whitespace become one space)."""
    words = text.split()
    if not rates or not words:
        return text
    return " ".join(augment_words(words, rates, rng))


class Augmenter:
    """The training rows' augmented views for the current epoch and back-off level.

    The loop shows it the training state before each step (`observe`): the epoch picks the views;
    with back-off, the evaluations without a new best metric scale the rates down. Both are saved
    in checkpoints, so a resumed run continues with the same views."""

    def __init__(self, cfg: AugmentConfig, seed: int):
        self.rates = Rates(cfg.delete, cfg.swap, cfg.insert)
        self.backoff = cfg.backoff
        self.seed = seed
        self.epoch = 0
        self.stalled = 0  # evaluations in a row without a new best

    def observe(self, epoch: int, evals_without_improvement: int) -> None:
        self.epoch, self.stalled = epoch, evals_without_improvement

    def current(self) -> Rates:
        if self.backoff is None or not self.stalled:
            return self.rates
        return self.rates.scaled(self.backoff**self.stalled)

    def view(self, text: str, row: int, part: int = 0) -> str:
        """Row `row`'s text (`part` 1: its second text) as this epoch sees it."""
        rates = self.current()
        if not rates:
            return text
        # A string seed is hashed with SHA-512 by `random`: stable across runs and Python versions.
        rng = random.Random(f"{self.seed}:{self.epoch}:{row}:{part}")
        return augment_text(text, rates, rng)
