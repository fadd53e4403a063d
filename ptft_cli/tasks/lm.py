"""What masked-LM and causal-LM training share: the corpus, the tokenizer, the model, FLOPs, and scoring.

The objective-specific parts (which tokens are targets, masking, next-sentence pairs) live in
`tasks/clm.py` and `tasks/mlm.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptft_cli import corpus
from ptft_cli.config import DECODERS, ENCODERS, Config
from ptft_cli.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

LOWER_IS_BETTER = {"loss", "perplexity", "bits_per_char", "bits_per_byte"}


# ---------------------------------------------------------------------------------------------
# Preflight (pure Python)


@dataclass
class CorpusFiles:
    """Where the text comes from: files, or splits of a Hugging Face dataset (data.dataset)."""

    train: list[Path]
    validation: list[Path]
    hub_train: str | None = None
    hub_validation: str | None = None


def corpus_files(cfg: Config) -> CorpusFiles:
    d = cfg.data
    if d.dataset:
        return CorpusFiles([], [], d.train_split, d.validation_split)
    if not d.train:
        raise DataError(
            "no training corpus",
            where=cfg.where("data"),
            key="data.train",
            hint="set data.train to text files or globs",
        )
    return CorpusFiles(
        corpus.expand(d.train, "data.train", cfg.where("data.train")),
        corpus.expand(d.validation, "data.validation", cfg.where("data.validation")),
    )


def model_type_of(ref: str) -> str | None:
    """`model_type` from a local config.json (None for Hub ids), without importing transformers."""
    path = Path(ref) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")).get("model_type") if path.is_file() else None


def check_objective_fits_model(cfg: Config, ref: str | None) -> None:
    """MLM needs an encoder, CLM a decoder: say so before loading anything."""
    kind = model_type_of(ref) if ref else None
    if kind is None:
        return
    key, where = "model.name_or_path", cfg.where("model.name_or_path")
    if cfg.task in ("mlm", "mlm+nsp") and (
        kind in DECODERS or kind in ("gpt_neox", "gptj", "opt", "phi", "gemma")
    ):
        raise ConfigError(
            f"{ref} is a {kind} decoder; masked LM needs an encoder",
            where=where,
            key=key,
            hint="use task: clm, or an encoder such as bert",
        )
    if cfg.task == "clm" and kind in ENCODERS:
        raise ConfigError(
            f"{ref} is a {kind} encoder; causal LM needs a decoder",
            where=where,
            key=key,
            hint="use task: mlm, or a decoder such as gpt2",
        )
    if cfg.task == "mlm+nsp" and kind != "bert":
        raise ConfigError(
            f"next-sentence prediction needs a BERT model, {ref} is {kind}",
            where=where,
            key=key,
            hint="use task: mlm",
        )


# ---------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_for(cfg: Config, train_pieces: Any) -> tuple[Any, str]:
    """Train a tokenizer on the corpus (tokenizer.type) or load one; returns (tokenizer, description)."""
    from ptft_cli import models

    tok = cfg.tokenizer
    if tok.type:
        from ptft_cli import tokenizer_train

        architecture = cfg.model.architecture or model_type_of(cfg.model.name_or_path or "") or "gpt2"
        specials = tok.special_tokens or tokenizer_train.special_tokens_for(architecture)
        try:
            tokenizer = tokenizer_train.train_tokenizer(
                (p.text for p in train_pieces() if p.text),
                kind=tok.type,
                vocab_size=tok.vocab_size,
                special_tokens=specials,
                min_frequency=tok.min_frequency,
                lowercase=tok.lowercase,
                model_max_length=tok.max_length,
                add_cls_sep=cfg.task in ("mlm", "mlm+nsp"),
            )
        except ValueError as e:
            raise ConfigError(str(e), where=cfg.where("tokenizer.vocab_size"), key="tokenizer") from None
        return tokenizer, f"{tok.type} trained on the corpus, {len(tokenizer):,} tokens"
    ref = tok.name_or_path or cfg.model.name_or_path
    key = "tokenizer.name_or_path" if tok.name_or_path else "model.name_or_path"
    if ref is None:
        raise ConfigError(
            "no tokenizer: a new model needs one",
            where=cfg.where("tokenizer"),
            key="tokenizer.type",
            hint="set tokenizer.type (bpe, wordpiece, char) to train one, or tokenizer.name_or_path",
        )
    tokenizer = models.load_tokenizer(ref, cfg.model, key, cfg.where(key))
    return tokenizer, f"{ref}, {len(tokenizer):,} tokens"


def separator_id(tokenizer: Any, task: str) -> int:
    """The token between documents: SEP for masked LM (BERT), EOS for causal LM."""
    ids = (
        (tokenizer.sep_token_id, tokenizer.eos_token_id)
        if task != "clm"
        else (tokenizer.eos_token_id, tokenizer.sep_token_id)
    )
    for i in ids:
        if i is not None:
            return i
    raise ConfigError(
        "the tokenizer has no EOS or SEP token to put between documents",
        key="tokenizer",
        hint="train one with tokenizer.type, or set tokenizer.special_tokens",
    )


# ---------------------------------------------------------------------------------------------
# Model


def _size_config(cfg: Config, tokenizer: Any) -> dict[str, Any]:
    m = cfg.model
    size: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "max_position_embeddings": m.max_position_embeddings or cfg.tokenizer.max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id
        if tokenizer.eos_token_id is not None
        else tokenizer.sep_token_id,
    }
    if m.architecture in ENCODERS:
        size.update(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    inner = m.intermediate_size or 4 * m.hidden_size
    if m.architecture == "gpt2":
        size["n_inner"] = inner
    elif m.architecture == "distilbert":
        size.update(dim=m.hidden_size, n_layers=m.num_layers, n_heads=m.num_heads, hidden_dim=inner)
    else:
        size["intermediate_size"] = inner
    if m.architecture in ("llama", "mistral"):
        size["num_key_value_heads"] = m.num_kv_heads or m.num_heads
        size["tie_word_embeddings"] = True  # small models: the output layer shares the embedding
    if m.architecture == "modernbert":
        # As in the released ModernBERT checkpoints: a classifier fine-tuned on an MLM-only encoder
        # reads the mean of the token states; the [CLS] state was never trained for anything.
        size["classifier_pooling"] = "mean"
    if m.architecture == "roberta":
        # RoBERTa's position ids start after the padding index.
        size["max_position_embeddings"] += (tokenizer.pad_token_id or 0) + 1
    return size


def auto_class(task: str) -> Any:
    import transformers

    return {
        "clm": transformers.AutoModelForCausalLM,
        "mlm": transformers.AutoModelForMaskedLM,
        "mlm+nsp": transformers.AutoModelForPreTraining,
    }[task]


def build_model(cfg: Config, tokenizer: Any, attn: str) -> tuple[Any, str]:
    """A new model of `model.architecture`, or the pretrained `model.name_or_path` with an LM head."""
    from transformers import AutoConfig

    from ptft_cli import models

    m = cfg.model
    cls = auto_class(cfg.task)
    if m.architecture:
        config = AutoConfig.for_model(m.architecture, **_size_config(cfg, tokenizer))
        if m.dropout is not None:
            models.set_dropout(config, m.dropout)
        elif m.architecture in DECODERS:
            models.set_dropout(config, 0.0)  # from scratch on a small corpus: nanoGPT's zero dropout
        config._attn_implementation = attn
        model = cls.from_config(config, attn_implementation=attn)
        return model, f"new {m.architecture} ({type(model).__name__})"
    ref = m.name_or_path
    assert ref is not None
    key, where = "model.name_or_path", cfg.where("model.name_or_path")
    config = models.load_config(ref, m, key, where)
    try:
        model = cls.from_pretrained(
            ref,
            config=config,
            revision=m.revision,
            trust_remote_code=m.trust_remote_code,
            attn_implementation=attn,
        )
    except ValueError as e:  # e.g. "Unrecognized configuration class" for the wrong head
        raise ConfigError(
            f"cannot load {ref} for {cfg.task}: {str(e).splitlines()[0][:160]}", where=where, key=key
        ) from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer):,} tokens but the model's embedding has {model.get_input_embeddings().num_embeddings:,}",
            where=where,
            key="tokenizer",
            hint="use the model's own tokenizer (leave tokenizer.* unset)",
        )
    return model, f"{ref} ({type(model).__name__})"


def max_positions(model: Any) -> int | None:
    c = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(c, name, None)
        if isinstance(value, int):
            # RoBERTa reserves padding_idx + 1 positions
            return (
                value - (c.pad_token_id + 1)
                if c.model_type in ("roberta", "xlm-roberta", "camembert") and c.pad_token_id is not None
                else value
            )
    return None


def check_block_fits(cfg: Config, model: Any, length: int) -> None:
    limit = max_positions(model)
    if limit is not None and length > limit:
        raise ConfigError(
            f"{length} tokens per block is more than the model's {limit} positions",
            where=cfg.where("tokenizer.max_length"),
            key="tokenizer.max_length",
            hint=f"use tokenizer.max_length <= {limit}",
        )


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding parameters + output layer) + attention (PaLM's 12·L·d·T)."""
    c = model.config
    emb = model.get_input_embeddings()
    n_params = sum(p.numel() for p in model.parameters())
    n_embedding = sum(
        p.numel()
        for n, p in model.named_parameters()
        if "embed" in n or n.endswith(("wte.weight", "wpe.weight"))
    )
    vocab, width = emb.weight.shape
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None) or 0
    return 6.0 * (n_params - n_embedding + vocab * width) + 12.0 * layers * width * seq_len


# ---------------------------------------------------------------------------------------------
# Scoring


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
