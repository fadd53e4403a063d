"""The SST-2 fine-tune of all-MiniLM-L6-v2 that the benchmarks share, as a ptft config.

The setup of scripts/bench_finetune_sst2.py: the first ROWS rows of ../shared/data/sst2/train.tsv
after a seed-0 shuffle, 1 epoch, batch 32, lr 1e-4, 6% warmup, weight decay 0.01, max length 128,
validated on dev.tsv. bench_distill, bench_compress and bench_augment start from it and say what
they change; each keyword below adds lines to its section.
"""

from __future__ import annotations

from pathlib import Path

ROWS, BATCH, LR, WARMUP, WD, MAX_LEN, SEED = 4000, 32, 1e-4, 0.06, 0.01, 128, 0


def config(
    run: Path,
    data: Path,
    model: str | Path,
    *,
    rows: int = ROWS,
    seed: int = SEED,
    epochs: int = 1,
    learning_rate: float = LR,
    model_lines: str = "",
    data_lines: str = "",
    sections: str = "",
    training_lines: str = "",
    tail: str = "",
) -> str:
    """The config text: `sections` go between data and training, `tail` after training."""
    return f"""task: classification
output_dir: {run}
seed: {seed}
model:
  name_or_path: {model}
{model_lines}tokenizer:
  max_length: {MAX_LEN}
data:
  train: {data / "train.tsv"}
  validation: {data / "dev.tsv"}
  text_column: sentence
  max_train_samples: {rows}
{data_lines}{sections}training:
  epochs: {epochs}
  batch_size: {BATCH}
  learning_rate: {learning_rate}
  warmup_ratio: {WARMUP}
  weight_decay: {WD}
{training_lines}{tail}"""
