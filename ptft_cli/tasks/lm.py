"""What the language-model tasks (mlm, mlm+nsp, clm) share: reading the corpus, the checks on it,
the text `evaluate` scores, the prompts `predict` reads, streamed batches, and scoring.

The objective-specific parts (which tokens are targets, masking, sentence pairs) live in
`tasks/clm.py`, `tasks/mlm.py` and `tasks/nsp.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ptft_cli.config import DECODERS, ENCODERS, Config
from ptft_cli.data import corpus
from ptft_cli.data import files as data_files
from ptft_cli.errors import ConfigError, DataError
from ptft_cli.tasks import Inputs

if TYPE_CHECKING:
    import torch

    from ptft_cli.checkpoint import RunDir
    from ptft_cli.data.sampler import StreamBatches

METRICS = ("loss", "perplexity")
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "bits_per_char", "bits_per_byte"})
PREDICTION_FORMATS = (".jsonl",)
# model_types that are decoders although ptft does not build them from scratch
OTHER_DECODERS = ("gpt_neox", "gptj", "opt", "phi", "gemma")


# ---------------------------------------------------------------------------------------------
# Config rules (pure Python)


def check_architecture(cfg: Config, allowed: tuple[str, ...], message: str, hint: str) -> list[ConfigError]:
    """A new model's architecture must suit the objective (an encoder for masked LM, ...)."""
    arch = cfg.model.architecture
    if arch and arch not in allowed:
        where, key = cfg.where("model.architecture"), "model.architecture"
        return [ConfigError(message.format(arch=arch), where=where, key=key, hint=hint)]
    return []


def check_packing(cfg: Config) -> list[ConfigError]:
    if cfg.data.packing:
        return []
    return [
        ConfigError(
            "packing: false (one document per example) is for task: mlm",
            where=cfg.where("data.packing"),
            key="data.packing",
        )
    ]


def pretrained_family(cfg: Config) -> tuple[str, str] | None:
    """(family, model_type) of a local pretrained model, read from its config.json without loading
    it: family is "decoder", "encoder" or the model_type itself. None for new models and Hub ids."""
    from ptft_cli.models import model_type_of

    kind = model_type_of(cfg.model.name_or_path) if cfg.model.name_or_path else None
    if kind is None:
        return None
    family = (
        "decoder" if kind in DECODERS or kind in OTHER_DECODERS else "encoder" if kind in ENCODERS else kind
    )
    return family, kind


def refuse_pretrained(cfg: Config, message: str, hint: str) -> ConfigError:
    return ConfigError(message, where=cfg.where("model.name_or_path"), key="model.name_or_path", hint=hint)


# ---------------------------------------------------------------------------------------------
# Inputs (pure Python)


@dataclass
class Corpus:
    """The training corpus: where it comes from, and its text (None when streamed)."""

    files: corpus.CorpusFiles
    texts: corpus.Texts | None


def read_inputs(cfg: Config, command: str) -> Inputs:
    """The corpus, read and split (unless streamed): every data error surfaces here."""
    files = corpus.corpus_files(cfg)
    d = cfg.data
    has_validation = bool(files.validation or files.hub_validation)
    if cfg.training.best_metric and not has_validation and (d.validation_fraction == 0 or d.streaming):
        raise ConfigError(
            "needs validation data to compare models",
            where=cfg.where("training.best_metric"),
            key="training.best_metric",
        )
    if d.streaming:
        summary = [("train", f"{len(files.train)} file(s), streamed (read when training starts)")]
        texts = None

        def train_text() -> Any:
            return (p.text for p, _ in corpus.pieces_of(cfg, files.train, files.hub_train) if p.text)
    else:
        texts = corpus.read_texts(cfg, files)
        summary = [
            ("train", f"{sum(len(p.text) for p in texts.train):,} characters in {len(files.train)} file(s)"),
            (
                "validation",
                f"{sum(len(p.text) for p in texts.validation):,} characters" if texts.validation else "none",
            ),
        ]

        def train_text() -> Any:
            return (p.text for p in texts.train if p.text)

    split = None
    if not has_validation and d.validation_fraction > 0 and not d.dataset:
        split = {
            "data": [str(p) for p in files.train],
            "validation_fraction": d.validation_fraction,
            "tail": True,
        }
    return Inputs(Corpus(files, texts), summary, files.train + files.validation, train_text, split)


def evaluation_inputs(cfg: Config, run: RunDir, model_ref: str) -> Inputs:
    """evaluate.data, else data.validation, else the tail of the corpus the run held out."""
    if cfg.evaluate.data or cfg.data.validation:
        key = "evaluate.data" if cfg.evaluate.data else "data.validation"
        paths = corpus.expand(cfg.evaluate.data or cfg.data.validation, key, cfg.where(key))
        pieces = corpus.read_pieces(cfg, paths)
    elif run.split_json.is_file():
        split = json.loads(run.split_json.read_text(encoding="utf-8"))
        key = "data.train"
        paths = corpus.expand(split["data"], key, cfg.where(key))
        pieces = corpus.split_tail(corpus.read_pieces(cfg, paths), split["validation_fraction"])[1]
    else:
        raise ConfigError(
            "no text to evaluate on",
            where=cfg.where("evaluate.data"),
            key="evaluate.data",
            hint="set evaluate.data (or data.validation) to text files",
        )
    if not any(p.text.strip() for p in pieces):
        raise DataError("no text to evaluate", where=str(paths[0]), key=key)
    return Inputs((paths, pieces, key), [("data", ", ".join(p.name for p in paths))], paths)


def prediction_inputs(cfg: Config) -> Inputs:
    """Prompts (or masked texts): `--prompt TEXT`, or one per line / row of predict.input."""
    p = cfg.predict
    if p.prompt is not None:
        return Inputs(([p.prompt], [1]), [("prompt", p.prompt)])
    if not p.input:
        raise ConfigError(
            "no prompts",
            where=cfg.where("predict.input"),
            key="predict.input",
            hint="pass --prompt TEXT or --input FILE",
        )
    data_files.require_file(p.input, "predict.input", cfg.where("predict.input"))
    table = data_files.read_table(p.input, "auto", text_column=cfg.data.text_column)
    texts = table.column(cfg.data.text_column, "prompt", "data.text_column")
    ids = [row.get("id", line) for row, line in zip(table.rows, table.lines)]
    return Inputs(
        ([str(x) for x in texts], ids), [("predict.input", f"{len(texts):,} prompts from {p.input}")]
    )


def separator_id(tokenizer: Any, causal: bool) -> int:
    """The token between documents: EOS for causal LM, SEP for masked LM (BERT)."""
    ids = (
        (tokenizer.eos_token_id, tokenizer.sep_token_id)
        if causal
        else (tokenizer.sep_token_id, tokenizer.eos_token_id)
    )
    for i in ids:
        if i is not None:
            return i
    raise ConfigError(
        "the tokenizer has no EOS or SEP token to put between documents",
        key="tokenizer",
        hint="train one with tokenizer.type, or set tokenizer.special_tokens",
    )


def check_enough(cfg: Config, n_tokens: int, span: int) -> None:
    if n_tokens < span + cfg.tokenizer.max_length:
        raise DataError(
            f"the training corpus has {n_tokens:,} tokens, too few for even two blocks of {cfg.tokenizer.max_length}",
            where=cfg.where("data.train"),
            key="data.train",
            hint="add text or lower tokenizer.max_length",
        )


# ---------------------------------------------------------------------------------------------
# Streams


def stream_validation(
    cfg: Config, files: corpus.CorpusFiles, tokenizer: Any, separator: int
) -> corpus.TokenStream | None:
    if not files.validation and not files.hub_validation:
        return None
    pieces = corpus.read_pieces(cfg, files.validation, files.hub_validation)
    return corpus.tokenize_stream(pieces, tokenizer, separator)


def stream_batches(
    cfg: Config,
    files: corpus.CorpusFiles,
    tokenizer: Any,
    separator: int,
    block: tuple[int, int],
    processes: int,
) -> StreamBatches:
    """Streaming: blocks of `span` tokens every `stride` tokens (`block`), read, tokenized, cut and
    shuffled on the fly, in global batches of all `processes`; resumable at any batch."""
    from ptft_cli.data.sampler import StreamBatches, global_batch
    from ptft_cli.data.stream import BlockStream, Cutting

    chunks = corpus.token_chunks_from(cfg, files, tokenizer, separator)
    span, stride = block
    cut = Cutting(span, stride, cfg.data.shuffle_buffer, cfg.seed)

    def open_stream(epoch: int, position: dict[str, Any] | None) -> BlockStream:
        return BlockStream(chunks, cut, epoch, position)

    return StreamBatches(open_stream, global_batch(cfg.training, processes))


def describe_tokens(stream: corpus.TokenStream | None, cached: str = "") -> str:
    if stream is None:
        return "none"
    return f"{len(stream.ids):,} tokens ({stream.chars:,} characters){cached}"


def describe_stream(cfg: Config, files: corpus.CorpusFiles) -> str:
    if cfg.data.dataset:
        return f"streamed from dataset {cfg.data.dataset}"
    return f"streamed from {len(files.train)} file(s)"


# ---------------------------------------------------------------------------------------------
# Scoring


def tokens_in(batch: dict) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def lm_metrics(nats: float, targets: int, chars: int | None, n_bytes: int | None) -> dict[str, float]:
    """loss (nats/token), perplexity, and bits per character / byte of the scored text."""
    loss = nats / max(1, targets)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": targets}
    if chars:
        out["bits_per_char"] = nats / chars / math.log(2)
    if n_bytes:
        out["bits_per_byte"] = nats / n_bytes / math.log(2)
    return out


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of token cross-entropies over labels != -100, in fp32."""
    import torch.nn.functional as F

    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def generation_settings(cfg: Config) -> Any:
    from ptft_cli.inference import Generation

    p = cfg.predict
    return Generation(
        max_new_tokens=p.max_new_tokens,
        do_sample=p.do_sample,
        temperature=p.temperature,
        top_k=p.top_k,
        top_p=p.top_p,
        batch_size=cfg.training.eval_batch_size,
        seed=cfg.seed,
        repetition_penalty=p.repetition_penalty,
        stop=tuple(p.stop),
    )


def fill_mask(cfg: Config, inputs: Inputs, loaded: Any, progress: Any) -> list[dict[str, Any]]:
    """`predict` for masked LMs (with or without NSP): the top-k tokens at each mask."""
    from ptft_cli.inference import fill_mask as fill

    prompts, ids = inputs.data
    try:
        rows = fill(
            loaded.model,
            loaded.tokenizer,
            prompts,
            top_k=cfg.predict.top_k or 5,
            batch_size=cfg.training.eval_batch_size,
            progress=progress,
        )
    except ValueError as e:
        raise DataError(str(e), where=cfg.predict.input or "--prompt", key="predict") from None
    return [{"id": i, **row} for i, row in zip(ids, rows)]
