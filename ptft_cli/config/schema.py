"""The config schema: every key, its type, default and meaning, in one place.

Each section is a dataclass whose field docs become the README's config reference and whose
metadata carries the checks (`ge`/`gt`/`le`/`lt` bounds, `path`, `model_ref`). Only this module holds
defaults; `load.py` reads YAML into these classes. A rule that belongs to one task lives with that
task (`tasks/<task>.py`), not here.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

# Architectures ptft builds from scratch (tested); any transformers model loads by name_or_path.
ENCODERS = ("bert", "roberta", "distilbert", "electra", "modernbert")
DECODERS = ("gpt2", "llama", "mistral")
# A Hugging Face Hub id: `name` or `org/name`, letters, digits, `-`, `_`, `.`.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def opt(default: Any, doc: str, **checks: Any) -> Any:
    """A schema field: its default, the one-line doc shown in the README, and value checks.

    checks: ge / gt / le / lt (numeric bounds), path=True (resolve against the config's folder; a value
    equal to `keyword` stays as it is), resume_safe=True (may differ when a run resumes; other keys
    must match the checkpoint's config),
    model_ref=True (a local directory or a Hub id), blank_ok=True (whitespace-only strings are values).
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
    hidden_size: int = opt(256, "Width of a new model.", ge=8, le=65_536)
    num_layers: int = opt(4, "Transformer blocks of a new model.", ge=1, le=1_000)
    num_heads: int = opt(4, "Attention heads of a new model (must divide hidden_size).", ge=1, le=1_024)
    num_kv_heads: int | None = opt(
        None,
        "Key/value heads of a new llama/mistral (grouped-query attention); null: num_heads.",
        ge=1,
        le=1_024,
    )
    intermediate_size: int | None = opt(
        None, "Feed-forward width of a new model; null: 4 x hidden_size.", ge=1, le=1_048_576
    )
    max_position_embeddings: int | None = opt(
        None, "Positions of a new model; null: tokenizer.max_length.", ge=2, le=1_048_576
    )
    gguf_file: str | None = opt(
        None,
        "A GGUF file inside `name_or_path` (a folder or Hub repo) to load instead of safetensors; its weights "
        "are dequantised (fp32), so a quantised checkpoint can be fine-tuned, and its tokenizer (chat "
        "template included) comes with it.",
    )
    revision: str | None = opt(None, "Hub branch, tag or commit to load (ignored for local directories).")
    trust_remote_code: bool = opt(
        False, "Allow model code shipped with a Hub repo to run. Off unless you trust the repo."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = opt(
        "auto",
        "Attention kernel. `auto`: `eager` on CPU for sequences up to 256 tokens (PyTorch's CPU SDPA backward "
        "is slower there), `sdpa` otherwise.",
        resume_safe=True,
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
    student_init: Literal["every_other_layer"] | None = opt(
        None,
        "Build a smaller model from `name_or_path`: `every_other_layer` keeps its layers 0, 2, 4, ... with their "
        "weights (DistilBERT's student initialisation); null loads every layer.",
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
        le=1_048_576,
    )
    type: Literal["bpe", "wordpiece", "char"] | None = opt(
        None,
        "Train a new tokenizer on the training corpus (pretrain): byte-level BPE (GPT-2 style), WordPiece "
        "(BERT style) or one token per character. Null uses `name_or_path` or the model's.",
    )
    vocab_size: int = opt(
        8000,
        "Vocabulary size of a trained tokenizer, special tokens included (a cap for `char`).",
        ge=2,
        le=4_194_304,
    )
    min_frequency: int = opt(
        2, "Least count for a merge or word piece to enter a trained vocabulary.", ge=1, le=1_000_000_000
    )
    lowercase: bool = opt(
        False, "Lowercase text before a trained tokenizer sees it (WordPiece, like bert-base-uncased)."
    )
    special_tokens: dict[str, str] | None = opt(
        None,
        "Special tokens of a trained tokenizer by role (pad, unk, bos, eos, cls, sep, mask); null: the "
        "architecture's usual ones ([CLS]/[SEP]/[MASK]... for BERT, <|endoftext|> for GPT-2).",
    )


@dataclass
class AugmentConfig:
    """EDA-style text augmentation of classification training rows (validation never changes)."""

    delete: float = opt(
        0.0,
        "Augmentation: drop each word of a training text with this probability (EDA random deletion; one "
        "word always stays).",
        ge=0.0,
        le=1.0,
    )
    swap: float = opt(
        0.0,
        "Augmentation: with this probability per word, swap it with another random word of the same text.",
        ge=0.0,
        le=1.0,
    )
    insert: float = opt(
        0.0,
        "Augmentation: with this probability per word, insert a copy of a random word of the same text at a "
        "random position (EDA's insertion without synonyms).",
        ge=0.0,
        le=1.0,
    )
    backoff: float | None = opt(
        None,
        "Augmentation: multiply delete, swap and insert by this factor for each evaluation in a row without a "
        "new best `training.best_metric` (0 turns augmentation off until the metric improves); null: never.",
        ge=0.0,
        lt=1.0,
    )

    def active(self) -> bool:
        return bool(self.delete or self.swap or self.insert)


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
        None,
        "Keep this many training rows after a seeded shuffle (null keeps all).",
        ge=1,
        le=1_000_000_000_000,
    )
    max_eval_samples: int | None = opt(
        None,
        "Keep this many validation rows or blocks (the first ones; null keeps all).",
        ge=1,
        resume_safe=True,
        le=1_000_000_000_000,
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
        10000, "Streaming: blocks held in memory and shuffled before they are batched.", ge=1, le=10_000_000
    )
    cache_dir: str | None = opt(
        "~/.cache/ptft",
        "Where tokenized corpora are cached, keyed on the files, the tokenizer and the options (null: no cache).",
        path=True,
        resume_safe=True,
    )
    augment: AugmentConfig = field(
        default_factory=AugmentConfig,
        metadata={"doc": "Text augmentation of classification training data, new views every epoch."},
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
    epochs: float = opt(
        3.0, "Passes over the training data (fractions allowed).", gt=0, resume_safe=True, le=100_000
    )
    max_steps: int | None = opt(
        None,
        "Stop after this many optimizer steps; overrides `epochs` when set.",
        ge=1,
        resume_safe=True,
        le=1_000_000_000,
    )
    batch_size: int = opt(
        32,
        "Examples per micro-batch per process. A step's global batch is batch_size × "
        "gradient_accumulation_steps × processes; a resumed run may split the same global batch differently.",
        ge=1,
        le=1_048_576,
        resume_safe=True,
    )
    eval_batch_size: int = opt(
        64, "Examples per forward pass in evaluation and prediction.", ge=1, resume_safe=True, le=1_048_576
    )
    gradient_accumulation_steps: int = opt(
        1,
        "Micro-batches per process summed into one optimizer step (gradients are exchanged at the last).",
        ge=1,
        le=100_000,
        resume_safe=True,
    )
    learning_rate: float = opt(5e-5, "Peak learning rate of AdamW.", gt=0, le=10.0)
    min_learning_rate: float = opt(0.0, "Floor the schedule decays to (cosine and linear).", ge=0, le=10.0)
    lr_scheduler: Literal["linear", "cosine", "constant"] = opt("linear", "Decay after warmup.")
    warmup_ratio: float = opt(
        0.0, "Share of all steps spent warming the learning rate up from 0.", ge=0.0, lt=1.0
    )
    warmup_steps: int | None = opt(
        None, "Warmup length in steps; set this or `warmup_ratio`, not both.", ge=0, le=1_000_000_000
    )
    weight_decay: float = opt(
        0.01, "AdamW decoupled weight decay; biases and norm weights are never decayed.", ge=0, le=100.0
    )
    l1: float = opt(
        0.0,
        "L1 penalty coefficient: adds l1 × sum |w| over the weights AdamW decays (matrices and embeddings, "
        "never biases or norm weights) to the loss, once per optimizer step; logged apart as `l1_penalty` "
        "(`loss` stays the task's). 0: off.",
        ge=0.0,
        le=100.0,
    )
    adam_betas: list[float] = opt([0.9, 0.999], "AdamW (beta1, beta2).")
    adam_epsilon: float = opt(1e-8, "AdamW epsilon.", gt=0, le=1.0)
    max_grad_norm: float | None = opt(
        1.0, "Clip the global gradient norm to this (null: no clipping).", gt=0, le=1e6
    )
    label_smoothing: float = opt(0.0, "Cross-entropy label smoothing (classification).", ge=0.0, lt=1.0)
    group_by_length: bool = opt(
        True,
        "Batch examples of similar length together (less padding, much faster); batch order stays random.",
    )
    eval_every: int | Literal["epoch"] = opt(
        "epoch",
        "Evaluate every N optimizer steps, or at each epoch's end.",
        resume_safe=True,
        le=1_000_000_000,
    )
    log_every: int = opt(
        10,
        "Write training loss, learning rate and throughput every N steps.",
        ge=1,
        resume_safe=True,
        le=1_000_000_000,
    )
    best_metric: str | None = opt(
        None,
        "Keep the model with the best value of this validation metric in `model/` (classification: accuracy, "
        "macro_f1, loss). Null keeps the final model.",
    )
    early_stopping_patience: int | None = opt(
        None,
        "Stop after this many evaluations without a new best `best_metric` (null: never).",
        ge=1,
        resume_safe=True,
        le=1_000_000,
    )
    save_every: int | Literal["eval"] = opt(
        "eval",
        "Save a resumable checkpoint every N optimizer steps, or at each evaluation (`eval`); always at the end "
        "and when interrupted.",
        resume_safe=True,
        le=1_000_000_000,
    )
    keep_checkpoints: int = opt(
        1,
        "Checkpoints kept in `checkpoints/`: the newest N, plus the one with the best `best_metric`.",
        ge=1,
        resume_safe=True,
        le=1_000_000,
    )
    compile: bool = opt(
        False,
        "`torch.compile` the model's training forward and backward (the first steps take longer to compile).",
        resume_safe=True,
    )
    compile_scope: Literal["blocks", "model"] = opt(
        "blocks",
        "What `compile` compiles: each transformer block (compiled once, reused by every block of the same "
        "shape: a fraction of the compile time) or the whole model (fuses across blocks, compiles longest).",
        resume_safe=True,
    )
    gradient_checkpointing: bool = opt(
        False,
        "Recompute activations in the backward pass: much less memory for about a third more compute.",
        resume_safe=True,
    )


@dataclass
class DistributedConfig:
    strategy: Literal["ddp", "fsdp"] = opt(
        "ddp",
        "With several processes: `ddp` keeps a full model per process; `fsdp` (FSDP2) shards parameters, "
        "gradients and optimizer state per transformer block (models that do not fit one device).",
        resume_safe=True,
    )
    nproc_per_node: int | None = opt(
        None,
        "Processes on this machine (one per GPU); `ptft` then launches them through torchrun. Also "
        "`--nproc`. Null: one, or what an outer `torchrun` started.",
        ge=1,
        le=1024,
        resume_safe=True,
    )
    nnodes: int = opt(1, "Machines in the run (also `--nnodes`).", ge=1, le=100_000, resume_safe=True)
    rdzv_endpoint: str | None = opt(
        None,
        "host:port where the machines of a multi-node run meet (also `--rdzv-endpoint`).",
        resume_safe=True,
    )
    timeout_minutes: int = opt(
        10,
        "How long a process waits for the others in a collective before giving up.",
        ge=1,
        le=10_000,
        resume_safe=True,
    )


@dataclass
class EvaluateConfig:
    model: str | None = opt(None, "Model to evaluate; null uses `<output_dir>/model`.", model_ref=True)
    data: str | None = opt(None, "Labelled file to evaluate on; null uses `data.validation`.", path=True)
    output_dir: str | None = opt(
        None, "Where metrics.json and plots go; null uses `<output_dir>/eval`.", path=True
    )
    generate: int = opt(
        50,
        "sft: generate replies (greedy, `predict.*` settings) for the first N evaluation examples and score "
        "them against the reference (`sft.answer_pattern`); 0: loss only. Evaluation during training "
        "generates only when `training.best_metric` is a generation metric.",
        ge=0,
        le=1_000_000_000,
    )
    group_by: str | None = opt(
        None,
        "Classification: a column of the evaluation data file (e.g. a demographic or a domain); metrics.json "
        "then also holds accuracy, macro-F1 and support per group, and the largest gap between groups.",
    )
    compare: list[str] = opt(
        [],
        "Runs or model directories to compare with the model (also `--compare`): parameters, size on disk, "
        "`predict` throughput and the metric, written to compare.json and compare.png.",
        path=True,
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
    max_new_tokens: int = opt(64, "Generation: tokens to add to each prompt.", ge=1, le=1_048_576)
    do_sample: bool = opt(
        False, "Generation: sample (with temperature, top_k, top_p) instead of greedy decoding."
    )
    temperature: float = opt(1.0, "Generation: softmax temperature when sampling.", gt=0, le=100.0)
    top_k: int | None = opt(
        50,
        "Generation: sample from the k most likely tokens (null: all). Fill-mask: predictions per mask.",
        ge=1,
        le=10_000_000,
    )
    top_p: float | None = opt(
        None,
        "Generation: nucleus sampling, the smallest set of tokens with this much probability.",
        gt=0,
        le=1,
    )
    repetition_penalty: float = opt(
        1.0,
        "Generation: make tokens already in the prompt or completion less likely (positive logits are "
        "divided by it, negative ones multiplied; 1.0: off, 1.1-1.3 curbs loops).",
        gt=0,
        le=100.0,
    )
    stop: list[str] = opt(
        [],
        'Generation: stop strings, e.g. `["\\n\\n", "Question:"]`: a completion ends before the first one '
        "it contains (finish_reason `stop`); whitespace-only strings count.",
        blank_ok=True,
    )


@dataclass
class ExplainConfig:
    model: str | None = opt(None, "Model to explain; null uses `<output_dir>/model`.", model_ref=True)
    input: str | None = opt(
        None,
        "Texts to explain: .txt (one per line), .jsonl or .csv (column `data.text_column`); null: "
        "`predict.input` (also `--input`).",
        path=True,
    )
    text: str | None = opt(None, "One text to explain instead of a file (also `--text`).")
    output: str | None = opt(
        None,
        "The .jsonl of explanations; the HTML page goes beside it (same name, .html). Null writes "
        "`<output_dir>/explanations.jsonl` and `.html` (also `--output`).",
        path=True,
    )
    methods: list[Literal["integrated_gradients", "attention_rollout"]] = opt(
        ["integrated_gradients", "attention_rollout"],
        "Attributions to compute: Integrated Gradients on the input embeddings towards the predicted "
        "class's probability (needs captum: pip install 'ptft[explain]') and attention rollout (Abnar & "
        "Zuidema 2020; the model runs with eager attention to return its attention weights).",
    )
    steps: int = opt(
        50,
        "Integrated Gradients: interpolation steps between baseline and input (more: smaller "
        "convergence delta, slower).",
        ge=2,
        le=10_000,
    )
    baseline: Literal["auto", "mask", "pad", "zeros"] = opt(
        "auto",
        "Integrated Gradients' reference input: every non-special token replaced by the mask (or pad) "
        "token, positions and special tokens kept, so only word identity is attributed; or all-zero "
        "embeddings. `auto`: mask when the tokenizer has one (an MLM-pretrained encoder learnt it as 'a "
        "word, unknown'; pad is never attended in training, so its embedding means little), else pad.",
    )
    max_examples: int = opt(
        100, "Explain at most this many texts (the first ones of the input).", ge=1, le=1_000_000
    )


@dataclass
class LoraConfig:
    r: int | None = opt(
        None,
        "LoRA rank: train low-rank adapters beside frozen weights (peft) instead of the weights themselves; "
        "null: full fine-tuning. `model/` is saved merged (a plain model), `adapter/` on its own.",
        ge=1,
        le=65_536,
    )
    alpha: float = opt(32.0, "LoRA scaling numerator: updates are scaled by alpha / r.", gt=0, le=1e6)
    dropout: float = opt(0.05, "Dropout on the adapters' input.", ge=0.0, lt=1.0)
    target_modules: str | list[str] | None = opt(
        "all-linear",
        "Layers that get adapters: `all-linear` (every linear layer but the output head), a list of module "
        "names (q_proj, v_proj, ...; a name matches any module ending in it), or null: peft's default for "
        "the architecture.",
    )
    quantize_base: Literal["nf4"] | None = opt(
        None, "QLoRA: hold the frozen base in 4-bit NF4 (bitsandbytes, CUDA only)."
    )


@dataclass
class DistillationConfig:
    teacher: str | None = opt(
        None,
        "Distil from this model: a ptft run directory (its `model/` is used) or any Hugging Face model directory "
        "with the same labels (classification) or the same vocabulary (language models). Null: no teacher.",
        model_ref=True,
    )
    temperature: float = opt(2.0, "Softmax temperature of both teacher and student in the soft loss.", gt=0)
    alpha: float = opt(
        0.5,
        "Weight of the soft loss: alpha * T^2 * KL(teacher || student) + (1 - alpha) * the task's own loss.",
        ge=0.0,
        le=1.0,
    )
    hidden: bool = opt(
        False,
        "Also match hidden states: mean squared error between student layer i and teacher layer "
        "i * teacher_layers // student_layers (embeddings included), weight 1. Needs equal hidden sizes.",
    )
    transfer_data: str | None = opt(
        None,
        "Classification: unlabeled rows (same text columns as `data.train`, no label needed) added to the "
        "training rows; they take the soft loss only.",
        path=True,
    )


@dataclass
class SftConfig:
    prompt: str | list[str] | None = opt(
        None,
        "The user message: a format string of field paths in braces, e.g. `{question}` or "
        "`{instruction}\n\n{instances[0].input}`. A list gives alternatives: the first whose fields are all "
        "non-empty in a record (Alpaca's optional input).",
    )
    response: str | None = opt(None, "The assistant reply, e.g. `{answer}` or `{instances[0].output}`.")
    messages: str | None = opt(
        None, "Instead of prompt and response: the field holding a chat, a list of {role, content}."
    )
    system: str | None = opt(None, "A system message before each conversation (null: the template's own).")
    chat_template: bool = opt(
        True,
        "Render conversations with the tokenizer's chat template (it must have one); false: plain text, "
        "prompt then response then EOS.",
    )
    train_on_prompt: bool = opt(
        False, "Train on every token, prompts included (default: only the assistant's replies)."
    )
    long_prompts: Literal["error", "skip"] = opt(
        "error",
        "A record whose prompt alone fills tokenizer.max_length: stop with its row (`error`) or leave it out "
        "and count it (`skip`). Replies too long are cut at their end, and counted.",
    )
    packing: bool = opt(
        False,
        "Pack short conversations into rows of tokenizer.max_length; attention stays within each one "
        "(position ids restart). False: length-grouped batches with dynamic padding.",
    )
    answer_pattern: str | None = opt(
        None,
        "Generation metrics: a regex whose first group extracts the answer from the reply and the reference "
        "(e.g. GSM8K's `####\\s*(-?[\\d,\\.]+)`); null compares whole replies.",
        resume_safe=True,
    )


@dataclass
class LoggingConfig:
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = opt(
        [],
        "Experiment trackers that receive every metrics.jsonl record (as `train/loss`, `eval/accuracy`, ... at "
        "the global step), the resolved config as hyperparameters and loss.png / the confusion matrix as "
        "images: `tensorboard` (event files in `<output_dir>/tensorboard/`), `wandb` (offline unless "
        "WANDB_MODE or an API key says otherwise), `mlflow` (MLFLOW_TRACKING_URI, else "
        "`<output_dir>/mlruns`). Each is an optional extra, e.g. `pip install 'ptft[tensorboard]'`.",
    )
    project: str | None = opt(None, "W&B project and MLflow experiment the run is filed under; null: `ptft`.")
    run_name: str | None = opt(None, "The run's name in the trackers; null: the output directory's name.")


@dataclass
class LowRankConfig:
    rank_ratio: float | None = opt(
        None,
        "SVD-factorise linear layers into two, keeping this share of each layer's parameters (0.5: half); "
        "set this or `energy`.",
        gt=0.0,
        lt=1.0,
    )
    energy: float | None = opt(
        None,
        "Instead of rank_ratio: the smallest rank keeping this share of each weight's squared singular "
        "values (a layer that would not shrink stays whole).",
        gt=0.0,
        le=1.0,
    )
    modules: list[str] | None = opt(
        None,
        "Linear layers to factorise: names a module name ends in (`query`, `intermediate.dense`); null: "
        "every linear layer in the transformer blocks.",
    )


@dataclass
class PruneConfig:
    layers: list[int] = opt([], "Transformer blocks to drop, numbered from 0 (the rest keep their order).")
    heads: dict[int, list[int]] | None = opt(
        None,
        "Attention heads to remove, by block: `{0: [1, 3]}` (BERT-style attention: bert, roberta, electra).",
    )


@dataclass
class CompressConfig:
    model: str | None = opt(None, "Model to compress; null uses `<output_dir>/model`.", model_ref=True)
    output_dir: str | None = opt(
        None,
        "Where the compressed model (`model/`), compare.json and compare.png go; a new directory. Null: "
        "`<output_dir>/compressed`.",
        path=True,
    )
    quantize: Literal["int8", "int8_weight"] | None = opt(
        None,
        "`int8`: dynamic int8 linear layers (torch, CPU inference; weights stored as int8); `int8_weight`: "
        "weight-only int8 through torchao. Loads only through ptft.",
    )
    low_rank: LowRankConfig = field(
        default_factory=LowRankConfig, metadata={"doc": "Low-rank (SVD) factorisation."}
    )
    prune: PruneConfig = field(default_factory=PruneConfig, metadata={"doc": "Structured pruning."})
    recover: bool = opt(
        False,
        "After pruning / low-rank, fine-tune with the `training` and `data` sections (the normal training "
        "loop; its run goes to `<compress.output_dir>/recovery`).",
    )
    throughput_rounds: int = opt(
        2,
        "Compare table: timed `predict` passes per model, interleaved across models (the fastest counts).",
        ge=1,
        le=100,
    )


@dataclass
class Config:
    task: str = opt(
        "classification",
        "What to train: classification (finetune), mlm / mlm+nsp (pretrain), clm (pretrain or finetune), "
        "sft (instruction / chat fine-tuning of a causal LM).",
    )
    output_dir: str | None = opt(
        None,
        "Run directory. Required. A run never writes into another run's directory.",
        path=True,
        resume_safe=True,
    )
    seed: int = opt(0, "Seed for shuffling, initialisation and dropout.", ge=0, le=2**32 - 1)
    resume: str | None = opt(
        None,
        "Continue a run: `auto` (from the newest complete checkpoint in output_dir, or start if there is none), "
        "or the path of a checkpoint folder. Also `--resume`.",
        path=True,
        keyword="auto",
        resume_safe=True,
    )
    device: str = opt(
        "auto",
        "auto | cpu | cuda | cuda:N | mps. `auto` takes CUDA, then MPS, then the CPU.",
        resume_safe=True,
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto",
        "Training: `auto` is bf16 autocast on CUDA with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX), "
        "fp16 on older CUDA, else fp32. `evaluate`/`predict` on CPU use fp32 under auto.",
        resume_safe=True,
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "The network."})
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig, metadata={"doc": "Tokenization."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "Where the examples come from."})
    objective: ObjectiveConfig = field(
        default_factory=ObjectiveConfig, metadata={"doc": "Pretraining objectives."}
    )
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "Optimisation."})
    distributed: DistributedConfig = field(
        default_factory=DistributedConfig, metadata={"doc": "Several processes (GPUs, machines)."}
    )
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"doc": "Parameter-efficient fine-tuning."})
    distillation: DistillationConfig = field(
        default_factory=DistillationConfig, metadata={"doc": "Knowledge distillation from a teacher model."}
    )
    sft: SftConfig = field(
        default_factory=SftConfig, metadata={"doc": "Instruction and chat fine-tuning (task sft)."}
    )
    logging: LoggingConfig = field(
        default_factory=LoggingConfig,
        metadata={"doc": "Experiment tracking (TensorBoard, W&B, MLflow).", "resume_safe": True},
    )
    evaluate: EvaluateConfig = field(
        default_factory=EvaluateConfig, metadata={"doc": "`ptft evaluate`.", "resume_safe": True}
    )
    predict: PredictConfig = field(
        default_factory=PredictConfig, metadata={"doc": "`ptft predict`.", "resume_safe": True}
    )
    explain: ExplainConfig = field(
        default_factory=ExplainConfig, metadata={"doc": "`ptft explain`.", "resume_safe": True}
    )
    compress: CompressConfig = field(
        default_factory=CompressConfig,
        metadata={"doc": "`ptft compress`: quantize, factorise, prune.", "resume_safe": True},
    )

    # Not schema keys: where the config came from, for error messages and the resolved copy.
    source: Path | None = field(default=None, repr=False, compare=False, metadata={"internal": True})
    lines: dict[str, int] = field(
        default_factory=dict, repr=False, compare=False, metadata={"internal": True}
    )
    # key -> the command-line option that set it (`--set`, `--input`, ...)
    overridden: dict[str, str] = field(
        default_factory=dict, repr=False, compare=False, metadata={"internal": True}
    )
    # what messages name when there is no file: `<dict>` for a config given as Python data
    origin: str = field(default="<config>", repr=False, compare=False, metadata={"internal": True})

    @property
    def name(self) -> str:
        """The config file, or `origin` for one that was never a file."""
        return str(self.source) if self.source is not None else self.origin

    def where(self, key: str) -> str:
        """`file:line` of a key, the option that set it on the command line, or just the file."""
        for set_key, option in self.overridden.items():
            if key == set_key or key.startswith(set_key + "."):
                return option
        if self.source is None:
            return self.origin
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
# Reference (README generation and its test)


def type_name(tp: Any) -> str:
    """How a schema type reads in messages and the README: `integer or null`, `auto | fp32`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {type_name(typing.get_args(tp)[0])} to {type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def resume_safe_keys() -> list[str]:
    """Keys that may differ between a checkpoint's config and the config that resumes it."""
    keys: list[str] = []

    def walk(cls: type, prefix: str, inherited: bool) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            safe = inherited or bool(f.metadata.get("resume_safe"))
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.", safe)
            elif safe:
                keys.append(prefix + f.name)

    walk(Config, "", False)
    return keys


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
                rows.append((prefix + f.name, type_name(tp), getattr(defaults, f.name), f.metadata["doc"]))

    walk(Config, "")
    return rows
