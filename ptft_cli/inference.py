"""Inference with language models: continue prompts with a causal LM, fill masks with a masked LM.

Both functions take a loaded model and tokenizer and plain strings, batch by token length (so a
batch wastes little padding), and return one plain dict per input in the input order, ready for
jsonl. Prompts are tokenized without special tokens, as `corpus.py` tokenizes CLM training text;
masked texts get them ([CLS] ... [SEP]), as MLM training does.

Padding is done here from token-id lists rather than by the tokenizer, so the caller's tokenizer
is never mutated (no temporary `padding_side` or `pad_token`), even if the call raises.
Turning generated ids into text (stop strings, streaming) lives in `decoding.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ptft_cli.data.sampler import inference_batches
from ptft_cli.models import max_positions

if TYPE_CHECKING:
    import torch


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped `batch_size` at a time, longest first, so an out-of-memory shows up at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return inference_batches(lengths, batch_size)


def _pad(rows: list[list[int]], pad_id: int, *, left: bool, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists → (B, T) ids and attention mask, padded on the left or the right."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[b, span] = torch.tensor(r, dtype=torch.long)
        mask[b, span] = 1
    return ids.to(device), mask.to(device)


def _device(model: Any) -> Any:
    return next(model.parameters()).device


@dataclass(frozen=True)
class Generation:
    """How to continue prompts (`predict.*` of the config)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    batch_size: int = 16
    seed: int = 0
    repetition_penalty: float = 1.0  # 1.0: off; above 1 makes tokens already in the row less likely
    stop: tuple[str, ...] = ()  # a sequence ends once its completion contains one of these


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    settings: Generation,
    progress: Callable[[int], None] | None = None,
    stream: Callable[[str], None] | None = None,
) -> list[dict]:
    """Continue each prompt with a causal LM; one dict per prompt, in the input order.

    Each dict is {"prompt", "completion", "new_tokens", "finish_reason"}: `completion` is only the
    new text (special tokens skipped; `prompt + completion` reads as the whole text, leading space
    included), `new_tokens` counts generated tokens up to and including EOS (or the token that
    completed a stop string), and `finish_reason` is "eos" if the model emitted EOS, "stop" if the
    completion reached one of `settings.stop` (the completion is cut before it), else "length".
    A sequence that stops early leaves the others of its batch generating.

    Greedy when `settings.do_sample` is False (temperature, top_k, top_p ignored); otherwise samples,
    with `top_k=None` / `top_p=None` meaning no cut-off. `repetition_penalty` is transformers' (it
    divides a positive logit, multiplies a negative one, of every token already in the prompt or the
    completion; the left padding is not counted). Each batch is seeded with `seed + batch index`, so
    a run is reproducible; greedy output does not depend on `batch_size` either.
    `stream`, for a single prompt, receives the completion piece by piece while it is generated;
    the pieces concatenate to exactly the returned completion.
    A prompt that would not fit in the position table with `max_new_tokens` after it keeps its
    last tokens. An empty prompt starts from BOS. Errors (ValueError, prompts counted from 1):
    an empty prompt and no BOS token, `max_new_tokens` not below the model's maximum length,
    an empty stop string, `stream` with other than one prompt.
    """
    import torch
    from transformers import StoppingCriteriaList

    from ptft_cli.decoding import StopStrings, TextPieces, until_eos

    max_new_tokens, do_sample, batch_size = settings.max_new_tokens, settings.do_sample, settings.batch_size
    temperature, top_k, top_p, seed = settings.temperature, settings.top_k, settings.top_p, settings.seed
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if "" in settings.stop:
        raise ValueError("a stop string must not be empty (every text contains it)")
    if stream is not None and len(prompts) != 1:
        raise ValueError(f"streaming takes exactly one prompt, got {len(prompts)}")
    limit = max_positions(model.config)
    if limit is not None and max_new_tokens >= limit:
        raise ValueError(
            f"max_new_tokens ({max_new_tokens}) must be less than the model's maximum length ({limit}), "
            "to leave room for the prompt"
        )
    eos_id = tokenizer.eos_token_id
    bos_id = tokenizer.bos_token_id
    # Left padding is masked out, so its id only matters to transformers, which also writes it after
    # EOS in sequences that finish early; GPT-2-like tokenizers have no pad token and reuse EOS.
    pad_id = next((i for i in (tokenizer.pad_token_id, eos_id) if i is not None), 0)

    rows: list[list[int]] = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    for n, ids in enumerate(rows):
        if not ids:
            if bos_id is None:
                raise ValueError(f"prompt {n + 1} is empty and the tokenizer has no bos token")
            rows[n] = [bos_id]
    if limit is not None:
        keep = limit - max_new_tokens
        rows = [ids[-keep:] for ids in rows]  # left truncation: the end of a prompt is what it continues

    if do_sample:
        # top_k=0 / top_p=1.0 are transformers' explicit "no cut-off"; an unset top_k would mean its default, 50.
        sampling = {"temperature": temperature, "top_k": top_k or 0, "top_p": 1.0 if top_p is None else top_p}
    else:
        # Explicit Nones: transformers warns about sampling flags set alongside do_sample=False.
        sampling = {"temperature": None, "top_k": None, "top_p": None}

    results: list[dict | None] = [None] * len(rows)
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b, batch in enumerate(_length_batches([len(r) for r in rows], batch_size)):
                ids, mask = _pad([rows[i] for i in batch], pad_id, left=True, device=device)
                stops = StopStrings(tokenizer, settings.stop, [rows[i] for i in batch], ids.shape[1])
                streamer = TextPieces(tokenizer, rows[0], settings.stop, stream) if stream else None
                torch.manual_seed(seed + b)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    **sampling,
                    # transformers skips the left padding (found from attention_mask) when penalising
                    repetition_penalty=settings.repetition_penalty,
                    stopping_criteria=StoppingCriteriaList([stops] if settings.stop else []),
                    streamer=streamer,
                    num_beams=1,
                    use_cache=True,
                    pad_token_id=pad_id,
                    eos_token_id=eos_id,
                )
                new = out[:, ids.shape[1] :].tolist()  # (B, <= max_new_tokens)
                for j, (i, gen) in enumerate(zip(batch, new, strict=True)):
                    # a row that met a stop string was padded after it (padding may be EOS)
                    stopped_at = stops.stopped_at[j]
                    kept = gen[:stopped_at] if stopped_at is not None else until_eos(gen, eos_id)
                    results[i] = _completion(tokenizer, prompts[i], rows[i], kept, settings.stop)
                if progress is not None:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _completion(
    tokenizer: Any, prompt: str, prompt_ids: list[int], kept: list[int], stop: tuple[str, ...]
) -> dict:
    """One result from the generated ids worth keeping (up to EOS or the stop string)."""
    from ptft_cli.decoding import completion_text, cut_at_stop

    text, stopped = cut_at_stop(completion_text(tokenizer, prompt_ids, kept), stop)
    eos = bool(kept) and kept[-1] == tokenizer.eos_token_id
    return {
        "prompt": prompt,
        "completion": text,
        "new_tokens": len(kept),
        "finish_reason": "stop" if stopped else "eos" if eos else "length",
    }


def fill_mask(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    top_k: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """The `top_k` most likely tokens at every mask of each text, from one forward pass per batch.

    Returns per text, in order: {"text", "masks": [{"position" (token index, [CLS] included),
    "predictions": [{"token", "token_id", "score" (softmax probability)}, ... highest first]}],
    "filled" (the text with each mask replaced by its top prediction)}. Masks are predicted
    independently, as the model sees them all masked at once. Errors (ValueError, texts counted
    from 1): the tokenizer has no mask token, a text has none, a text is longer than the model allows.
    """
    import torch

    mask_token, mask_id = tokenizer.mask_token, tokenizer.mask_token_id
    if mask_token is None or mask_id is None:
        raise ValueError(
            "the tokenizer has no mask token, so it cannot mark what to fill (is this a masked LM?)"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    rows: list[list[int]] = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    limit = max_positions(model.config)
    for n, ids in enumerate(rows):
        if mask_id not in ids:
            raise ValueError(f"text {n + 1} has no {mask_token}")
        if limit is not None and len(ids) > limit:
            raise ValueError(f"text {n + 1} is {len(ids)} tokens, more than the model's maximum of {limit}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    k = min(top_k, model.config.vocab_size)

    results: list[dict | None] = [None] * len(rows)
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _length_batches([len(r) for r in rows], batch_size):
                ids, mask = _pad([rows[i] for i in batch], pad_id, left=False, device=device)
                out = model(input_ids=ids, attention_mask=mask)
                # BertForPreTraining (masked LM + NSP) names them prediction_logits
                logits = out.logits if hasattr(out, "logits") else out.prediction_logits  # (B, T, V)
                for b, i in enumerate(batch):
                    positions = [p for p, t in enumerate(rows[i]) if t == mask_id]
                    probs = logits[b, positions].float().softmax(-1)  # (masks, V)
                    scores, top = probs.topk(k, dim=-1)
                    masks, filled = [], list(rows[i])
                    for p, s_row, t_row in zip(positions, scores.tolist(), top.tolist(), strict=True):
                        predictions = [
                            {"token": tokenizer.decode([t]).strip(), "token_id": t, "score": s}
                            for s, t in zip(s_row, t_row, strict=True)
                        ]
                        masks.append({"position": p, "predictions": predictions})
                        filled[p] = t_row[0]
                    results[i] = {
                        "text": texts[i],
                        "masks": masks,
                        "filled": tokenizer.decode(filled, skip_special_tokens=True),
                    }
                if progress is not None:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]
