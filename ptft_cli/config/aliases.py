"""Names from other tools that users type into a ptft config, and the ptft key each one means.

Only the "did you mean" of an unknown key reads this table: ptft accepts one name per setting, so a
config reads the same everywhere, but someone coming from Hugging Face's `TrainingArguments` (or its
example scripts) is told the exact key instead of the nearest spelling (`per_device_train_batch_size`
is not `training.eval_batch_size`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Alias:
    key: str  # the ptft key, dotted
    value: str | None = None  # a flag that picks a value of that key: `bf16: true` is `precision: bf16`
    note: str = ""  # what differs, when something does


RESUME_FLAG = "--resume"  # not a key of the file alone: the command-line flag sets `resume`

# Hugging Face `TrainingArguments` (and the run_*.py example scripts' data/model arguments).
HF_ALIASES: dict[str, Alias] = {
    "per_device_train_batch_size": Alias("training.batch_size"),
    "per_device_eval_batch_size": Alias("training.eval_batch_size"),
    "train_batch_size": Alias("training.batch_size"),
    "eval_batch_size": Alias("training.eval_batch_size"),
    "num_train_epochs": Alias("training.epochs"),
    "max_steps": Alias("training.max_steps"),
    "learning_rate": Alias("training.learning_rate"),
    "lr": Alias("training.learning_rate"),
    "weight_decay": Alias("training.weight_decay"),
    "warmup_steps": Alias("training.warmup_steps"),
    "warmup_ratio": Alias("training.warmup_ratio"),
    "gradient_accumulation_steps": Alias("training.gradient_accumulation_steps"),
    "logging_steps": Alias("training.log_every"),
    "eval_steps": Alias("training.eval_every"),
    "eval_strategy": Alias("training.eval_every", note="a number of steps or `epoch`"),
    "evaluation_strategy": Alias("training.eval_every", note="a number of steps or `epoch`"),
    "save_steps": Alias("training.save_every"),
    "save_strategy": Alias("training.save_every", note="a number of steps or `eval`"),
    "save_total_limit": Alias("training.keep_checkpoints"),
    "seed": Alias("seed"),
    "data_seed": Alias("seed"),
    "bf16": Alias("precision", "bf16"),
    "fp16": Alias("precision", "fp16"),
    "tf32": Alias("precision", note="fp32 matmuls use TF32 where the GPU has it"),
    "use_cpu": Alias("device", "cpu"),
    "no_cuda": Alias("device", "cpu"),
    "output_dir": Alias("output_dir"),
    "overwrite_output_dir": Alias(
        "output_dir", note="a run is replaced only with `--overwrite` on the command line"
    ),
    "lr_scheduler_type": Alias("training.lr_scheduler"),
    "max_grad_norm": Alias("training.max_grad_norm"),
    "adam_beta1": Alias("training.adam_betas", note="a list: [beta1, beta2]"),
    "adam_beta2": Alias("training.adam_betas", note="a list: [beta1, beta2]"),
    "adam_epsilon": Alias("training.adam_epsilon"),
    "label_smoothing_factor": Alias("training.label_smoothing"),
    "metric_for_best_model": Alias("training.best_metric"),
    "load_best_model_at_end": Alias("training.best_metric", note="naming the metric keeps the best model"),
    "early_stopping_patience": Alias("training.early_stopping_patience"),
    "group_by_length": Alias("training.group_by_length"),
    "gradient_checkpointing": Alias("training.gradient_checkpointing"),
    "torch_compile": Alias("training.compile"),
    "resume_from_checkpoint": Alias(
        "resume",
        note=f"on the command line `{RESUME_FLAG} auto|PATH`; `auto` continues from the newest checkpoint",
    ),
    "model_name_or_path": Alias("model.name_or_path"),
    "tokenizer_name": Alias("tokenizer.name_or_path"),
    "tokenizer_name_or_path": Alias("tokenizer.name_or_path"),
    "config_name": Alias("model.name_or_path"),
    "max_seq_length": Alias("tokenizer.max_length"),
    "max_length": Alias("tokenizer.max_length"),
    "block_size": Alias("tokenizer.max_length", note="pretraining packs blocks of this many tokens"),
    "train_file": Alias("data.train"),
    "validation_file": Alias("data.validation"),
    "test_file": Alias("evaluate.data"),
    "dataset_name": Alias("data.dataset"),
    "dataset_config_name": Alias("data.dataset_config"),
    "max_train_samples": Alias("data.max_train_samples"),
    "max_eval_samples": Alias("data.max_eval_samples"),
    "validation_split_percentage": Alias("data.validation_fraction", note="a fraction: 5% is 0.05"),
    "mlm_probability": Alias("objective.mlm_probability"),
    "trust_remote_code": Alias("model.trust_remote_code"),
    "attn_implementation": Alias("model.attn_implementation"),
    "lora_r": Alias("lora.r"),
    "lora_alpha": Alias("lora.alpha"),
    "lora_dropout": Alias("lora.dropout"),
    "lora_target_modules": Alias("lora.target_modules"),
}


def suggest(name: str, prefix: str, here: list[str], every_key: list[str]) -> str:
    """The hint for an unknown key `prefix + name`: its ptft name when it is another tool's, the
    section it belongs in when it is a ptft key in the wrong place, else the nearest key here.

    `here` are the valid names in this section; `every_key` all dotted keys of the schema."""
    alias = HF_ALIASES.get(name)
    if alias is not None and alias.key.rsplit(".", 1)[-1] != name:  # the same name: only misplaced
        return _alias_hint(name, alias)
    elsewhere = [k for k in every_key if k.rsplit(".", 1)[-1] == name and k != prefix + name]
    if elsewhere:
        where = " or ".join(f"`{k}`" for k in elsewhere)
        return f"did you mean {where}? (`{name}` belongs {_sections(elsewhere)})"
    close = difflib.get_close_matches(name, here, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{prefix}{close[0]}`?"
    return f"valid keys here: {', '.join(here)}"


def _alias_hint(name: str, alias: Alias) -> str:
    target = f"{alias.key}: {alias.value}" if alias.value else alias.key
    note = f"; {alias.note}" if alias.note else ""
    return f"did you mean `{target}`? (`{name}` is Hugging Face's name for it{note})"


def _sections(keys: list[str]) -> str:
    names = [f"in section `{k.rsplit('.', 1)[0]}`" if "." in k else "at the top level" for k in keys]
    return " or ".join(dict.fromkeys(names))
