"""Models and tokenizers, built and loaded in one place.

`build` makes the network a run trains: a new model of `model.architecture` sized by the config and
the tokenizer, or a pretrained `model.name_or_path` with the task's head; dropout overrides and
freezing are applied here, and only here. `load_trained` loads a finished model for `evaluate` and
`predict`; `load_weights` puts a checkpoint's weights into a built model when a run resumes.
`tokenizer` trains one on the corpus (`tokenizer.type`) or loads one.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptft_cli.config import DECODERS, ENCODERS, HUB_ID, Config, ModelConfig
from ptft_cli.errors import ConfigError, DataError

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
# RoBERTa-style models number positions from pad_token_id + 1, so fewer fit than the table holds.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


@dataclass(frozen=True)
class Head:
    """What a task puts on the network: the transformers Auto class and its config changes."""

    auto_class: str  # e.g. "AutoModelForSequenceClassification"
    what: str  # for messages: "a classifier", "a causal LM"
    config: dict[str, Any] = field(default_factory=dict)  # num_labels, id2label, label2id, ...
    new_head: bool = False  # a pretrained checkpoint's head of another size is replaced by a new one
    needs_labels: bool = False  # a trained model must carry id2label
    pads: bool = False  # batches are padded: decoders without a pad token pad with EOS
    cls_sep: bool = False  # a trained tokenizer adds [CLS] ... [SEP] (encoders)
    peft_task: str = "CAUSAL_LM"  # peft's TaskType for LoRA (SEQ_CLS trains a classifier's head in full)


# ---------------------------------------------------------------------------------------------
# Checks without loading anything


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


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def check_files(ref: str, key: str, where: str, *, tokenizer: bool, gguf_file: str | None = None) -> None:
    """A local model directory holds readable weights (a complete safetensors file, or all the shards
    its index names, or the GGUF file named) and, when the tokenizer comes from it, tokenizer files.
    Hub ids pass."""
    folder = Path(ref)
    if not folder.is_dir():
        return
    if gguf_file is not None:
        _check_gguf(folder / gguf_file, where)
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(f"{index} is not a safetensors index", where=where, key=key) from None
        for shard in shards:
            _check_safetensors(folder / shard, key, where)
    elif (folder / "model.safetensors").exists():
        _check_safetensors(folder / "model.safetensors", key, where)
    elif not any((folder / name).is_file() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise ConfigError(
            f"{ref} has no model weights (model.safetensors)",
            where=where,
            key=key,
            hint="point at a folder written by save_pretrained (e.g. a ptft run's model/)",
        )
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{ref} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)",
            where=where,
            key=key,
            hint="set tokenizer.name_or_path to the tokenizer's folder, or tokenizer.type to train one",
        )


def _check_gguf(path: Path, where: str) -> None:
    """The file exists and starts with GGUF's magic bytes."""
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob("*.gguf"))
        raise ConfigError(
            f"no GGUF file {path.name} in {path.parent}",
            where=where,
            key="model.gguf_file",
            hint=f"files there: {', '.join(present)}" if present else "the folder holds no .gguf file",
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ConfigError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')",
            where=where,
            key="model.gguf_file",
            hint="name a .gguf file, or drop model.gguf_file to load safetensors",
        )


def _check_safetensors(path: Path, key: str, where: str) -> None:
    """The file's JSON header parses and the file is as long as the tensors it lists."""
    problem = None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if size == 0:
                problem = "is empty"
            elif n <= 0 or 8 + n > size:
                problem = "is not a safetensors file (or its header is cut off)"
            else:
                header = json.loads(f.read(n))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if size < 8 + n + end:
                    problem = f"is truncated ({size:,} of {8 + n + end:,} bytes)"
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        problem = "is not a safetensors file"
    if problem:
        raise ConfigError(
            f"{path} {problem}", where=where, key=key, hint="save the model again, or use another copy"
        )


def check_refs(cfg: Config, command: str) -> None:
    """The model and tokenizer a training run names exist (or look like Hub ids)."""
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
        where = cfg.where("model.name_or_path")
        check_ref(m.name_or_path, "model.name_or_path", where, what="GGUF folder" if m.gguf_file else "model")
        own_tokenizer = not cfg.tokenizer.name_or_path and not cfg.tokenizer.type
        check_files(
            m.name_or_path, "model.name_or_path", where, tokenizer=own_tokenizer, gguf_file=m.gguf_file
        )
        fit_max_length(cfg, m.name_or_path)
    if m.student_init and not m.name_or_path:
        raise ConfigError(
            f"model.student_init: {m.student_init} takes its layers from model.name_or_path, which is not set",
            where=cfg.where("model.student_init"),
            key="model.student_init",
            hint="set model.name_or_path to the teacher (e.g. a ptft run's model/)",
        )
    if m.gguf_file and not m.name_or_path:
        raise ConfigError(
            "model.gguf_file names a file in model.name_or_path, which is not set",
            where=cfg.where("model.gguf_file"),
            key="model.name_or_path",
            hint="set model.name_or_path to the folder (or Hub repo) holding the .gguf file",
        )
    if cfg.lora.r is not None and command == "pretrain":
        raise ConfigError(
            "LoRA adapts a pretrained model: it belongs to finetune, not pretrain",
            where=cfg.where("lora.r"),
            key="lora.r",
            hint="set lora.r: null to pretrain, or fine-tune with `ptft finetune`",
        )
    if cfg.lora.r is not None and m.freeze_backbone:
        raise ConfigError(
            "lora.r and model.freeze_backbone both choose what trains",
            where=cfg.where("lora.r"),
            key="lora.r",
            hint="LoRA already freezes the pretrained weights; drop freeze_backbone",
        )
    if cfg.lora.quantize_base is not None and (cfg.lora.r is None or not _cuda_training(cfg)):
        raise ConfigError(
            "lora.quantize_base (QLoRA) needs lora.r and a CUDA GPU (bitsandbytes' 4-bit kernels)",
            where=cfg.where("lora.quantize_base"),
            key="lora.quantize_base",
            hint="set lora.quantize_base: null here (plain LoRA), or train on a GPU with device: cuda",
        )
    if cfg.tokenizer.name_or_path:
        check_ref(
            cfg.tokenizer.name_or_path,
            "tokenizer.name_or_path",
            cfg.where("tokenizer.name_or_path"),
            what="tokenizer",
        )


def _cuda_training(cfg: Config) -> bool:
    if cfg.device.startswith(("cpu", "mps")):
        return False
    import torch

    return torch.cuda.is_available()


def fit_max_length(cfg: Config, ref: str) -> None:
    """tokenizer.max_length against a local model's position table, read from config.json: a value
    the config sets must fit; the schema's default is lowered to the model's limit."""
    values = config_json(ref)
    if values is None:
        return  # a Hub id: checked once loaded (`check_fits`)
    limit = max_positions(values)
    if limit is None or cfg.tokenizer.max_length <= limit:
        return
    key = "tokenizer.max_length"
    if key in cfg.lines or any(key == k or key.startswith(k + ".") for k in cfg.overridden):
        _too_long(cfg, limit)
    cfg.tokenizer.max_length = limit


def config_json(ref: str) -> dict[str, Any] | None:
    """A local model's config.json (None for Hub ids), read without transformers."""
    path = Path(ref) / "config.json"
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path} is not valid JSON ({str(e)[:80]})", hint="save the model again") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} is not a JSON object", hint="save the model again")
    return values


def model_type_of(ref: str) -> str | None:
    """`model_type` from a local config.json (None for Hub ids), without importing transformers."""
    values = config_json(ref)
    return values.get("model_type") if values else None


def label_names_of(ref: str) -> list[str] | None:
    """id2label of a local model directory, read from config.json (None for Hub ids)."""
    values = config_json(ref)
    id2label = (values or {}).get("id2label") or {}
    try:
        return [str(id2label[str(i)]) for i in range(len(id2label))] if id2label else None
    except (KeyError, TypeError):
        raise ConfigError(f"{ref}/config.json: id2label is not numbered 0..{len(id2label) - 1}") from None


# ---------------------------------------------------------------------------------------------
# Tokenizers


def quiet_transformers() -> None:
    """Hide transformers' load reports and download bars; ptft reports what matters itself."""
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_HUB_CHECKED: dict[str, bool] = {}


def _hub_reachable() -> bool:
    """Whether the Hugging Face Hub answers (checked once, within 3 s). Without it, huggingface_hub
    retries for about a minute before failing; offline mode makes cached models load at once and
    the rest fail at once."""
    if "ok" not in _HUB_CHECKED:
        import socket
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=3).close()
            _HUB_CHECKED["ok"] = True
        except OSError:
            _HUB_CHECKED["ok"] = False
            import huggingface_hub.constants

            os.environ["HF_HUB_OFFLINE"] = "1"
            huggingface_hub.constants.HF_HUB_OFFLINE = True
    return _HUB_CHECKED["ok"]


def _from_hub(ref: str) -> bool:
    return not Path(ref).exists()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
        return "the weights file holds pickled code, which ptft does not run (use safetensors)"
    return text.splitlines()[0][:200] if text else type(e).__name__


def _hub_error(ref: str, key: str, where: str, err: Exception) -> ConfigError:
    first = _first_line(err)
    if _from_hub(ref) and not _HUB_CHECKED.get("ok", True):
        first = "the Hugging Face Hub cannot be reached and it is not in the local cache"
    return ConfigError(
        f"cannot load {ref!r}: {first}",
        where=where,
        key=key,
        hint="a Hub id needs network access (or a warm HF cache); offline, point at a local directory",
    )


def load_tokenizer(ref: str, m: ModelConfig, key: str, where: str) -> Any:
    from transformers import AutoTokenizer

    if _from_hub(ref):
        _hub_reachable()
    try:
        tok = AutoTokenizer.from_pretrained(
            ref, revision=m.revision, trust_remote_code=m.trust_remote_code, **_gguf(m, ref)
        )
    except Exception as e:  # missing, damaged or unsupported files; no network
        raise _hub_error(ref, key, where, e) from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(
            f"{ref} has only a slow tokenizer",
            where=where,
            key=key,
            hint="ptft needs a fast (tokenizers) tokenizer",
        )
    return tok


def tokenizer(cfg: Config, head: Head, texts: Callable[[], Iterator[str]]) -> tuple[Any, str]:
    """Train a tokenizer on `texts()` (tokenizer.type) or load the configured one; (tokenizer, description)."""
    tok = cfg.tokenizer
    if tok.type:
        from ptft_cli.data import tokenizer_train

        architecture = cfg.model.architecture or model_type_of(cfg.model.name_or_path or "") or "gpt2"
        specials = tok.special_tokens or tokenizer_train.special_tokens_for(architecture)
        try:
            spec = tokenizer_train.TokenizerSpec(
                tok.type,
                tok.vocab_size,
                specials,
                tok.min_frequency,
                tok.lowercase,
                tok.max_length,
                head.cls_sep,
            )
            trained = tokenizer_train.train_tokenizer(texts(), spec)
        except ValueError as e:
            raise ConfigError(str(e), where=cfg.where("tokenizer.vocab_size"), key="tokenizer") from None
        return trained, f"{tok.type} trained on the corpus, {len(trained):,} tokens"
    ref = tok.name_or_path or cfg.model.name_or_path
    key = "tokenizer.name_or_path" if tok.name_or_path else "model.name_or_path"
    if ref is None:
        raise ConfigError(
            "no tokenizer: a new model needs one",
            where=cfg.where("tokenizer"),
            key="tokenizer.type",
            hint="set tokenizer.type (bpe, wordpiece, char) to train one, or tokenizer.name_or_path",
        )
    loaded = load_tokenizer(ref, cfg.model, key, cfg.where(key))
    return loaded, f"{ref}, {len(loaded):,} tokens"


def ensure_pad_token(tokenizer: Any, model: Any) -> None:
    """Decoder models (GPT-2, LLaMA) ship without a pad token; padded batches pad with EOS."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------------------------------------
# Models


def set_dropout(config: Any, p: float) -> None:
    """Every dropout probability the config's architecture has (and no others) becomes p."""
    for name in DROPOUT_KEYS:
        if hasattr(config, name):
            setattr(config, name, p)


def load_config(ref: str, m: ModelConfig, key: str, where: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    if _from_hub(ref):
        _hub_reachable()
    try:
        config = AutoConfig.from_pretrained(
            ref, revision=m.revision, trust_remote_code=m.trust_remote_code, **_gguf(m, ref), **overrides
        )
    except Exception as e:  # missing or damaged config.json, wrong types in it; no network
        raise _hub_error(ref, key, where, e) from None
    if _gguf(m, ref):
        config.quantization_config = None  # dequantised on load; a plain model from here on
        del config.quantization_config
    if m.dropout is not None:
        set_dropout(config, m.dropout)
    return config


def _four_bit(cfg: Config) -> dict[str, Any]:
    """QLoRA: the frozen base held in 4-bit NF4 on this process's GPU (bitsandbytes), computing in bf16."""
    if cfg.lora.quantize_base is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "lora.quantize_base needs the bitsandbytes package",
            where=cfg.where("lora.quantize_base"),
            key="lora.quantize_base",
            hint="pip install bitsandbytes",
        )
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.lora.quantize_base,
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}


def to_device(model: Any, device: Any) -> Any:
    """The model on `device`; a 4-bit model was placed there when loaded (and refuses `.to`)."""
    if getattr(model, "is_loaded_in_4bit", False):
        return model
    return model.to(device)


def _gguf(m: ModelConfig, ref: str) -> dict[str, str]:
    """`gguf_file` for loading the configured base model; a run's model/ or checkpoint is plain."""
    return {"gguf_file": m.gguf_file} if m.gguf_file and ref == m.name_or_path else {}


def _auto(head: Head) -> Any:
    import transformers

    return getattr(transformers, head.auto_class)


def _size_config(cfg: Config, tokenizer: Any) -> dict[str, Any]:
    """The config of a new model: the size keys, the tokenizer's vocabulary and special tokens."""
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


def build(cfg: Config, head: Head, tokenizer: Any, attn: str) -> tuple[Any, str]:
    """The model a run trains, on the CPU: new (`model.architecture`) or pretrained (`model.name_or_path`)
    with `head`; dropout overrides, the tokenizer's fit and freezing applied. Returns (model, description)."""
    m = cfg.model
    cls = _auto(head)
    if m.architecture:
        from transformers import AutoConfig

        config = AutoConfig.for_model(m.architecture, **_size_config(cfg, tokenizer), **head.config)
        if m.dropout is not None:
            set_dropout(config, m.dropout)
        elif m.architecture in DECODERS:
            set_dropout(config, 0.0)  # from scratch on a small corpus: nanoGPT's zero dropout
        config._attn_implementation = attn
        model = cls.from_config(config, attn_implementation=attn)
        description = f"new {m.architecture} ({type(model).__name__})"
    else:
        ref = m.name_or_path
        assert ref is not None
        key, where = "model.name_or_path", cfg.where("model.name_or_path")
        config = load_config(ref, m, key, where, **head.config)
        if getattr(config, "ptft_compression", None):  # written by `ptft compress`
            cls = _Compressed(cls, attn, trainable=True)
        try:
            model = cls.from_pretrained(
                ref,
                config=config,
                revision=m.revision,
                trust_remote_code=m.trust_remote_code,
                attn_implementation=attn,
                # a checkpoint with another head size gets a new head
                **({"ignore_mismatched_sizes": True} if head.new_head else {}),
                **_gguf(m, ref),
                **_four_bit(cfg),
            )
        except Exception as e:  # the wrong head, weights that do not fit the config, pickled code refused
            raise ConfigError(
                f"cannot load {ref} as {head.what}: {_first_line(e)}", where=where, key=key
            ) from None
        if m.gguf_file:
            model = _plain(cls, model, attn)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise ConfigError(
                f"the tokenizer has {len(tokenizer):,} tokens but the model's embedding has "
                f"{model.get_input_embeddings().num_embeddings:,}",
                where=where,
                key="tokenizer",
                hint="use the model's own tokenizer (leave tokenizer.* unset)",
            )
        description = f"{ref} ({type(model).__name__})"
        if m.student_init == "every_other_layer":
            kept = every_other_layer(model)
            description += f", layers {', '.join(map(str, kept))} kept (every other layer)"
    check_fits(cfg, model)
    if head.pads:
        ensure_pad_token(tokenizer, model)
    freeze(model, m)
    if cfg.lora.r is not None:
        from ptft_cli import lora

        if cfg.lora.quantize_base is not None:
            from peft import prepare_model_for_kbit_training

            # norms and the head in fp32, inputs that carry gradients into the frozen 4-bit blocks
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.training.gradient_checkpointing
            )
        model = lora.apply(model, cfg.lora, head.peft_task, cfg.where("lora.target_modules"))
        description += f", LoRA r={cfg.lora.r} on {cfg.lora.target_modules or 'default'} layers"
    return model, description


def every_other_layer(model: Any) -> list[int]:
    """Keep the transformer blocks 0, 2, 4, ... of a loaded model, with their weights (DistilBERT's
    student initialisation); the embeddings, final norm and head stay. Returns the kept indices."""
    kept = list(range(0, model.config.get_text_config().num_hidden_layers, 2))
    keep_layers(model, kept)
    return kept


def keep_layers(model: Any, keep: list[int]) -> None:
    """Keep only these transformer blocks, in this order; the config (layer count, per-layer types)
    and the blocks' cache indices follow, so the model saves and loads as a smaller one."""
    import torch

    blocks = layer_list(model)
    config = model.config.get_text_config()
    if blocks is None or len(blocks) != config.num_hidden_layers:
        raise ConfigError(
            f"cannot find the {config.num_hidden_layers} transformer layers of {type(model).__name__}"
        )
    kept = torch.nn.ModuleList([blocks[i] for i in keep])
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if child is blocks:
                setattr(parent, name, kept)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index  # the KV cache is indexed by position in the stack
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]


def load_teacher(cfg: Config, head: Head, ref: str, device: Any) -> Any:
    """A distillation teacher: the task's Auto class from `ref` with the head it was trained with
    (its own labels), frozen, in eval mode (no dropout: deterministic targets), on `device`."""
    key, where = "distillation.teacher", cfg.where("distillation.teacher")
    config = load_config(ref, ModelConfig(), key, where)  # the student's gguf_file, dropout are not its own
    try:
        model = _auto(head).from_pretrained(ref, config=config, trust_remote_code=False)
    except Exception as e:  # the wrong head, weights that do not fit the config
        raise ConfigError(
            f"cannot load teacher {ref} as {head.what}: {_first_line(e)}", where=where, key=key
        ) from None
    model.requires_grad_(False)
    return to_device(model, device).eval()


def teacher_tokenizer(ref: str) -> Any:
    """The tokenizer saved with a teacher (None when its folder has none)."""
    if not any((Path(ref) / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref)


def merged(model: Any) -> tuple[Any, dict[str, Any] | None]:
    """A LoRA model's merged form for model/: (a model to `save_pretrained`, the state dict to save
    with it). A 4-bit base cannot hold full weights: they go into a bf16 model built from its config."""
    from ptft_cli import lora

    weights = lora.merged_state_dict(model)
    base = model.get_base_model()
    if not getattr(base, "is_loaded_in_4bit", False):
        return base, weights
    import copy

    import torch

    config = copy.deepcopy(base.config)  # the live model keeps its own
    config.quantization_config = None
    del config.quantization_config
    plain = type(base)._from_config(config, torch_dtype=torch.bfloat16)
    plain.load_state_dict({k: v.to("cpu", torch.bfloat16) for k, v in weights.items()}, strict=False)
    return plain, None


def _plain(cls: Any, loaded: Any, attn: str) -> Any:
    """A GGUF-loaded model's weights in a model built from its config: what `save_pretrained`
    accepts (it refuses a model that still says it came from a quantised file)."""
    model = cls.from_config(loaded.config, attn_implementation=attn)
    model.load_state_dict(loaded.state_dict())
    return model


def load_trained(cfg: Config, head: Head, ref: str, key: str, attn: str) -> Any:
    """A finished model (a run's model/ or any checkpoint with this head) for evaluate and predict."""
    where = cfg.where(key)
    config = load_config(ref, cfg.model, key, where)
    if head.needs_labels and not getattr(config, "id2label", None):
        raise DataError(f"{ref} has no label names (id2label)", where=where, key=key)
    auto = _Compressed(_auto(head), attn) if getattr(config, "ptft_compression", None) else _auto(head)
    try:
        model = auto.from_pretrained(
            ref,
            config=config,
            revision=cfg.model.revision,
            trust_remote_code=cfg.model.trust_remote_code,
            attn_implementation=attn,
        )
    except Exception as e:  # the wrong head, weights that do not fit the config, pickled code refused
        raise ConfigError(
            f"cannot load {ref} as {head.what}: {_first_line(e)}", where=where, key=key
        ) from None
    check_fits(cfg, model)
    return model


class _Compressed:
    """Stands in for an Auto class when a directory was written by `ptft compress`: its config.json
    records the structure (factorised layers, pruned heads, int8) to rebuild before the weights load."""

    def __init__(self, auto: Any, attn: str, *, trainable: bool = False):
        self.auto, self.attn, self.trainable = auto, attn, trainable

    def from_pretrained(self, ref: str, *, config: Any, **_: Any) -> Any:
        from ptft_cli import compression

        quantized = config.ptft_compression.get("quantize")
        if self.trainable and quantized:
            raise ValueError(f"it is quantized ({quantized}), and a quantized model cannot be trained")
        return compression.load(self.auto.from_config(config, attn_implementation=self.attn), ref)


def load_weights(model: Any, folder: Path) -> None:
    """A checkpoint's weights (model.safetensors) into a model built like the one that saved them.

    Tied weights are saved once; every other tensor must be present and of the same shape."""
    from safetensors.torch import load_file

    from ptft_cli import lora

    if lora.is_peft(model):
        lora.load_adapter(model, folder)
        return
    state = load_file(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied tensor (e.g. the output layer sharing the embedding) is saved under one of its names.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise RuntimeError(
            f"checkpoint {folder} does not fit the model: missing {untied}, unexpected {unexpected}"
        )


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


def layer_list(base: Any) -> Any:
    """The transformer block list of a model: the longest ModuleList in it (None: there is none)."""
    import torch

    lists = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else None


def compile_blocks(model: Any) -> bool:
    """Regional compilation: `torch.compile` each transformer block's forward (False: no block list).

    Blocks of one class and shape share one compiled graph (Dynamo treats their parameters as
    inputs), so a cold start compiles one block instead of the whole model: on the nanoGPT shape
    about a third of the compile time, the same step time. Compiling `forward`, not the module's
    call, keeps DDP/FSDP2 hooks and activation checkpointing outside the compiled region."""
    import torch

    blocks = layer_list(model)
    if blocks is None or len(blocks) == 0:
        return False
    for block in blocks:
        block.forward = torch.compile(block.forward)
    return True


def checkpoint_activations(model: Any, where: str) -> None:
    """Gradient checkpointing: keep only block inputs, recompute the rest in the backward pass
    (about a third more compute for a fraction of the activation memory)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"{type(model).__name__} does not support gradient checkpointing",
            where=where,
            key="training.gradient_checkpointing",
            hint="set it to false",
        )
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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
    layers = layer_list(base)
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


def max_positions(config: Any) -> int | None:
    """The longest sequence a model's position table allows (None: no absolute limit known);
    `config` is a transformers config or the dict of a config.json."""
    values = config if isinstance(config, dict) else config.to_dict()
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = values.get(name)
        if isinstance(value, int):
            pad = values.get("pad_token_id")
            if values.get("model_type") in OFFSET_POSITIONS and pad is not None:
                return value - (pad + 1)
            return value
    return None


def check_fits(cfg: Config, model: Any) -> None:
    """tokenizer.max_length must fit the model's position table."""
    limit = max_positions(model.config)
    if limit is not None and cfg.tokenizer.max_length > limit:
        _too_long(cfg, limit)


def _too_long(cfg: Config, limit: int) -> None:
    raise ConfigError(
        f"{cfg.tokenizer.max_length} tokens per sequence is more than the model's {limit} positions",
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
