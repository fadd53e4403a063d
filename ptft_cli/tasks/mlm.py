"""Masked LM (BERT/RoBERTa): masking, packed blocks or one document per example, loss, scoring,
fill-mask. BERT's next-sentence prediction builds on it in `tasks/nsp.py`.

Masks are drawn when a batch is built, from a generator seeded by the run seed and the batch's
contents, so every epoch masks differently (dynamic masking, as RoBERTa) yet a rerun, or a
resumed run, masks exactly the same way.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ptft_cli.config import ENCODERS, Config, ObjectiveConfig
from ptft_cli.data import corpus
from ptft_cli.errors import ConfigError, DataError
from ptft_cli.models import Head
from ptft_cli.tasks import Inputs, Loaded, lm
from ptft_cli.tasks.lm import METRICS, PREDICTION_FORMATS, evaluation_inputs, prediction_inputs

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData

__all__ = ["METRICS", "PREDICTION_FORMATS", "evaluation_inputs", "prediction_inputs"]

NAME = "mlm"
TITLE = "masked LM"
COMMANDS = ("pretrain",)
EVAL_MASK_SEED = 12345  # validation batches are masked once, so every evaluation scores the same targets


def check_config(cfg: Config) -> list[ConfigError]:
    return lm.check_architecture(
        cfg, ENCODERS, "{arch} is a decoder; masked LM needs an encoder", f"allowed: {', '.join(ENCODERS)}"
    ) + check_length(cfg, 4, "[CLS], a token and [SEP]")


def check_length(cfg: Config, least: int, what: str) -> list[ConfigError]:
    """A masked-LM example holds its special tokens and at least one token of text."""
    if cfg.tokenizer.max_length >= least:
        return []
    key = "tokenizer.max_length"
    return [
        ConfigError(
            f"{cfg.tokenizer.max_length} tokens cannot hold {what}",
            where=cfg.where(key),
            key=key,
            hint=f"use {least} or more",
        )
    ]


def check_encoder(cfg: Config) -> None:
    family = lm.pretrained_family(cfg)
    if family and family[0] == "decoder":
        raise lm.refuse_pretrained(
            cfg,
            f"{cfg.model.name_or_path} is a {family[1]} decoder; masked LM needs an encoder",
            "use task: clm, or an encoder such as bert",
        )


def read_inputs(cfg: Config, command: str) -> Inputs:
    check_encoder(cfg)
    return lm.read_inputs(cfg, command)


def head(cfg: Config, inputs: Inputs | None) -> Head:
    return Head("AutoModelForMaskedLM", "a masked LM", cls_sep=True)


def training_data(cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
    """Packed blocks ([CLS] + T-2 tokens of the stream + [SEP]), streamed or in memory, or one
    document per example (data.packing: false); masked per batch."""
    from ptft_cli.data import cache, sampler
    from ptft_cli.loop import TrainingData

    c: lm.Corpus = inputs.data
    t, d, o = cfg.training, cfg.data, cfg.objective
    T, seed, device = cfg.tokenizer.max_length, cfg.seed, hw.device
    step = sampler.global_batch(t, hw.world.size)
    masking = Masking.of(tokenizer, o)
    sep = lm.separator_id(tokenizer, causal=False)
    cached = ""
    if not d.packing:
        assert c.texts is not None
        segs, val_segs, cached = cache.token_segments(cfg, c.files, c.texts, tokenizer, sentences=False)
        lengths = [n + 2 for n in segs.lengths()]
        collate_train = lambda idx: collate_segments(segs, idx, masking, seed, device)
        val_batches = [
            collate_segments(val_segs, idx, masking, EVAL_MASK_SEED, device)
            for idx in sampler.inference_batches([n + 2 for n in val_segs.lengths()][: d.max_eval_samples], t.eval_batch_size)
        ] if val_segs is not None else []  # fmt: skip
        batches: sampler.BatchSource = sampler.EpochBatches(
            lambda epoch: sampler.epoch_batches(
                lengths, step, seed=seed, epoch=epoch, group_by_length=t.group_by_length
            )
        )
        sizes = (
            f"{len(segs):,} documents{cached}",
            f"{len(val_segs):,} documents" if val_segs is not None else "none",
        )
    else:
        if d.streaming:
            val = lm.stream_validation(cfg, c.files, tokenizer, sep)
            batches = lm.stream_batches(cfg, c.files, tokenizer, sep, (T - 2, T - 2), hw.world.size)
            collate_train = lambda body: collate_packed(body, masking, seed, device)
            train_size = lm.describe_stream(cfg, c.files)
        else:
            assert c.texts is not None
            train, val, cached = cache.token_streams(cfg, c.files, c.texts, tokenizer, sep)
            ids = train.ids
            lm.check_enough(cfg, len(ids), T - 2)
            batches = sampler.EpochBatches(
                lambda epoch: sampler.block_batches(len(ids), T - 2, T - 2, step, seed=seed, epoch=epoch)
            )
            collate_train = lambda starts: collate_packed(
                ids[starts[:, None] + np.arange(T - 2)[None, :]], masking, seed, device
            )
            train_size = lm.describe_tokens(train, cached)
        bodies = val_bodies(val, T, d.max_eval_samples, t.eval_batch_size) if val is not None else []
        val_batches = [collate_packed(b, masking, EVAL_MASK_SEED, device) for b in bodies]
        sizes = (train_size, lm.describe_tokens(val))

    return TrainingData(
        batches=batches,
        collate=collate_train,
        loss_sum=lambda m, b: loss_sum(m, b, hw.autocast),
        count=count,
        evaluate=(lambda m: score_batches(m, val_batches, hw)) if val_batches else None,
        lower_is_better=lm.LOWER_IS_BETTER,
        tokens=lm.tokens_in,
        seq_len=T,
        summary=[("task", TITLE), ("train", sizes[0]), ("validation", sizes[1])],
    )


def evaluate(cfg: Config, inputs: Inputs, loaded: Loaded, progress: Callable[[int], None]) -> dict[str, Any]:
    """Masked-token loss, perplexity and accuracy on packed blocks of the text, masked once."""
    paths, pieces, key = inputs.data
    tokenizer, T = loaded.tokenizer, cfg.tokenizer.max_length
    masking = Masking.of(tokenizer, cfg.objective)
    stream = corpus.tokenize_stream(pieces, tokenizer, lm.separator_id(tokenizer, causal=False))
    bodies = val_bodies(stream, T, cfg.data.max_eval_samples, cfg.training.eval_batch_size)
    batches = [collate_packed(b, masking, EVAL_MASK_SEED, loaded.hw.device) for b in bodies]
    if not batches:
        raise DataError(f"the text is shorter than one block of {T} tokens", where=str(paths[0]), key=key)
    return score_batches(loaded.model, batches, loaded.hw)


def predict(
    cfg: Config,
    inputs: Inputs,
    loaded: Loaded,
    progress: Callable[[int], None],
    stream: Callable[[str], None] | None = None,  # not used: nothing to stream
) -> list[dict[str, Any]]:
    return lm.fill_mask(cfg, inputs, loaded, progress)


SHOWN_CANDIDATES = 5  # fill-mask candidates per mask on the terminal (predictions.jsonl has predict.top_k)


def shown(row: dict[str, Any]) -> str:
    """The text with each mask filled by its top token, then each mask's top candidates with their
    probabilities: one guess says little about what the model learnt, five do."""
    lines = [row["filled"]]
    for n, mask in enumerate(row["masks"], 1):
        top = mask["predictions"][:SHOWN_CANDIDATES]
        lines.append(f"  mask {n}: " + "  ".join(f"{p['token']} {p['score']:.3f}" for p in top))
    return "\n".join(lines)


def val_bodies(
    val: corpus.TokenStream, length: int, max_blocks: int | None, batch_size: int
) -> list[np.ndarray]:
    """Non-overlapping validation blocks (contents without CLS/SEP), batched."""
    from ptft_cli.data.sampler import block_starts

    ids = val.ids
    starts = block_starts(len(ids), length - 2, length - 2, seed=0, epoch=0, shuffle=False)[:max_blocks]
    bodies = (
        ids[starts[:, None] + np.arange(length - 2)[None, :]]
        if len(starts)
        else np.zeros((0, length - 2), np.uint32)
    )
    return [bodies[i : i + batch_size] for i in range(0, len(bodies), batch_size)]


# ---------------------------------------------------------------------------------------------
# Masking


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


@dataclass(frozen=True, eq=False)
class Masking:
    """How batches are masked: the tokenizer's special ids, the objective's ratios, and which
    vocabulary entries start a word (whole-word masking only)."""

    specials: Specials
    objective: ObjectiveConfig
    word_starts: np.ndarray | None = None

    @classmethod
    def of(cls, tokenizer: Any, objective: ObjectiveConfig) -> Masking:
        starts = word_starts(tokenizer) if objective.whole_word_masking else None
        return cls(Specials.of(tokenizer), objective, starts)


def collate_packed(bodies: np.ndarray, masking: Masking, seed: int, device: Any) -> dict[str, torch.Tensor]:
    """(B, T-2) stream slices → [CLS] slice [SEP], masked."""
    import torch

    s = masking.specials
    body = torch.from_numpy(bodies.astype(np.int64))
    b = body.shape[0]
    x = torch.cat([torch.full((b, 1), s.cls), body, torch.full((b, 1), s.sep)], dim=1)
    special = (x == s.cls) | (x == s.sep) | (x == s.pad)
    gen = torch.Generator().manual_seed(batch_seed(seed, bodies[:, :8]))
    inputs, labels = mask_tokens(x, special, masking.objective, s, gen, masking.word_starts)
    return {
        "input_ids": inputs.to(device),
        "attention_mask": torch.ones_like(inputs).to(device),
        "labels": labels.to(device),
    }


# ---------------------------------------------------------------------------------------------
# One document (line) per example


def masked_rows(rows: list[list[int]], masking: Masking, gen_seed: int) -> dict[str, torch.Tensor]:
    """Pad token rows, then mask them (never special tokens or padding)."""
    import torch

    from ptft_cli.data.collate import attention_mask, pad

    s = masking.specials
    x = pad(rows, s.pad)
    mask = attention_mask(rows)
    special = (x == s.cls) | (x == s.sep) | (mask == 0)
    gen = torch.Generator().manual_seed(gen_seed)
    inputs, labels = mask_tokens(x, special, masking.objective, s, gen, masking.word_starts)
    return {"input_ids": inputs, "attention_mask": mask, "labels": labels}


def collate_segments(
    segs: corpus.Segments, idx: list[int], masking: Masking, seed: int, device: Any
) -> dict[str, torch.Tensor]:
    s = masking.specials
    rows = [[s.cls, *segs.get(i).tolist(), s.sep] for i in idx]
    batch = masked_rows(rows, masking, batch_seed(seed, idx))
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Loss and scoring


def _forward(model: Any, batch: dict[str, torch.Tensor], autocast: Callable[[], Any]) -> Any:
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with autocast():
        return model(**inputs)


def _logits(out: Any) -> torch.Tensor:
    # BertForPreTraining (masked LM + NSP) calls them prediction_logits
    return out.logits if hasattr(out, "logits") else out.prediction_logits


def loss_sum(model: Any, batch: dict[str, torch.Tensor], autocast: Callable[[], Any]) -> torch.Tensor:
    """Summed cross-entropy over masked tokens; with NSP, plus the pair loss weighted so that the
    step's loss is mean-MLM + mean-NSP, as in BERT."""
    import torch.nn.functional as F

    out = _forward(model, batch, autocast)
    logits = _logits(out)
    total = lm.summed_cross_entropy(logits, batch["labels"])
    if "next_sentence_label" in batch:
        nsp = F.cross_entropy(out.seq_relationship_logits.float(), batch["next_sentence_label"])
        total = total + nsp * count(batch)
    return total


def count(batch: dict[str, torch.Tensor]) -> int:
    return max(1, int((batch["labels"] != -100).sum()))


def score_batches(model: Any, batches: list[dict[str, torch.Tensor]], hw: Hardware) -> dict[str, Any]:
    """Masked-token loss, perplexity and accuracy (and NSP accuracy) on fixed, pre-masked batches."""
    import torch
    import torch.nn.functional as F

    def run(batch: dict[str, torch.Tensor]) -> tuple[float, int, int, int, int]:
        with torch.inference_mode():
            out = _forward(model, batch, hw.eval_autocast)
            logits = _logits(out).float()
            labels = batch["labels"]
            nats = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            chosen = labels != -100
            correct = int((logits.argmax(-1)[chosen] == labels[chosen]).sum())
            nsp_right = pairs = 0
            if "next_sentence_label" in batch:
                nsp_right = int(
                    (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
                )
                pairs = len(batch["next_sentence_label"])
        return nats, int(chosen.sum()), correct, nsp_right, pairs

    was_training = model.training
    model.eval()
    # in a distributed run each process scores every N-th batch; the sums run in batch order
    results = hw.world.map_shards(batches, run)
    model.train(was_training)
    nats = sum(r[0] for r in results)
    targets, correct, nsp_right, pairs = (sum(r[k] for r in results) for k in range(1, 5))
    metrics = lm.lm_metrics(nats, targets, None, None)
    metrics["masked_accuracy"] = correct / max(1, targets)
    if pairs:
        metrics["nsp_accuracy"] = nsp_right / pairs
    return metrics
