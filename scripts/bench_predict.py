"""Prediction speed: `ptft predict` against `transformers.pipeline("text-classification", batch_size=32)`.

Same model (MiniLM fine-tuned on 2,000 SST-2 rows by ptft, once, at the start), same 10,000 texts
(SST-2 training sentences), same process, both timed end to end (model loading included). Prints
both times, the ratio, and whether every label agrees.

    python scripts/bench_predict.py [--texts 10000] [--data ../shared/data/sst2]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sst2_minilm

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=sst2_minilm.DATA)
    parser.add_argument("--texts", type=int, default=10_000)
    args = parser.parse_args()
    model_path = sst2_minilm.minilm_or_skip(args.data)

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    with open(args.data / "train.tsv", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        sentences = [row[0].strip() for row in reader]
    texts = sentences[-args.texts :]  # the file's tail; fine-tuning samples from all rows
    (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    config = work / "sst2.yaml"
    config.write_text(
        f"""task: classification
output_dir: {work / "run"}
model:
  name_or_path: {model_path}
data:
  train: {args.data / "train.tsv"}
  validation: {args.data / "dev.tsv"}
  text_column: sentence
  labels: [negative, positive]
  max_train_samples: 2000
training:
  epochs: 1
  learning_rate: 1.0e-4
  warmup_ratio: 0.06
predict:
  input: {work / "texts.txt"}
  output: {work / "predictions.jsonl"}
""",
        encoding="utf-8",
    )
    print("fine-tuning the model both tools will use ...", flush=True)
    subprocess.run(
        [str(Path(sys.executable).with_name("ptft")), "finetune", "--config", str(config)],
        check=True,
        stderr=subprocess.DEVNULL,
    )

    import torch
    from transformers import pipeline

    sys.path.insert(0, str(ROOT))
    from ptft_cli import config as config_mod
    from ptft_cli import runner

    model_dir = str(work / "run" / "model")
    started = time.perf_counter()
    runner.predict(config_mod.load(config))
    ptft_seconds = time.perf_counter() - started
    ours = [json.loads(line) for line in (work / "predictions.jsonl").read_text().splitlines()]

    torch.manual_seed(0)
    started = time.perf_counter()
    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    theirs = classify(texts, batch_size=32, truncation=True, max_length=128, top_k=None)
    pipe_seconds = time.perf_counter() - started

    same_labels = sum(o["label"] == max(t, key=lambda d: d["score"])["label"] for o, t in zip(ours, theirs))
    max_diff = max(abs(o["probabilities"][d["label"]] - d["score"]) for o, t in zip(ours, theirs) for d in t)
    print("\n| tool | seconds | texts/s |\n|---|---|---|")
    print(
        f"| transformers.pipeline (batch_size=32) | {pipe_seconds:.1f} | {len(texts) / pipe_seconds:,.0f} |"
    )
    print(f"| ptft predict | {ptft_seconds:.1f} | {len(texts) / ptft_seconds:,.0f} |")
    print(f"\nptft vs pipeline: {pipe_seconds / ptft_seconds:.2f}x faster (target >= 1.5)")
    print(f"identical labels: {same_labels}/{len(texts)}; largest probability difference {max_diff:.2e}")


if __name__ == "__main__":
    main()
