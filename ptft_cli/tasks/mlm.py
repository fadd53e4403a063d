"""Masked LM (BERT/RoBERTa) and BERT's next-sentence prediction: masking, examples, loss, scoring.

Masks are drawn when a batch is built, from a generator seeded by the run seed and the batch's
contents, so every epoch masks differently (dynamic masking, as RoBERTa) yet a rerun, or a
resumed run, masks exactly the same way.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ptft_cli import corpus
from ptft_cli.config import ObjectiveConfig
from ptft_cli.errors import ConfigError
from ptft_cli.tasks import lm

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int
    pad: int
    mask: int
    vocab: int

    @classmethod
    def of(cls, tokenizer: Any) -> Specials:
        # RoBERTa-style tokenizers call them bos/eos; BERT-style cls/sep.
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        missing = [
            n
            for n, v in (
                ("mask", tokenizer.mask_token_id),
                ("cls/bos", start),
                ("sep/eos", end),
                ("pad", tokenizer.pad_token_id),
            )
            if v is None
        ]
        if missing:
            raise ConfigError(
                f"masked LM needs a tokenizer with {', '.join(missing)} token(s)",
                key="tokenizer",
                hint="train one with tokenizer.type: wordpiece, or use a BERT/RoBERTa tokenizer",
            )
        return cls(start, end, tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer))


def word_starts(tokenizer: Any) -> np.ndarray:
    """For whole-word masking: which vocabulary entries begin a word (WordPiece `##`, byte-level `Ġ`, SentencePiece `▁`)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if any(t.startswith("##") for t in vocab):
        return np.array([not t.startswith("##") for t in vocab])
    for marker in ("Ġ", "▁"):
        if sum(t.startswith(marker) for t in vocab) > len(vocab) // 10:
            return np.array([t.startswith(marker) or not t[:1].isalnum() for t in vocab])
    raise ConfigError(
        "whole-word masking needs a sub-word tokenizer (WordPiece, byte-level BPE or SentencePiece)",
        key="objective.whole_word_masking",
        hint="use tokenizer.type: wordpiece, or set whole_word_masking: false",
    )


def batch_seed(seed: int, spec: Any) -> int:
    """A generator seed from the run seed and what the batch holds (stable across processes)."""
    return (seed * 1_000_003 + zlib.crc32(np.asarray(spec, dtype=np.int64).tobytes())) % (2**63)


def mask_tokens(
    ids: torch.Tensor,
    special: torch.Tensor,
    o: ObjectiveConfig,
    s: Specials,
    gen: torch.Generator,
    starts: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose `mlm_probability` of the non-special tokens (or whole words); of those,
    `mask_replace_ratio` become the mask token, `random_replace_ratio` a random token, the rest stay.
    Returns (inputs, labels) with labels -100 where nothing is predicted."""
    import torch

    if starts is not None:
        # whole words: draw once per word (at its first piece), then spread the draw over its pieces
        is_start = torch.from_numpy(starts)[ids] | special
        word = torch.cumsum(is_start.long(), dim=1)  # (B, T) word number of each token
        draw = torch.rand(ids.shape, generator=gen) < o.mlm_probability
        word_chosen = torch.zeros(ids.shape[0], int(word.max()) + 1, dtype=torch.bool)
        rows, cols = is_start.nonzero(as_tuple=True)
        word_chosen[rows, word[rows, cols]] = draw[rows, cols]
        chosen = word_chosen.gather(1, word) & ~special
    else:
        chosen = (torch.rand(ids.shape, generator=gen) < o.mlm_probability) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=gen)
    to_mask = chosen & (roll < o.mask_replace_ratio)
    to_random = (
        chosen & (roll >= o.mask_replace_ratio) & (roll < o.mask_replace_ratio + o.random_replace_ratio)
    )
    inputs = ids.clone()
    inputs[to_mask] = s.mask
    inputs[to_random] = torch.randint(s.vocab, ids.shape, generator=gen)[to_random]
    return inputs, labels


# ---------------------------------------------------------------------------------------------
# Packed blocks: [CLS] + T-2 tokens of the stream + [SEP]


def epoch_batches_packed(
    n_tokens: int, length: int, batch_size: int, *, seed: int, epoch: int
) -> list[np.ndarray]:
    starts = corpus.block_starts(n_tokens, length - 2, length - 2, seed=seed, epoch=epoch, shuffle=True)
    return [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]


def collate_packed(
    bodies: np.ndarray, s: Specials, o: ObjectiveConfig, seed: int, device: Any, ws: np.ndarray | None
) -> dict[str, torch.Tensor]:
    """(B, T-2) stream slices → [CLS] slice [SEP], masked."""
    import torch

    body = torch.from_numpy(bodies.astype(np.int64))
    b = body.shape[0]
    x = torch.cat([torch.full((b, 1), s.cls), body, torch.full((b, 1), s.sep)], dim=1)
    special = (x == s.cls) | (x == s.sep) | (x == s.pad)
    gen = torch.Generator().manual_seed(batch_seed(seed, bodies[:, :8]))
    inputs, labels = mask_tokens(x, special, o, s, gen, ws)
    return {
        "input_ids": inputs.to(device),
        "attention_mask": torch.ones_like(inputs).to(device),
        "labels": labels.to(device),
    }


# ---------------------------------------------------------------------------------------------
# One document (line) per example


def _masked_rows(
    rows: list[list[int]], s: Specials, o: ObjectiveConfig, gen_seed: int, ws: np.ndarray | None
) -> dict[str, torch.Tensor]:
    """Pad token rows, then mask them (never special tokens or padding)."""
    import torch

    from ptft_cli.batching import attention_mask, pad

    x = pad(rows, s.pad)
    mask = attention_mask(rows)
    special = (x == s.cls) | (x == s.sep) | (mask == 0)
    inputs, labels = mask_tokens(x, special, o, s, torch.Generator().manual_seed(gen_seed), ws)
    return {"input_ids": inputs, "attention_mask": mask, "labels": labels}


def collate_segments(
    segs: corpus.Segments,
    idx: list[int],
    s: Specials,
    o: ObjectiveConfig,
    seed: int,
    device: Any,
    ws: np.ndarray | None,
) -> dict[str, torch.Tensor]:
    rows = [[s.cls, *segs.get(i).tolist(), s.sep] for i in idx]
    batch = _masked_rows(rows, s, o, batch_seed(seed, idx), ws)
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Next-sentence prediction pairs (BERT's recipe, simplified: no short-sequence sampling)


@dataclass
class Pair:
    a: np.ndarray
    b: np.ndarray
    is_random: bool


def nsp_pairs(sents: corpus.Segments, length: int, random_ratio: float, seed: int) -> list[Pair]:
    """Fill examples with consecutive sentences of a document, split them into A and B; with
    probability `random_ratio`, B is replaced by sentences from another document."""
    rng = random.Random(seed)
    budget = length - 3  # [CLS] A [SEP] B [SEP]
    docs: dict[int, list[int]] = {}
    for i, d in enumerate(sents.doc.tolist()):
        docs.setdefault(d, []).append(i)
    doc_ids = list(docs)
    pairs: list[Pair] = []
    for d in doc_ids:
        chunk: list[int] = []
        size = 0
        members = docs[d]
        for j, i in enumerate(members):
            chunk.append(i)
            size += len(sents.get(i))
            if size < budget and j < len(members) - 1:
                continue
            if len(chunk) >= 2 or len(doc_ids) > 1:
                cut = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = np.concatenate([sents.get(k) for k in chunk[:cut]])
                if len(chunk) == 1 or (len(doc_ids) > 1 and rng.random() < random_ratio):
                    other = d
                    while other == d and len(doc_ids) > 1:
                        other = doc_ids[rng.randrange(len(doc_ids))]
                    start = rng.randrange(len(docs[other]))
                    b = np.concatenate([sents.get(k) for k in docs[other][start : start + 8]])
                    is_random = True
                else:
                    b = np.concatenate([sents.get(k) for k in chunk[cut:]])
                    is_random = False
                # trim the longer side until the pair fits (both end up near budget / 2)
                if len(a) + len(b) > budget:
                    keep_a = min(len(a), max(budget // 2, budget - len(b)))
                    a, b = a[:keep_a], b[: budget - keep_a]
                if len(a) and len(b):
                    pairs.append(Pair(a, b, is_random))
            chunk, size = [], 0
    return pairs


def collate_pairs(
    pairs: list[Pair],
    idx: list[int],
    s: Specials,
    o: ObjectiveConfig,
    seed: int,
    device: Any,
    ws: np.ndarray | None,
) -> dict[str, torch.Tensor]:
    import torch

    from ptft_cli.batching import pad

    rows = [[s.cls, *pairs[i].a.tolist(), s.sep, *pairs[i].b.tolist(), s.sep] for i in idx]
    types = [[0] * (len(pairs[i].a) + 2) + [1] * (len(pairs[i].b) + 1) for i in idx]
    batch = _masked_rows(rows, s, o, batch_seed(seed, idx), ws)
    batch["token_type_ids"] = pad(types, 0)
    # HF convention: 0 = B follows A, 1 = B is random
    batch["next_sentence_label"] = torch.tensor([int(pairs[i].is_random) for i in idx])
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Loss and scoring


def _forward(model: Any, batch: dict[str, torch.Tensor], hw: Hardware) -> Any:
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with hw.autocast():
        return model(**inputs)


def loss_sum(model: Any, batch: dict[str, torch.Tensor], hw: Hardware) -> torch.Tensor:
    """Summed cross-entropy over masked tokens; with NSP, plus the pair loss weighted so that the
    step's loss is mean-MLM + mean-NSP, as in BERT."""
    import torch.nn.functional as F

    out = _forward(model, batch, hw)
    logits = out.logits if hasattr(out, "logits") else out.prediction_logits
    total = lm.summed_cross_entropy(logits, batch["labels"])
    if "next_sentence_label" in batch:
        nsp = F.cross_entropy(out.seq_relationship_logits.float(), batch["next_sentence_label"])
        total = total + nsp * count(batch)
    return total


def count(batch: dict[str, torch.Tensor]) -> int:
    return max(1, int((batch["labels"] != -100).sum()))


def evaluate(model: Any, batches: list[dict[str, torch.Tensor]], hw: Hardware) -> dict[str, Any]:
    """Masked-token loss, perplexity and accuracy (and NSP accuracy) on fixed, pre-masked batches."""
    import torch
    import torch.nn.functional as F

    nats, targets, correct, nsp_right, pairs = 0.0, 0, 0, 0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            out = _forward(model, batch, hw)
            logits = (out.logits if hasattr(out, "logits") else out.prediction_logits).float()
            labels = batch["labels"]
            nats += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            chosen = labels != -100
            targets += int(chosen.sum())
            correct += int((logits.argmax(-1)[chosen] == labels[chosen]).sum())
            if "next_sentence_label" in batch:
                nsp_right += int(
                    (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
                )
                pairs += len(batch["next_sentence_label"])
    model.train(was_training)
    metrics = lm.lm_metrics(nats, targets, None, None)
    metrics["masked_accuracy"] = correct / max(1, targets)
    if pairs:
        metrics["nsp_accuracy"] = nsp_right / pairs
    return metrics
