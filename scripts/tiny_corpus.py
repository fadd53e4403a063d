"""A synthetic corpus a 2-layer language model learns in a few dozen steps, for the resume scripts
(short sentences from a small vocabulary, in paragraphs)."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the film", "this book"]
VERBS = ["liked", "watched", "found", "praised", "hated", "read", "saw"]
OBJECTS = [
    "the garden.",
    "a good story.",
    "the long road.",
    "an old song.",
    "the red door.",
    "a quiet night.",
]


def write_corpus(path: Path, seed: int, *, paragraphs: int | None = None, chars: int | None = None) -> None:
    """`paragraphs` paragraphs, or as many as make about `chars` characters."""
    path.write_text(corpus_text(seed, paragraphs=paragraphs, chars=chars), encoding="utf-8")


def corpus_text(seed: int, *, paragraphs: int | None = None, chars: int | None = None) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while (paragraphs is not None and len(out) < paragraphs) or (chars is not None and size < chars):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            for _ in range(rng.randint(2, 5))
        ]
        out.append(" ".join(s[0].upper() + s[1:] for s in sentences))
        size += len(out[-1]) + 2
    return "\n\n".join(out) + "\n"
