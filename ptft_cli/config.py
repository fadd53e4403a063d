"""The config schema: every key, its type, default and meaning, in one place.

`load(path, overrides)` reads a YAML file with `yaml.safe_load` semantics, applies `--set key=value`
overrides, checks every key against the schema (unknown keys, types, ranges, choices, paths that
must exist) and returns a typed `Config`. All problems are gathered into one `ConfigError`, each
naming the file and line. Only this module knows YAML; only the schema holds defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ptft_cli.errors import ConfigError

TASKS = ("classification", "mlm", "mlm+nsp", "clm")
# Architectures ptft builds from scratch (tested); any transformers model loads by name_or_path.
ENCODERS = ("bert", "roberta", "distilbert", "electra", "modernbert")
DECODERS = ("gpt2", "llama", "mistral")
PRETRAIN_TASKS = ("mlm", "mlm+nsp", "clm")
FINETUNE_TASKS = ("classification", "clm")
# A Hugging Face Hub id: `name` or `org/name`, letters, digits, `-`, `_`, `.`.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def opt(default: Any, doc: str, **checks: Any) -> Any:
    """A schema field: its default, the one-line doc shown in the README, and value checks.

    checks: ge / gt / le / lt (numeric bounds), path=True (resolve against the config's folder),
    model_ref=True (a local directory or a Hub id).
    """
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"doc": doc, **checks}
    if factory:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name_or_path: str | None = opt(
        None,
        "Pretrained model: a local directory (e.g. a ptft run's `model/`) or a Hugging Face Hub id.",
        model_ref=True,
    )
    architecture: (
        Literal["bert", "roberta", "distilbert", "electra", "modernbert", "gpt2", "llama", "mistral"] | None
    ) = opt(
        None,
        "Build a new, randomly initialised model of this family (pretrain only; sized by the keys below). "
        "Null loads `name_or_path`.",
    )
    hidden_size: int = opt(256, "Width of a new model.", ge=8)
    num_layers: int = opt(4, "Transformer blocks of a new model.", ge=1)
    num_heads: int = opt(4, "Attention heads of a new model (must divide hidden_size).", ge=1)
    num_kv_heads: int | None = opt(
        None, "Key/value heads of a new llama/mistral (grouped-query attention); null: num_heads.", ge=1
    )
    intermediate_size: int | None = opt(
        None, "Feed-forward width of a new model; null: 4 x hidden_size.", ge=1
    )
    max_position_embeddings: int | None = opt(
        None, "Positions of a new model; null: tokenizer.max_length.", ge=2
    )
    revision: str | None = opt(None, "Hub branch, tag or commit to load (ignored for local directories).")
    trust_remote_code: bool = opt(
        False, "Allow model code shipped with a Hub repo to run. Off unless you trust the repo."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = opt(
        "auto",
        "Attention kernel. `auto`: `eager` on CPU for sequences up to 256 tokens (PyTorch's CPU SDPA backward "
        "is slower there), `sdpa` otherwise.",
    )
    dropout: float | None = opt(
        None,
        "Override every dropout of the model (hidden, attention, embedding; null keeps the model's).",
        ge=0.0,
        lt=1.0,
    )
    freeze_backbone: bool = opt(False, "Train only the task head; the pretrained encoder stays frozen.")
    train_top_k_layers: int | None = opt(
        None, "Train only the top k transformer layers plus the head (null trains everything).", ge=0
    )


@dataclass
class TokenizerConfig:
    name_or_path: str | None = opt(
        None, "Tokenizer directory or Hub id; null uses the model's.", model_ref=True
    )
    max_length: int = opt(
        128,
        "Longest input in tokens (longer texts are truncated); in pretraining, the length of each packed block.",
        ge=2,
    )
    type: Literal["bpe", "wordpiece", "char"] | None = opt(
        None,
        "Train a new tokenizer on the training corpus (pretrain): byte-level BPE (GPT-2 style), WordPiece "
        "(BERT style) or one token per character. Null uses `name_or_path` or the model's.",
    )
    vocab_size: int = opt(
        8000, "Vocabulary size of a trained tokenizer, special tokens included (a cap for `char`).", ge=2
    )
    min_frequency: int = opt(2, "Least count for a merge or word piece to enter a trained vocabulary.", ge=1)
    lowercase: bool = opt(
        False, "Lowercase text before a trained tokenizer sees it (WordPiece, like bert-base-uncased)."
    )
    special_tokens: dict[str, str] | None = opt(
        None,
        "Special tokens of a trained tokenizer by role (pad, unk, bos, eos, cls, sep, mask); null: the "
        "architecture's usual ones ([CLS]/[SEP]/[MASK]... for BERT, <|endoftext|> for GPT-2).",
    )


@dataclass
class DataConfig:
    train: str | list[str] | None = opt(
        None,
        "Training file(s): .csv, .tsv, .jsonl, .json, .parquet, or (language modelling) .txt; pretraining "
        "takes a list and globs (`corpus/*.txt`).",
        path=True,
    )
    validation: str | list[str] | None = opt(
        None, "Validation file(s); null holds out `validation_fraction` of `train`.", path=True
    )
    validation_fraction: float = opt(
        0.1,
        "Share held out for validation when `validation` is null (0: none): random rows for classification, the "
        "last characters of the corpus for language modelling (as nanoGPT).",
        ge=0.0,
        lt=1.0,
    )
    dataset: str | None = opt(
        None,
        "A Hugging Face dataset instead of files: a Hub id, or a local folder `datasets.load_dataset` reads.",
        model_ref=True,
    )
    dataset_config: str | None = opt(None, "Hub dataset configuration name (e.g. `sst2` of `glue`).")
    train_split: str = opt("train", "Hub dataset split used for training.")
    validation_split: str | None = opt(
        "validation", "Hub dataset split used for validation (null: hold out a fraction)."
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "txt"] = opt(
        "auto", "File format; `auto` goes by the file extension."
    )
    text_column: str = opt("text", "Column (or JSON field) holding the text.")
    text_pair_column: str | None = opt(
        None, "Second text column for sentence-pair tasks (entailment, paraphrase)."
    )
    label_column: str = opt("label", "Column holding the label: an integer id or a label name.")
    labels: list[str] | None = opt(
        None,
        "Label names in id order. Null: the sorted distinct labels of `train`. Integer labels index this list.",
    )
    max_train_samples: int | None = opt(
        None, "Keep this many training rows after a seeded shuffle (null keeps all).", ge=1
    )
    max_eval_samples: int | None = opt(
        None, "Keep this many validation rows or blocks (the first ones; null keeps all).", ge=1
    )
    document_boundary: Literal["file", "paragraph", "line"] = opt(
        "file",
        "Language modelling on .txt: what one document is (EOS/SEP goes between documents): the whole file "
        "(newlines kept), blank-line-separated paragraphs, or single lines.",
    )
    packing: bool = opt(
        True,
        "Language modelling: concatenate documents into full blocks of `tokenizer.max_length` tokens. False "
        "(masked LM only): one document (e.g. line) per example, padded.",
    )
    streaming: bool = opt(
        False,
        "Tokenize the corpus on the fly with bounded memory (corpora larger than RAM); needs training.max_steps "
        "and a `validation` file (or validation_fraction 0).",
    )
    shuffle_buffer: int = opt(
        10000, "Streaming: blocks held in memory and shuffled before they are batched.", ge=1
    )
    cache_dir: str | None = opt(
        "~/.cache/ptft",
        "Where tokenized corpora are cached, keyed on the files, the tokenizer and the options (null: no cache).",
        path=True,
    )


@dataclass
class ObjectiveConfig:
    mlm_probability: float = opt(0.15, "Masked LM: share of tokens chosen for prediction.", gt=0.0, lt=1.0)
    mask_replace_ratio: float = opt(
        0.8, "Masked LM: of the chosen tokens, the share replaced by the mask token.", ge=0.0, le=1.0
    )
    random_replace_ratio: float = opt(
        0.1,
        "Masked LM: of the chosen tokens, the share replaced by a random token (the rest stay as they are).",
        ge=0.0,
        le=1.0,
    )
    whole_word_masking: bool = opt(
        False, "Masked LM: choose whole words, masking all their sub-word tokens together."
    )
    nsp_random_ratio: float = opt(
        0.5,
        "mlm+nsp: share of sentence pairs whose second segment comes from a random other document.",
        ge=0.0,
        le=1.0,
    )


@dataclass
class TrainingConfig:
    epochs: float = opt(3.0, "Passes over the training data (fractions allowed).", gt=0)
    max_steps: int | None = opt(
        None, "Stop after this many optimizer steps; overrides `epochs` when set.", ge=1
    )
    batch_size: int = opt(32, "Examples per optimizer step per device, before gradient accumulation.", ge=1)
    eval_batch_size: int = opt(64, "Examples per forward pass in evaluation and prediction.", ge=1)
    gradient_accumulation_steps: int = opt(1, "Micro-batches summed into one optimizer step.", ge=1)
    learning_rate: float = opt(5e-5, "Peak learning rate of AdamW.", gt=0)
    min_learning_rate: float = opt(0.0, "Floor the schedule decays to (cosine and linear).", ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant"] = opt("linear", "Decay after warmup.")
    warmup_ratio: float = opt(
        0.0, "Share of all steps spent warming the learning rate up from 0.", ge=0.0, lt=1.0
    )
    warmup_steps: int | None = opt(
        None, "Warmup length in steps; set this or `warmup_ratio`, not both.", ge=0
    )
    weight_decay: float = opt(
        0.01, "AdamW decoupled weight decay; biases and norm weights are never decayed.", ge=0
    )
    adam_betas: list[float] = opt([0.9, 0.999], "AdamW (beta1, beta2).")
    adam_epsilon: float = opt(1e-8, "AdamW epsilon.", gt=0)
    max_grad_norm: float | None = opt(1.0, "Clip the global gradient norm to this (null: no clipping).", gt=0)
    label_smoothing: float = opt(0.0, "Cross-entropy label smoothing (classification).", ge=0.0, lt=1.0)
    group_by_length: bool = opt(
        True,
        "Batch examples of similar length together (less padding, much faster); batch order stays random.",
    )
    eval_every: int | Literal["epoch"] = opt(
        "epoch", "Evaluate every N optimizer steps, or at each epoch's end."
    )
    log_every: int = opt(10, "Write training loss, learning rate and throughput every N steps.", ge=1)
    best_metric: str | None = opt(
        None,
        "Keep the model with the best value of this validation metric in `model/` (classification: accuracy, "
        "macro_f1, loss). Null keeps the final model.",
    )
    early_stopping_patience: int | None = opt(
        None, "Stop after this many evaluations without a new best `best_metric` (null: never).", ge=1
    )
    keep_checkpoints: int = opt(1, "How many training-state checkpoints to keep in `checkpoints/`.", ge=1)


@dataclass
class EvaluateConfig:
    model: str | None = opt(None, "Model to evaluate; null uses `<output_dir>/model`.", model_ref=True)
    data: str | None = opt(None, "Labelled file to evaluate on; null uses `data.validation`.", path=True)
    output_dir: str | None = opt(
        None, "Where metrics.json and plots go; null uses `<output_dir>/eval`.", path=True
    )


@dataclass
class PredictConfig:
    model: str | None = opt(None, "Model to predict with; null uses `<output_dir>/model`.", model_ref=True)
    input: str | None = opt(
        None, "Texts to label: .txt (one per line), .jsonl or .csv (column `data.text_column`).", path=True
    )
    output: str | None = opt(
        None, "Predictions file, .jsonl or .csv; null writes `<output_dir>/predictions.jsonl`.", path=True
    )
    prompt: str | None = opt(
        None, "Language models: one prompt (or masked text) instead of an input file (also `--prompt`)."
    )
    max_new_tokens: int = opt(64, "Generation: tokens to add to each prompt.", ge=1)
    do_sample: bool = opt(
        False, "Generation: sample (with temperature, top_k, top_p) instead of greedy decoding."
    )
    temperature: float = opt(1.0, "Generation: softmax temperature when sampling.", gt=0)
    top_k: int | None = opt(
        50,
        "Generation: sample from the k most likely tokens (null: all). Fill-mask: predictions per mask.",
        ge=1,
    )
    top_p: float | None = opt(
        None,
        "Generation: nucleus sampling, the smallest set of tokens with this much probability.",
        gt=0,
        le=1,
    )


@dataclass
class Config:
    task: Literal["classification", "mlm", "mlm+nsp", "clm"] = opt(
        "classification", "What to train: classification (finetune), mlm / mlm+nsp / clm (pretrain)."
    )
    output_dir: str | None = opt(
        None, "Run directory. Required. A run never writes into another run's directory.", path=True
    )
    seed: int = opt(0, "Seed for shuffling, initialisation and dropout.", ge=0)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps. `auto` takes CUDA, then MPS, then the CPU.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto",
        "Training: `auto` is bf16 autocast on CUDA with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX), "
        "fp16 on older CUDA, else fp32. `evaluate`/`predict` on CPU use fp32 under auto.",
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "The network."})
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig, metadata={"doc": "Tokenization."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "Where the examples come from."})
    objective: ObjectiveConfig = field(
        default_factory=ObjectiveConfig, metadata={"doc": "Pretraining objectives."}
    )
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "Optimisation."})
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, metadata={"doc": "`ptft evaluate`."})
    predict: PredictConfig = field(default_factory=PredictConfig, metadata={"doc": "`ptft predict`."})

    # Not schema keys: where the config came from, for error messages and the resolved copy.
    source: Path | None = field(default=None, repr=False, compare=False, metadata={"internal": True})
    lines: dict[str, int] = field(
        default_factory=dict, repr=False, compare=False, metadata={"internal": True}
    )
    overridden: set[str] = field(default_factory=set, repr=False, compare=False, metadata={"internal": True})

    def where(self, key: str) -> str:
        """`file:line` of a key, `--set` if the command line set it, or just the file."""
        if key in self.overridden or any(key.startswith(o + ".") for o in self.overridden):
            return "--set"
        if self.source is None:
            return "<config>"
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else str(self.source)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what `<output_dir>/config.yaml` holds)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata.get("internal")
        }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


# --------------------------------------------------------------------------------------------
# Loading


def load(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override, type-check and validate a config file. Raises ConfigError listing every problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        hint = (
            "check the path; configs/ holds examples"
            if not path.exists()
            else "pass a YAML file, not a directory"
        )
        raise ConfigError(
            "config file not found" if not path.exists() else "is not a file", where=str(path), hint=hint
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not UTF-8 text (byte {e.start})", where=str(path), hint="save the config as UTF-8"
        ) from None
    raw, lines = _parse_yaml(text, path)
    problems: list[ConfigError] = []
    for item in overrides:
        _apply_override(raw, item, problems)
    cfg = Config(source=path.resolve(), lines=lines, overridden=raw.pop("__overridden__", set()))
    _fill(cfg, raw, "", path.resolve().parent, cfg, problems)
    _resolve_default_paths(cfg, path.resolve().parent)
    if not problems:
        _check_semantics(cfg, problems)
    if problems:
        raise ConfigError.many(problems)
    return cfg


def _parse_yaml(text: str, path: Path) -> tuple[dict, dict[str, int]]:
    """safe_load the text and record the line of every key (`section.key` -> line)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"invalid YAML: {problem}", where=where, hint="check indentation and quoting"
        ) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError("config file is empty", where=str(path), hint="start from a file in configs/")
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {type(data).__name__}",
            where=f"{path}:1",
            hint="e.g. `task: classification`",
        )
    lines: dict[str, int] = {}
    _record_lines(node, "", lines, path)
    return data, lines


def _record_lines(node: yaml.Node, prefix: str, lines: dict[str, int], path: Path) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        if key in seen:
            raise ConfigError(
                "key appears twice",
                where=f"{path}:{key_node.start_mark.line + 1}",
                key=key,
                hint="keep one of them",
            )
        seen.add(key)
        lines[key] = key_node.start_mark.line + 1
        _record_lines(value_node, key + ".", lines, path)


def _apply_override(raw: dict, item: str, problems: list[ConfigError]) -> None:
    """Apply `a.b.c=value` to the raw dict; the value is parsed as a YAML scalar/list."""
    if "=" not in item:
        problems.append(
            ConfigError(
                f"expected key=value, got {item!r}",
                where="--set",
                hint="e.g. --set training.learning_rate=3e-5",
            )
        )
        return
    key, _, text = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(ConfigError(f"{part!r} is not a section", where="--set", key=key))
            return
        node = child
    node[parts[-1]] = value
    raw.setdefault("__overridden__", set()).add(key)


def _fill(target: Any, raw: dict, prefix: str, base: Path, cfg: Config, problems: list[ConfigError]) -> None:
    """Copy raw values into the dataclass `target`, converting and checking each against its field."""
    fields = {f.name: f for f in dataclasses.fields(target) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(type(target))
    for name, value in raw.items():
        key = f"{prefix}{name}"
        where = cfg.where(key)
        if name not in fields:
            problems.append(
                ConfigError(
                    "unknown key", where=where, key=key, hint=_suggest(str(name), list(fields), prefix)
                )
            )
            continue
        f, hint_type = fields[name], hints[name]
        if dataclasses.is_dataclass(hint_type):
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(
                    ConfigError(f"must be a section of keys, got {_show(value)}", where=where, key=key)
                )
                continue
            _fill(getattr(target, name), value, key + ".", base, cfg, problems)
            continue
        # --set values resolve against the working directory, file values against the config's folder.
        relative_to = Path.cwd() if where == "--set" else base
        try:
            converted = _convert(value, hint_type)
            _check_bounds(converted, f.metadata)
            converted = _resolve_paths(converted, f.metadata, relative_to)
        except ValueError as e:
            problems.append(ConfigError(str(e), where=where, key=key, hint=_allowed(f, hint_type)))
            continue
        setattr(target, name, converted)


def _resolve_default_paths(section: Any, base: Path) -> None:
    """Schema defaults that are paths (e.g. `~/.cache/ptft`) get the same treatment as written ones."""
    for f in dataclasses.fields(section):
        if f.metadata.get("internal"):
            continue
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _resolve_default_paths(value, base)
        elif f.metadata.get("path") and isinstance(value, str) and value == f.default:
            setattr(section, f.name, _resolve_paths(value, f.metadata, base))


def _suggest(name: str, valid: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{prefix}{close[0]}`?"
    return f"valid keys here: {', '.join(valid)}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[0])} to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    limits = [f"{sym} {f.metadata[k]}" for k, sym in bounds.items() if k in f.metadata]
    text = f"allowed: {_type_name(tp)}"
    return text + (f" ({', '.join(limits)})" if limits else "")


def _convert(value: Any, tp: Any) -> Any:
    """Convert a YAML value to the annotated type or raise ValueError saying what was wrong."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ValueError("must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"expected {_type_name(tp)}, got {_show(value)}")
    if value is None:
        raise ValueError("must not be null")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{_show(value)} is not one of {', '.join(map(str, choices))}{extra}")
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {_show(value)}")
        return {_convert(k, key_type): _convert(v, value_type) for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {_type_name(item_type)}, got {_show(value)}")
        return [_convert(v, item_type) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string; accept it as a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {_show(value)}")
    raise TypeError(f"schema type {tp} not handled")  # a bug in the schema, not user input


def _check_bounds(value: Any, meta: dict) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for key, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if key in meta and not ok(value, meta[key]):
            raise ValueError(f"{value} is out of range: must be {word} {meta[key]}")


def _resolve_paths(value: Any, meta: dict, base: Path) -> Any:
    """Make relative paths absolute against `base`; leave Hub ids alone."""
    if value is None:
        return None
    if meta.get("path"):
        if isinstance(value, list):
            return [_resolve_paths(v, meta, base) for v in value]
        return str((base / Path(value).expanduser()).resolve()) if "://" not in value else value
    if meta.get("model_ref"):
        local = (base / Path(value).expanduser()).resolve()
        looks_local = value.startswith((".", "/", "~")) or not HUB_ID.match(value)
        return str(local) if local.exists() or looks_local else value
    return value


# --------------------------------------------------------------------------------------------
# Cross-field checks (impossible combinations). File existence is checked by the runner's
# preflight, which knows which files the command needs.


def _check_semantics(cfg: Config, problems: list[ConfigError]) -> None:
    t = cfg.training

    def bad(key: str, message: str, hint: str | None = None) -> None:
        problems.append(ConfigError(message, where=cfg.where(key), key=key, hint=hint))

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        bad("device", f"{cfg.device!r} is not a device", "allowed: auto, cpu, cuda, cuda:N, mps")
    if cfg.output_dir is None:
        bad("output_dir", "is required", "e.g. `output_dir: runs/my-run` (relative to the config's folder)")
    if t.warmup_steps is not None and t.warmup_ratio > 0:
        bad("training.warmup_steps", "set either warmup_steps or warmup_ratio, not both")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        bad("training.adam_betas", f"{t.adam_betas} must be two numbers in [0, 1)", "e.g. [0.9, 0.999]")
    if isinstance(t.eval_every, int) and t.eval_every < 1:
        bad("training.eval_every", f"{t.eval_every} must be >= 1 or `epoch`")
    if t.min_learning_rate > t.learning_rate:
        bad("training.min_learning_rate", f"{t.min_learning_rate} is above learning_rate {t.learning_rate}")
    if t.early_stopping_patience is not None and t.best_metric is None:
        bad("training.early_stopping_patience", "needs training.best_metric to know what 'better' means")
    d = cfg.data
    allowed = ("accuracy", "macro_f1", "loss") if cfg.task == "classification" else ("loss", "perplexity")
    kind = "classification" if cfg.task == "classification" else "language-model"
    if t.best_metric is not None and t.best_metric not in allowed:
        bad(
            "training.best_metric",
            f"{t.best_metric!r} is not a {kind} metric",
            f"allowed: {', '.join(allowed)}",
        )
    m, tok, o = cfg.model, cfg.tokenizer, cfg.objective
    if m.architecture and m.name_or_path:
        bad(
            "model.architecture",
            "set either model.architecture (a new model) or model.name_or_path (a pretrained one), not both",
        )
    if m.architecture and cfg.task in ("mlm", "mlm+nsp") and m.architecture not in ENCODERS:
        bad(
            "model.architecture",
            f"{m.architecture} is a decoder; masked LM needs an encoder",
            f"allowed: {', '.join(ENCODERS)}",
        )
    if m.architecture and cfg.task == "clm" and m.architecture not in DECODERS:
        bad(
            "model.architecture",
            f"{m.architecture} is an encoder; causal LM needs a decoder",
            f"allowed: {', '.join(DECODERS)}",
        )
    if m.architecture and cfg.task == "mlm+nsp" and m.architecture != "bert":
        bad(
            "model.architecture",
            f"next-sentence prediction is BERT's objective, not {m.architecture}'s",
            "use architecture: bert, or task: mlm",
        )
    if m.architecture and cfg.task == "classification":
        bad(
            "model.architecture",
            "classification fine-tunes a pretrained model",
            "pretrain one first (ptft pretrain), then set model.name_or_path",
        )
    if m.hidden_size % m.num_heads:
        bad("model.num_heads", f"{m.num_heads} does not divide hidden_size {m.hidden_size}")
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        bad("model.num_kv_heads", f"{m.num_kv_heads} does not divide num_heads {m.num_heads}")
    if m.max_position_embeddings is not None and m.max_position_embeddings < tok.max_length:
        bad(
            "model.max_position_embeddings",
            f"{m.max_position_embeddings} is shorter than tokenizer.max_length {tok.max_length}",
        )
    if tok.type and tok.name_or_path:
        bad(
            "tokenizer.type",
            "set either tokenizer.type (train a new one) or tokenizer.name_or_path, not both",
        )
    roles = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
    for role in tok.special_tokens or {}:
        if role not in roles:
            bad("tokenizer.special_tokens", f"unknown role {role!r}", f"allowed roles: {', '.join(roles)}")
    if o.mask_replace_ratio + o.random_replace_ratio > 1:
        bad(
            "objective.random_replace_ratio",
            f"mask_replace_ratio + random_replace_ratio = {o.mask_replace_ratio + o.random_replace_ratio:g} exceeds 1",
        )
    if d.streaming and t.max_steps is None:
        bad("data.streaming", "a stream has no known length, so training needs training.max_steps")
    if d.streaming and not d.validation and not d.dataset and d.validation_fraction > 0:
        bad(
            "data.streaming",
            "a stream cannot hold out a fraction",
            "set data.validation to a file, or data.validation_fraction: 0",
        )
    if not d.packing and cfg.task != "mlm":
        bad("data.packing", "packing: false (one document per example) is for task: mlm")
    if d.dataset and d.train:
        bad("data.dataset", "set either data.dataset (Hub) or data.train (local file), not both")
    if cfg.model.freeze_backbone and cfg.model.train_top_k_layers is not None:
        bad("model.train_top_k_layers", "conflicts with model.freeze_backbone: choose one")
    if d.labels is not None and len(set(d.labels)) != len(d.labels):
        bad("data.labels", "label names must be distinct")
    if d.labels is not None and len(d.labels) < 2:
        bad("data.labels", "a classifier needs at least 2 labels")


# --------------------------------------------------------------------------------------------
# Reference (README generation and its test)


def reference() -> list[tuple[str, str, Any, str]]:
    """Every key as (dotted key, type, default, doc), in schema order."""
    rows: list[tuple[str, str, Any, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                rows.append((prefix + f.name, _type_name(tp), getattr(defaults, f.name), f.metadata["doc"]))

    walk(Config, "")
    return rows


def dump(cfg: Config) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
