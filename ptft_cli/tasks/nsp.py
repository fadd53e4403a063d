"""BERT's original pretraining: masked LM plus next-sentence prediction (task `mlm+nsp`).

Examples are sentence pairs, consecutive within a document or (with probability
`objective.nsp_random_ratio`) with the second part taken from another document; the masking is
the masked LM's (`tasks/mlm.py`), the model `BertForPreTraining`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ptft_cli.config import Config
from ptft_cli.data import corpus
from ptft_cli.errors import ConfigError, DataError
from ptft_cli.models import Head
from ptft_cli.tasks import Inputs, Loaded, lm, mlm
from ptft_cli.tasks.lm import METRICS, PREDICTION_FORMATS, evaluation_inputs, prediction_inputs
from ptft_cli.tasks.mlm import evaluate, shown

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData

__all__ = ["METRICS", "PREDICTION_FORMATS", "evaluate", "evaluation_inputs", "prediction_inputs", "shown"]

NAME = "mlm+nsp"
TITLE = "masked LM + next-sentence prediction"
COMMANDS = ("pretrain",)


def check_config(cfg: Config) -> list[ConfigError]:
    return (
        lm.check_architecture(
            cfg,
            ("bert",),
            "next-sentence prediction is BERT's objective, not {arch}'s",
            "use architecture: bert, or task: mlm",
        )
        + lm.check_packing(cfg)
        + mlm.check_length(cfg, 5, "[CLS] A [SEP] B [SEP]")
    )


def read_inputs(cfg: Config, command: str) -> Inputs:
    mlm.check_encoder(cfg)
    family = lm.pretrained_family(cfg)
    if family and family[1] != "bert":
        raise lm.refuse_pretrained(
            cfg,
            f"next-sentence prediction needs a BERT model, {cfg.model.name_or_path} is {family[1]}",
            "use task: mlm",
        )
    return lm.read_inputs(cfg, command)


def head(cfg: Config, inputs: Inputs | None) -> Head:
    return Head("AutoModelForPreTraining", "a BERT pretraining model (masked LM + NSP)", cls_sep=True)


def training_data(cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
    from ptft_cli.data import cache, sampler
    from ptft_cli.loop import TrainingData

    c: lm.Corpus = inputs.data
    assert c.texts is not None
    t, d, o = cfg.training, cfg.data, cfg.objective
    T, seed, device = cfg.tokenizer.max_length, cfg.seed, hw.device
    masking = mlm.Masking.of(tokenizer, o)
    sents, val_sents, cached = cache.token_segments(cfg, c.files, c.texts, tokenizer, sentences=True)
    pairs = nsp_pairs(sents, T, o.nsp_random_ratio, seed)
    if not pairs:
        raise DataError(
            "no sentence pairs could be built from the corpus",
            where=str(c.files.train[0]) if c.files.train else cfg.where("data"),
            key="data.train",
            hint="NSP needs documents of 2+ sentences",
        )
    val_pairs = nsp_pairs(val_sents, T, o.nsp_random_ratio, seed + 1) if val_sents is not None else []
    lengths = [len(p.a) + len(p.b) + 3 for p in pairs]
    val_specs = sampler.inference_batches(
        [len(p.a) + len(p.b) + 3 for p in val_pairs][: d.max_eval_samples], t.eval_batch_size
    )
    val_batches = [collate_pairs(val_pairs, idx, masking, mlm.EVAL_MASK_SEED, device) for idx in val_specs]
    return TrainingData(
        batches=sampler.EpochBatches(
            lambda epoch: sampler.epoch_batches(
                lengths,
                sampler.global_batch(t, hw.world.size),
                seed=seed,
                epoch=epoch,
                group_by_length=t.group_by_length,
            )
        ),
        collate=lambda idx: collate_pairs(pairs, idx, masking, seed, device),
        loss_sum=lambda m, b: mlm.loss_sum(m, b, hw.autocast),
        count=mlm.count,
        evaluate=(lambda m: mlm.score_batches(m, val_batches, hw)) if val_batches else None,
        lower_is_better=lm.LOWER_IS_BETTER,
        tokens=lm.tokens_in,
        seq_len=T,
        summary=[
            ("task", TITLE),
            ("train", f"{len(pairs):,} sentence pairs{cached}"),
            ("validation", f"{len(val_pairs):,} sentence pairs"),
        ],
    )


def predict(
    cfg: Config,
    inputs: Inputs,
    loaded: Loaded,
    progress: Callable[[int], None],
    stream: Callable[[str], None] | None = None,  # not used: nothing to stream
) -> list[dict[str, Any]]:
    return lm.fill_mask(cfg, inputs, loaded, progress)


# ---------------------------------------------------------------------------------------------
# Sentence pairs (BERT's recipe, simplified: no short-sequence sampling)


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
    pairs: list[Pair], idx: list[int], masking: mlm.Masking, seed: int, device: Any
) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP], masked, with segment ids and the is-random label."""
    import torch

    from ptft_cli.data.collate import pad

    s = masking.specials
    rows = [[s.cls, *pairs[i].a.tolist(), s.sep, *pairs[i].b.tolist(), s.sep] for i in idx]
    types = [[0] * (len(pairs[i].a) + 2) + [1] * (len(pairs[i].b) + 1) for i in idx]
    batch = mlm.masked_rows(rows, masking, mlm.batch_seed(seed, idx))
    batch["token_type_ids"] = pad(types, 0)
    # HF convention: 0 = B follows A, 1 = B is random
    batch["next_sentence_label"] = torch.tensor([int(pairs[i].is_random) for i in idx])
    return {k: v.to(device) for k, v in batch.items()}
