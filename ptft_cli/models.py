"""Loading pretrained models and tokenizers, dropout overrides, freezing, parameter counts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptft_cli.config import HUB_ID, ModelConfig
from ptft_cli.errors import ConfigError

# Config attributes that hold dropout probabilities, across the architectures transformers ships.
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "embedding_dropout",  # ModernBERT
    "mlp_dropout",
)


def set_dropout(config: Any, p: float) -> None:
    """Every dropout probability the config's architecture has (and no others) becomes p."""
    for name in DROPOUT_KEYS:
        if hasattr(config, name):
            setattr(config, name, p)


def check_ref(ref: str | None, key: str, where: str, *, what: str = "model") -> str:
    """A model/tokenizer reference must be a local HF directory or a Hub id (checked without torch)."""
    if ref is None:
        raise ConfigError(
            f"no {what} given",
            where=where,
            key=key,
            hint="a local directory or a Hub id such as bert-base-uncased",
        )
    p = Path(ref)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{ref} is a file; expected a model directory", where=where, key=key)
        if what == "model" and not (p / "config.json").is_file():
            raise ConfigError(
                f"{ref} has no config.json, so it is not a Hugging Face model directory",
                where=where,
                key=key,
                hint="point at a folder written by save_pretrained (e.g. a ptft run's model/)",
            )
        return ref
    if os.path.isabs(ref) or not HUB_ID.match(ref):
        raise ConfigError(
            f"{ref}: no such directory",
            where=where,
            key=key,
            hint="check the path (relative to the config's folder)",
        )
    return ref  # a Hub id: resolved (or refused) when loaded


def quiet_transformers() -> None:
    """Hide transformers' load reports and download bars; ptft reports what matters itself."""
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _hub_error(ref: str, key: str, where: str, err: Exception) -> ConfigError:
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"cannot load {ref!r}: {first}",
        where=where,
        key=key,
        hint="a Hub id needs network access (or a warm HF cache); offline, point at a local directory",
    )


def load_tokenizer(ref: str, m: ModelConfig, key: str, where: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise _hub_error(ref, key, where, e) from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(
            f"{ref} has only a slow tokenizer",
            where=where,
            key=key,
            hint="ptft needs a fast (tokenizers) tokenizer",
        )
    return tok


def load_config(ref: str, m: ModelConfig, key: str, where: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            ref, revision=m.revision, trust_remote_code=m.trust_remote_code, **overrides
        )
    except (OSError, ValueError, KeyError) as e:
        raise _hub_error(ref, key, where, e) from None
    if m.dropout is not None:
        set_dropout(config, m.dropout)
    return config


def parameter_counts(model: Any) -> tuple[int, int]:
    """(total, trainable) parameters; tied weights counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def _layer_list(base: Any) -> Any:
    """The transformer block list of a base model: the longest ModuleList in it."""
    import torch

    lists = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else None


def freeze(model: Any, m: ModelConfig) -> None:
    """Apply freeze_backbone / train_top_k_layers; the task head always trains.

    With top-k, the embeddings and lower blocks freeze; the top k blocks and whatever the base
    model runs after them (final norm, pooler) train.
    """
    if not m.freeze_backbone and m.train_top_k_layers is None:
        return
    base = model.base_model
    for p in base.parameters():
        p.requires_grad_(False)
    if m.freeze_backbone:
        return
    layers = _layer_list(base)
    k = m.train_top_k_layers or 0
    if layers is None:
        return
    k = min(k, len(layers))
    trainable = {id(p) for block in list(layers)[len(layers) - k :] for p in block.parameters()}
    in_layers = {id(p) for p in layers.parameters()}
    after_layers = False
    for p in base.parameters():  # registration order: embeddings, blocks, then final norm / pooler
        if id(p) in in_layers:
            after_layers = True
            continue
        if after_layers and k > 0:
            trainable.add(id(p))
    for p in base.parameters():
        if id(p) in trainable:
            p.requires_grad_(True)
