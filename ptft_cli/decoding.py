"""From generated token ids to text: the completion of a prompt, stop strings, streaming.

One function, `completion_text`, turns ids into the text `generate` reports; the stop-string check
that ends a sequence (`StopStrings`) and the terminal stream (`TextPieces`) call the same function,
so what stops generation, what is streamed and what is written to the predictions file agree to
the character.

Why not transformers' `StopStringCriteria` (`stop_strings=` with `tokenizer=`): it matches the
vocabulary's token strings at the end of the whole row, prompt included, so a stop string that
begins in the prompt ends generation before the completion contains it, and its token strings
(with `Ġ`/`▁` rewritten to spaces) are not the decoded text for every tokenizer (word-level
decoders that join tokens with spaces, byte fallback). Here the criterion decodes what was
generated, which is exactly the rule the predictions follow: "the completion contains it".

Imports transformers at module level: only `inference.generate` imports this module, lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


def completion_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text `new_ids` add after the prompt, special tokens skipped, leading space kept.

    Decoding the continuation alone drops its leading space with SentencePiece-style tokenizers;
    decoding prompt + continuation and cutting the prompt's text off keeps it.
    """
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    return (
        whole[len(head) :] if whole.startswith(head) else tokenizer.decode(new_ids, skip_special_tokens=True)
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string (excluded), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def until_eos(new_ids: list[int], eos_id: int | None) -> list[int]:
    """The generated ids up to and including the first EOS (what follows it is padding)."""
    return new_ids[: new_ids.index(eos_id) + 1] if eos_id is not None and eos_id in new_ids else new_ids


class StopStrings(StoppingCriteria):
    """Ends each row of a batch once its completion contains a stop string; the others go on.

    transformers then writes padding into a finished row, so `stopped_at[b]` records how many
    tokens row b had generated when its stop string appeared: the ones to keep.
    Each check decodes the row's prompt and completion again (the same decode the result uses);
    a fast tokenizer does that in microseconds, small next to a forward pass.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompts: list[list[int]], start: int) -> None:
        self.tokenizer, self.stop, self.prompts = tokenizer, tuple(stop), prompts
        self.start = start  # column of the first generated token: the width of the left-padded prompts
        self.stopped_at: list[int | None] = [None] * len(prompts)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, self.start :].tolist()  # (B, generated so far)
        eos_id = self.tokenizer.eos_token_id
        for b, ids in enumerate(new):
            if self.stopped_at[b] is not None or (eos_id is not None and eos_id in ids):
                continue  # already done; after EOS the row is padding
            text = completion_text(self.tokenizer, self.prompts[b], ids)
            if cut_at_stop(text, self.stop)[1]:
                self.stopped_at[b] = len(ids)
        done = [n is not None for n in self.stopped_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class TextPieces(BaseStreamer):
    """Hands the completion of one prompt to `write`, piece by piece, as `model.generate` makes it.

    Every step decodes the whole completion (as `completion_text` does) and writes only what can no
    longer change: it holds back an incomplete UTF-8 character (decoded as U+FFFD until its last
    byte comes), trailing whitespace (tokenizers that clean up spaces may drop it when punctuation
    follows), and an ending that could be the start of a stop string. `end()` writes the rest, cut
    at a stop string, so the pieces concatenate to exactly the completion `generate` returns.
    """

    def __init__(
        self, tokenizer: Any, prompt_ids: list[int], stop: Sequence[str], write: Callable[[str], None]
    ) -> None:
        self.tokenizer, self.prompt_ids, self.stop, self.write = tokenizer, prompt_ids, tuple(stop), write
        self.new_ids: list[int] = []
        self.sent = ""  # text written so far
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call hands over the prompt itself
            self.prompt_seen = True
            return
        self.new_ids.extend(value.reshape(-1).tolist())  # (1,) or (1, 1): batch size 1
        text, stopped = self._text()
        self._send(text if stopped else self._settled(text))

    def end(self) -> None:
        self._send(self._text()[0])

    def _text(self) -> tuple[str, bool]:
        ids = until_eos(self.new_ids, self.tokenizer.eos_token_id)
        return cut_at_stop(completion_text(self.tokenizer, self.prompt_ids, ids), self.stop)

    def _settled(self, text: str) -> str:
        """The part of `text` that later tokens cannot change."""
        text = text.rstrip("\ufffd")
        held = max(
            (k for s in self.stop for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])),
            default=0,
        )
        return text[: len(text) - held].rstrip()

    def _send(self, text: str) -> None:
        # A decode that rewrote text already written (not expected after the hold-backs) cannot be
        # taken back; wait until it agrees again rather than write something inconsistent.
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.write(text[len(self.sent) :])
            self.sent = text
