"""Language modelling: pretrain (masked LM, masked LM + NSP, causal LM; new or continued), continued
causal-LM fine-tuning, and evaluate / predict / validate for language models.

`train` reads in dependency order: the corpus (all data errors surface here, before anything is
written), then the tokenizer (trained on the training split if asked), the model (sized to the
tokenizer), the token arrays (cached), the objective's batches, and finally the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptft_cli import console, corpus
from ptft_cli.checkpoint import RunDir, atomic_write_json, atomic_write_text
from ptft_cli.config import PRETRAIN_TASKS, Config
from ptft_cli.errors import ConfigError, DataError, RunDirError
from ptft_cli.recipes.common import check_output_dir, fit, trained_model_ref
from ptft_cli.tasks import lm

# ---------------------------------------------------------------------------------------------
# Preflight (pure Python)


def _check_inputs(cfg: Config, command: str) -> lm.CorpusFiles:
    """Everything about the model, tokenizer and data that can be checked without loading them."""
    from ptft_cli import models

    files = lm.corpus_files(cfg)
    m = cfg.model
    if command == "finetune" and not m.name_or_path:
        raise ConfigError(
            "fine-tuning needs a pretrained model",
            where=cfg.where("model"),
            key="model.name_or_path",
            hint="`ptft pretrain` builds new models",
        )
    if not m.name_or_path and not m.architecture:
        raise ConfigError(
            "no model: name a pretrained one or an architecture to build",
            where=cfg.where("model"),
            key="model.name_or_path",
            hint="set model.name_or_path, or model.architecture (bert, roberta, gpt2, llama, ...) with a size",
        )
    if m.name_or_path:
        models.check_ref(m.name_or_path, "model.name_or_path", cfg.where("model.name_or_path"))
        lm.check_objective_fits_model(cfg, m.name_or_path)
    if cfg.tokenizer.name_or_path:
        models.check_ref(
            cfg.tokenizer.name_or_path,
            "tokenizer.name_or_path",
            cfg.where("tokenizer.name_or_path"),
            what="tokenizer",
        )
    if (
        cfg.training.best_metric
        and not (files.validation or files.hub_validation)
        and (cfg.data.validation_fraction == 0 or cfg.data.streaming)
    ):
        raise ConfigError(
            "needs validation data to compare models",
            where=cfg.where("training.best_metric"),
            key="training.best_metric",
        )
    return files


def _iter_pieces(cfg: Config, paths: list[Path], hub_split: str | None = None) -> Any:
    d = cfg.data
    if hub_split is not None:
        assert d.dataset is not None
        return corpus.iter_hub_pieces(
            d.dataset, d.dataset_config, hub_split, text_column=d.text_column, streaming=d.streaming
        )
    return corpus.iter_pieces(paths, fmt=d.format, text_column=d.text_column, boundary=d.document_boundary)


def _pieces(cfg: Config, paths: list[Path], hub_split: str | None = None) -> list[corpus.Piece]:
    return list(_iter_pieces(cfg, paths, hub_split))


def _where(files: lm.CorpusFiles, cfg: Config, split: str) -> str:
    paths = files.train if split == "train" else files.validation
    return str(paths[0]) if paths else f"dataset {cfg.data.dataset}"


@dataclass
class Texts:
    """The corpus read into memory and split (non-streaming runs)."""

    train: list[corpus.Piece]
    validation: list[corpus.Piece]


def read_texts(cfg: Config, files: lm.CorpusFiles) -> Texts:
    train = _pieces(cfg, files.train, files.hub_train)
    if not any(p.text.strip() for p in train):
        raise DataError(
            "the training corpus is empty",
            where=_where(files, cfg, "train"),
            key="data.train",
            hint="point data.train at text files with content",
        )
    if files.validation or files.hub_validation:
        validation = _pieces(cfg, files.validation, files.hub_validation)
        if not any(p.text.strip() for p in validation):
            raise DataError(
                "the validation corpus is empty",
                where=_where(files, cfg, "validation"),
                key="data.validation",
            )
    elif cfg.data.validation_fraction > 0:
        train, validation = corpus.split_tail(train, cfg.data.validation_fraction)
    else:
        validation = []
    return Texts(train, validation)


def validate(cfg: Config) -> None:
    files = _check_inputs(cfg, "pretrain" if cfg.task in PRETRAIN_TASKS else "finetune")
    rows: list[tuple[str, Any]] = [
        ("task", cfg.task),
        ("model", cfg.model.name_or_path or f"new {cfg.model.architecture}"),
    ]
    if cfg.data.streaming:
        rows.append(("train", f"{len(files.train)} file(s), streamed (read when training starts)"))
    else:
        texts = read_texts(cfg, files)
        rows.append(
            ("train", f"{sum(len(p.text) for p in texts.train):,} characters in {len(files.train)} file(s)")
        )
        rows.append(
            (
                "validation",
                f"{sum(len(p.text) for p in texts.validation):,} characters" if texts.validation else "none",
            )
        )
    rows.append(("output_dir", cfg.output_dir))
    console.key_values(f"{cfg.source}: valid", rows)
    try:
        RunDir(cfg.output_dir).check_claimable(overwrite=False, where=cfg.where("output_dir"))
    except RunDirError as e:
        console.warn(f"training would refuse to start: {e.line()}")


# ---------------------------------------------------------------------------------------------
# Token arrays (cached)


def _cache_dir(cfg: Config) -> str | None:
    # A Hugging Face dataset has no files to fingerprint (and `datasets` caches it already).
    return None if cfg.data.dataset else cfg.data.cache_dir


def _options(cfg: Config, unit: str) -> dict[str, Any]:
    d = cfg.data
    return {
        "unit": unit,
        "task": cfg.task,
        "boundary": d.document_boundary,
        "format": d.format,
        "text_column": d.text_column,
        "validation_fraction": d.validation_fraction,
        "max_length": cfg.tokenizer.max_length,
    }


def token_streams(
    cfg: Config, files: lm.CorpusFiles, texts: Texts, tokenizer: Any
) -> tuple[corpus.TokenStream, corpus.TokenStream | None, bool]:
    """Train and validation token streams, from the cache when the files, tokenizer and options match."""
    from ptft_cli.tokenizer_train import fingerprint

    sep = lm.separator_id(tokenizer, cfg.task)
    key = corpus.cache_key(
        files.train + files.validation, fingerprint(tokenizer), _options(cfg, f"stream-{sep}")
    )
    hit = corpus.cache_load(_cache_dir(cfg), key)
    if hit is not None:
        meta = hit["meta"]
        train = corpus.TokenStream(hit["train"], meta["train_chars"], meta["train_bytes"])
        val = (
            corpus.TokenStream(hit["validation"], meta["val_chars"], meta["val_bytes"])
            if meta["has_validation"]
            else None
        )
        return train, val, True
    train = corpus.tokenize_stream(texts.train, tokenizer, sep)
    val = corpus.tokenize_stream(texts.validation, tokenizer, sep) if texts.validation else None
    arrays = {"train": train.ids, "validation": val.ids if val else np.zeros(0, dtype=np.uint32)}
    meta = {
        "train_chars": train.chars,
        "train_bytes": train.bytes,
        "val_chars": val.chars if val else 0,
        "val_bytes": val.bytes if val else 0,
        "has_validation": val is not None,
    }
    corpus.cache_save(_cache_dir(cfg), key, arrays, meta)
    return train, val, False


def token_segments(
    cfg: Config, files: lm.CorpusFiles, texts: Texts, tokenizer: Any, *, sentences: bool
) -> tuple[corpus.Segments, corpus.Segments | None, bool]:
    from ptft_cli.tokenizer_train import fingerprint

    max_tokens = cfg.tokenizer.max_length - 2
    key = corpus.cache_key(
        files.train + files.validation,
        fingerprint(tokenizer),
        _options(cfg, "sentences" if sentences else "documents"),
    )
    hit = corpus.cache_load(_cache_dir(cfg), key)
    if hit is not None:
        train = corpus.Segments(hit["train_ids"], hit["train_offsets"], hit["train_doc"])
        val = (
            corpus.Segments(hit["val_ids"], hit["val_offsets"], hit["val_doc"])
            if hit["meta"]["has_validation"]
            else None
        )
        return train, val, True
    train = corpus.tokenize_segments(texts.train, tokenizer, sentences=sentences, max_tokens=max_tokens)
    val = (
        corpus.tokenize_segments(texts.validation, tokenizer, sentences=sentences, max_tokens=max_tokens)
        if texts.validation
        else None
    )
    empty = corpus.Segments(np.zeros(0, np.uint32), np.zeros(1, np.int64), np.zeros(0, np.int64))
    v = val or empty
    arrays = {
        "train_ids": train.ids, "train_offsets": train.offsets, "train_doc": train.doc,
        "val_ids": v.ids, "val_offsets": v.offsets, "val_doc": v.doc,
    }  # fmt: skip
    corpus.cache_save(_cache_dir(cfg), key, arrays, {"has_validation": val is not None})
    return train, val, False


# ---------------------------------------------------------------------------------------------
# Objectives: how batches are made and scored


@dataclass
class Objective:
    hooks: Any  # loop.TaskHooks
    n_batches: int | None
    train_size: str  # for the header
    validation_size: str


def _objective(
    cfg: Config, files: lm.CorpusFiles, texts: Texts | None, tokenizer: Any, hw: Any, flops: float
) -> tuple[Objective, bool]:
    """Build the batch order, collation, loss and evaluation of the configured objective."""
    build = _clm_objective if cfg.task == "clm" else _mlm_objective
    return build(cfg, files, texts, tokenizer, hw, flops)


def _lower_is_better(name: str) -> bool:
    return name in lm.LOWER_IS_BETTER


def _tokens_in(batch: dict) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def _clm_objective(
    cfg: Config, files: lm.CorpusFiles, texts: Texts | None, tokenizer: Any, hw: Any, flops: float
) -> tuple[Objective, bool]:
    """Causal LM: T+1-token blocks of the packed stream (or of the stream read on the fly)."""
    from ptft_cli import loop
    from ptft_cli.tasks import clm

    t, d = cfg.training, cfg.data
    T, seed, device = cfg.tokenizer.max_length, cfg.seed, hw.device
    if d.streaming:
        train, val, cached = None, _stream_validation(cfg, files, tokenizer), False
        batches_of = lambda epoch: _stream_batches(cfg, files, tokenizer, T + 1, T, epoch)
        collate = lambda blocks: clm.collate_blocks(blocks, device)
        n_batches = None
    else:
        assert texts is not None
        train, val, cached = token_streams(cfg, files, texts, tokenizer)
        ids = train.ids
        _check_enough(cfg, len(ids), T + 1)
        batches_of = lambda epoch: clm.epoch_batches(len(ids), T, t.batch_size, seed=seed, epoch=epoch)
        collate = lambda starts: clm.collate_blocks(clm.gather(ids, starts, T + 1), device)
        n_batches = len(batches_of(0))
    hooks = loop.TaskHooks(
        epoch_batches=batches_of,
        collate=collate,
        loss_sum=lambda m, b: clm.loss_sum(m, b, hw),
        count=lambda b: b["labels"].numel(),
        evaluate=(lambda m: clm.evaluate(m, val, T, t.eval_batch_size, hw, d.max_eval_samples))
        if val is not None
        else None,
        lower_is_better=_lower_is_better,
        tokens=_tokens_in,
        flops_per_token=flops,
    )
    size = _tokens(train) if train else _streamed(cfg, files)
    return Objective(hooks, n_batches, size, _tokens(val)), cached


def _mlm_objective(
    cfg: Config, files: lm.CorpusFiles, texts: Texts | None, tokenizer: Any, hw: Any, flops: float
) -> tuple[Objective, bool]:
    """Masked LM: packed blocks, one document per example, or NSP sentence pairs; masked per batch."""
    from ptft_cli import batching, loop
    from ptft_cli.tasks import mlm

    t, d, o = cfg.training, cfg.data, cfg.objective
    T, seed, device = cfg.tokenizer.max_length, cfg.seed, hw.device
    specials = mlm.Specials.of(tokenizer)
    ws = mlm.word_starts(tokenizer) if o.whole_word_masking else None

    def fixed_batches(specs: list[Any], collate: Any) -> list[dict]:
        """Validation batches masked once with a fixed seed, so every evaluation scores the same targets."""
        return [collate(spec, 12345) for spec in specs]

    if cfg.task == "mlm+nsp":
        assert texts is not None
        sents, val_sents, cached = token_segments(cfg, files, texts, tokenizer, sentences=True)
        pairs = mlm.nsp_pairs(sents, T, o.nsp_random_ratio, seed)
        if not pairs:
            raise DataError(
                "no sentence pairs could be built from the corpus",
                where=str(files.train[0]),
                key="data.train",
                hint="NSP needs documents of 2+ sentences",
            )
        val_pairs = mlm.nsp_pairs(val_sents, T, o.nsp_random_ratio, seed + 1) if val_sents is not None else []
        lengths = [len(p.a) + len(p.b) + 3 for p in pairs]
        collate_train = lambda idx, s=seed: mlm.collate_pairs(pairs, idx, specials, o, s, device, ws)
        collate_val = lambda idx, s: mlm.collate_pairs(val_pairs, idx, specials, o, s, device, ws)
        val_specs = batching.inference_batches(
            [len(p.a) + len(p.b) + 3 for p in val_pairs][: d.max_eval_samples], t.eval_batch_size
        )
        batches_of = lambda epoch: batching.epoch_batches(
            lengths, t.batch_size, seed=seed, epoch=epoch, group_by_length=t.group_by_length
        )
        sizes = (f"{len(pairs):,} sentence pairs", f"{len(val_pairs):,} sentence pairs")
    elif not d.packing:
        assert texts is not None
        segs, val_segs, cached = token_segments(cfg, files, texts, tokenizer, sentences=False)
        lengths = (np.diff(segs.offsets) + 2).tolist()
        collate_train = lambda idx, s=seed: mlm.collate_segments(segs, idx, specials, o, s, device, ws)
        collate_val = lambda idx, s: mlm.collate_segments(val_segs, idx, specials, o, s, device, ws)
        val_lengths = (np.diff(val_segs.offsets) + 2).tolist() if val_segs is not None else []
        val_specs = batching.inference_batches(val_lengths[: d.max_eval_samples], t.eval_batch_size)
        batches_of = lambda epoch: batching.epoch_batches(
            lengths, t.batch_size, seed=seed, epoch=epoch, group_by_length=t.group_by_length
        )
        sizes = (
            f"{len(segs):,} documents",
            f"{len(val_segs):,} documents" if val_segs is not None else "none",
        )
    elif d.streaming:
        val = _stream_validation(cfg, files, tokenizer)
        collate_train = lambda body, s=seed: mlm.collate_packed(body, specials, o, s, device, ws)
        collate_val = collate_train
        val_specs = _val_bodies(val, T, d.max_eval_samples, t.eval_batch_size) if val is not None else []
        batches_of = lambda epoch: _stream_batches(cfg, files, tokenizer, T - 2, T - 2, epoch)
        sizes = (_streamed(cfg, files), _tokens(val))
        cached, lengths = False, None
    else:
        assert texts is not None
        train, val, cached = token_streams(cfg, files, texts, tokenizer)
        ids = train.ids
        _check_enough(cfg, len(ids), T - 2)
        collate_train = lambda starts, s=seed: mlm.collate_packed(
            ids[starts[:, None] + np.arange(T - 2)[None, :]], specials, o, s, device, ws
        )
        collate_val = lambda body, s: mlm.collate_packed(body, specials, o, s, device, ws)
        val_specs = _val_bodies(val, T, d.max_eval_samples, t.eval_batch_size) if val is not None else []
        batches_of = lambda epoch: mlm.epoch_batches_packed(len(ids), T, t.batch_size, seed=seed, epoch=epoch)
        sizes = (_tokens(train), _tokens(val))
        lengths = None

    val_batches = fixed_batches(val_specs, collate_val) if val_specs else []
    hooks = loop.TaskHooks(
        epoch_batches=batches_of,
        collate=collate_train,
        loss_sum=lambda m, b: mlm.loss_sum(m, b, hw),
        count=mlm.count,
        evaluate=(lambda m: mlm.evaluate(m, val_batches, hw)) if val_batches else None,
        lower_is_better=_lower_is_better,
        tokens=_tokens_in,
        flops_per_token=flops,
    )
    n_batches = None if d.streaming else len(batches_of(0))
    return Objective(hooks, n_batches, *sizes), cached


def _streamed(cfg: Config, files: lm.CorpusFiles) -> str:
    return (
        f"streamed from dataset {cfg.data.dataset}"
        if cfg.data.dataset
        else f"streamed from {len(files.train)} file(s)"
    )


def _tokens(stream: corpus.TokenStream | None) -> str:
    if stream is None:
        return "none"
    return f"{len(stream.ids):,} tokens ({stream.chars:,} characters)"


def _check_enough(cfg: Config, n_tokens: int, span: int) -> None:
    if n_tokens < span + cfg.tokenizer.max_length:
        raise DataError(
            f"the training corpus has {n_tokens:,} tokens, too few for even two blocks of {cfg.tokenizer.max_length}",
            where=cfg.where("data.train"),
            key="data.train",
            hint="add text or lower tokenizer.max_length",
        )


def _val_bodies(
    val: corpus.TokenStream, length: int, max_blocks: int | None, batch_size: int
) -> list[np.ndarray]:
    """Non-overlapping validation blocks (contents without CLS/SEP), batched."""
    ids = val.ids
    starts = corpus.block_starts(len(ids), length - 2, length - 2, seed=0, epoch=0, shuffle=False)[
        :max_blocks
    ]
    bodies = (
        ids[starts[:, None] + np.arange(length - 2)[None, :]]
        if len(starts)
        else np.zeros((0, length - 2), np.uint32)
    )
    return [bodies[i : i + batch_size] for i in range(0, len(bodies), batch_size)]


def _stream_validation(cfg: Config, files: lm.CorpusFiles, tokenizer: Any) -> corpus.TokenStream | None:
    if not files.validation and not files.hub_validation:
        return None
    pieces = _pieces(cfg, files.validation, files.hub_validation)
    return corpus.tokenize_stream(pieces, tokenizer, lm.separator_id(tokenizer, cfg.task))


def _stream_batches(cfg: Config, files: lm.CorpusFiles, tokenizer: Any, span: int, stride: int, epoch: int):
    """Streaming: read, tokenize, cut and shuffle on the fly; memory stays bounded by the buffers."""
    chunks = corpus.iter_token_chunks(
        _iter_pieces(cfg, files.train, files.hub_train), tokenizer, lm.separator_id(tokenizer, cfg.task)
    )
    blocks = corpus.iter_stream_blocks(
        chunks, span, stride, buffer_blocks=cfg.data.shuffle_buffer, seed=cfg.seed, epoch=epoch
    )
    batch: list[np.ndarray] = []
    for block in blocks:
        batch.append(block)
        if len(batch) == cfg.training.batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


# ---------------------------------------------------------------------------------------------
# train (pretrain, or continued causal-LM fine-tuning)


def train(cfg: Config, *, overwrite: bool, command: str) -> dict[str, Any]:
    files = _check_inputs(cfg, command)
    check_output_dir(cfg, overwrite)
    texts = None if cfg.data.streaming else read_texts(cfg, files)

    import torch

    from ptft_cli import hardware, models

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    hw = hardware.resolve(cfg.device, cfg.precision, training=True, where=cfg.where("device"))
    models.quiet_transformers()

    def train_pieces() -> Any:  # the tokenizer trainer may read the training split (only)
        return (
            iter(texts.train) if texts is not None else iter(_iter_pieces(cfg, files.train, files.hub_train))
        )

    tokenizer, tokenizer_desc = lm.tokenizer_for(cfg, train_pieces)
    T = cfg.tokenizer.max_length
    attn = hardware.attn_implementation(cfg.model.attn_implementation, hw.device, T)
    model, model_desc = lm.build_model(cfg, tokenizer, attn)
    lm.check_block_fits(cfg, model, T)
    models.freeze(model, cfg.model)
    model.to(hw.device)
    flops = lm.flops_per_token(model, T)
    objective, cached = _objective(cfg, files, texts, tokenizer, hw, flops)

    objective_name = {
        "clm": "causal LM (next token)",
        "mlm": "masked LM",
        "mlm+nsp": "masked LM + next-sentence prediction",
    }
    rows = [
        ("task", objective_name[cfg.task]),
        ("model", f"{model_desc}, attention {attn}; {flops / 1e6:,.1f} MFLOP per token"),
        ("tokenizer", tokenizer_desc),
        ("train", objective.train_size + (" (cached)" if cached else "")),
        ("validation", objective.validation_size),
    ]
    return fit(
        cfg, command=command, model=model, tokenizer=tokenizer, hw=hw, hooks=objective.hooks, n_batches=objective.n_batches,
        rows=rows, batch_note=f" blocks of {T} tokens", overwrite=overwrite, started=started,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(cfg: Config) -> dict[str, Any]:
    """Loss, perplexity (and bits per character for causal LMs) of a trained model on text files."""
    model_ref = trained_model_ref(cfg, cfg.evaluate.model, "evaluate.model")
    data = cfg.evaluate.data or cfg.data.validation
    if not data:
        raise ConfigError(
            "no text to evaluate on",
            where=cfg.where("evaluate.data"),
            key="evaluate.data",
            hint="set evaluate.data (or data.validation) to text files",
        )
    key = "evaluate.data" if cfg.evaluate.data else "data.validation"
    paths = corpus.expand(data, key, cfg.where(key))
    pieces = _pieces(cfg, paths)
    if not any(p.text.strip() for p in pieces):
        raise DataError("no text to evaluate", where=str(paths[0]), key=key)
    out_dir = Path(cfg.evaluate.output_dir or Path(cfg.output_dir) / "eval")

    from ptft_cli import hardware, models
    from ptft_cli.tasks import clm, mlm

    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    models.quiet_transformers()
    mkey = "evaluate.model" if cfg.evaluate.model else "output_dir"
    tokenizer = models.load_tokenizer(
        cfg.tokenizer.name_or_path or model_ref, cfg.model, mkey, cfg.where(mkey)
    )
    T = cfg.tokenizer.max_length
    model = _load_lm(
        cfg, model_ref, mkey, hardware.attn_implementation(cfg.model.attn_implementation, hw.device, T)
    )
    lm.check_block_fits(cfg, model, T)
    model.to(hw.device)
    started = time.perf_counter()
    if cfg.task == "clm":
        stream = corpus.tokenize_stream(pieces, tokenizer, lm.separator_id(tokenizer, cfg.task))
        metrics = clm.evaluate(model, stream, T, cfg.training.eval_batch_size, hw, cfg.data.max_eval_samples)
    else:
        specials = mlm.Specials.of(tokenizer)
        ws = mlm.word_starts(tokenizer) if cfg.objective.whole_word_masking else None
        stream = corpus.tokenize_stream(pieces, tokenizer, lm.separator_id(tokenizer, cfg.task))
        bodies = _val_bodies(stream, T, cfg.data.max_eval_samples, cfg.training.eval_batch_size)
        batches = [mlm.collate_packed(b, specials, cfg.objective, 12345, hw.device, ws) for b in bodies]
        if not batches:
            raise DataError(f"the text is shorter than one block of {T} tokens", where=str(paths[0]), key=key)
        metrics = mlm.evaluate(model, batches, hw)
    metrics.update(
        {
            "model": model_ref,
            "data": [str(p) for p in paths],
            "precision": hw.precision,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    console.metrics_table(
        f"evaluate · {', '.join(p.name for p in paths)}",
        {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    )
    console.info(f"metrics written to {out_dir / 'metrics.json'}")
    return metrics


def _load_lm(cfg: Config, ref: str, key: str, attn: str) -> Any:
    from ptft_cli import models

    config = models.load_config(ref, cfg.model, key, cfg.where(key))
    try:
        return lm.auto_class(cfg.task).from_pretrained(
            ref,
            config=config,
            revision=cfg.model.revision,
            trust_remote_code=cfg.model.trust_remote_code,
            attn_implementation=attn,
        )
    except ValueError as e:
        raise ConfigError(
            f"cannot load {ref} as a {cfg.task} model: {str(e).splitlines()[0][:160]}",
            where=cfg.where(key),
            key=key,
        ) from None


# ---------------------------------------------------------------------------------------------
# predict: generation (causal LM) or fill-mask (masked LM)


def _prompts(cfg: Config) -> tuple[list[str], list[Any]]:
    from ptft_cli import data as data_io

    p = cfg.predict
    if p.prompt is not None:
        return [p.prompt], [1]
    if not p.input:
        raise ConfigError(
            "no prompts",
            where=cfg.where("predict.input"),
            key="predict.input",
            hint="pass --prompt TEXT or --input FILE",
        )
    table = data_io.read_table(p.input, "auto", text_column=cfg.data.text_column)
    texts = table.column(cfg.data.text_column, "prompt")
    ids = [row.get("id", line) for row, line in zip(table.rows, table.lines)]
    return [str(x) for x in texts], ids


def predict(cfg: Config) -> Path:
    model_ref = trained_model_ref(cfg, cfg.predict.model, "predict.model")
    prompts, ids = _prompts(cfg)
    out = Path(cfg.predict.output or Path(cfg.output_dir) / "predictions.jsonl")
    if out.suffix.lower() != ".jsonl":
        raise ConfigError(
            f"language-model predictions are written as .jsonl, not {out.suffix or '(none)'}",
            where=cfg.where("predict.output"),
            key="predict.output",
        )

    from ptft_cli import hardware, models
    from ptft_cli.tasks import generation

    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    models.quiet_transformers()
    key = "predict.model" if cfg.predict.model else "output_dir"
    tokenizer = models.load_tokenizer(cfg.tokenizer.name_or_path or model_ref, cfg.model, key, cfg.where(key))
    model = _load_lm(cfg, model_ref, key, "sdpa" if hw.device.type != "cpu" else "eager").to(hw.device)
    p = cfg.predict
    started = time.perf_counter()
    with console.simple_progress(len(prompts), "predict") as progress:
        task_id = progress.add_task("predict", total=len(prompts), rate="")
        advance = lambda n: progress.advance(task_id, n)
        try:
            if cfg.task == "clm":
                rows = generation.generate(
                    model, tokenizer, prompts, max_new_tokens=p.max_new_tokens, do_sample=p.do_sample, temperature=p.temperature,
                    top_k=p.top_k, top_p=p.top_p, batch_size=cfg.training.eval_batch_size, seed=cfg.seed, progress=advance,
                )  # fmt: skip
            else:
                rows = generation.fill_mask(
                    model,
                    tokenizer,
                    prompts,
                    top_k=p.top_k or 5,
                    batch_size=cfg.training.eval_batch_size,
                    progress=advance,
                )
        except ValueError as e:
            raise DataError(str(e), where=cfg.predict.input or "--prompt", key="predict") from None
    seconds = time.perf_counter() - started
    body = "".join(json.dumps({"id": i, **row}, ensure_ascii=False) + "\n" for i, row in zip(ids, rows))
    atomic_write_text(out, body)
    if cfg.predict.prompt is not None and len(rows) == 1:
        row = rows[0]
        console.info(
            row.get("prompt", "") + row.get("completion", "") if cfg.task == "clm" else row.get("filled", "")
        )
    console.info(f"{len(prompts):,} predictions in {seconds:.1f}s ({hw.precision}) → {out}")
    return out
