"""The seed's thesis, measured: does masked-LM pretraining help a downstream task?

1. `ptft pretrain` configs/pretrain/wikitext2_bert_mlm.yaml: a small BERT with a WordPiece vocabulary
   trained on the WikiText-2 raw files.
2. `ptft finetune` that model on the first 4,000 SST-2 training rows after a seed-0 shuffle; accuracy
   on dev.tsv.
3. The same fine-tuning from a randomly initialised copy of the same network (same config, same
   tokenizer, only the weights differ).

    python scripts/bench_mlm_transfer.py [--pretrain-steps 2500] [--epochs 5] [--lr 3e-4] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ptft(*args: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).with_name("ptft")), *args], check=True, stderr=subprocess.DEVNULL
    )


def finetune(work: Path, name: str, model_dir: Path, sst2: Path, epochs: int, lr: float) -> dict:
    config = work / f"{name}.yaml"
    config.write_text(
        f"""task: classification
output_dir: {work / name}
seed: 0
model:
  name_or_path: {model_dir}
data:
  train: {sst2 / "train.tsv"}
  validation: {sst2 / "dev.tsv"}
  text_column: sentence
  labels: [negative, positive]
  max_train_samples: 4000
training:
  epochs: {epochs}
  batch_size: 32
  learning_rate: {lr}
  warmup_ratio: 0.1
  best_metric: accuracy
""",
        encoding="utf-8",
    )
    ptft("finetune", "--config", str(config))
    results = json.loads((work / name / "results.json").read_text())
    return {
        "best_accuracy": results["best"]["value"],
        "final_accuracy": results["final"]["eval_accuracy"],
        "seconds": results["train_seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--pretrain-steps", type=int, default=2500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (both arms)")
    args = p.parse_args()
    if (
        not (args.data / "wikitext2_raw" / "wiki.valid.raw").is_file()
        or not (args.data / "sst2" / "train.tsv").is_file()
    ):
        sys.exit(f"skip: wikitext2_raw and sst2 are needed under {args.data}")
    work = Path(tempfile.mkdtemp(prefix="bench-mlm-"))
    wiki = args.data / "wikitext2_raw"

    print("pretraining (masked LM on WikiText-2) ...", flush=True)
    started = time.perf_counter()
    ptft(
        "pretrain", "--config", str(ROOT / "configs" / "pretrain" / "wikitext2_bert_mlm.yaml"),
        "--set", f"output_dir={work / 'pretrain'}", "--set", f"training.max_steps={args.pretrain_steps}",
        "--set", f"data.train=[{wiki / 'wiki.test.raw'}, {wiki / 'wiki.valid.raw'}]", "--set", f"data.cache_dir={work / 'cache'}",
    )  # fmt: skip
    pretrain_seconds = time.perf_counter() - started
    pre = json.loads((work / "pretrain" / "results.json").read_text())["final"]
    print(
        f"  {pretrain_seconds:.0f}s, validation MLM loss {pre['eval_loss']:.3f}, masked accuracy {pre['eval_masked_accuracy']:.3f}",
        flush=True,
    )

    # the control: the same network and tokenizer, freshly initialised
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(work / "pretrain" / "model")
    AutoModelForMaskedLM.from_config(config).save_pretrained(work / "random-init")
    AutoTokenizer.from_pretrained(work / "pretrain" / "model").save_pretrained(work / "random-init")

    sst2 = args.data / "sst2"
    print("fine-tuning the pretrained model on SST-2 ...", flush=True)
    pretrained = finetune(work, "ft-pretrained", work / "pretrain" / "model", sst2, args.epochs, args.lr)
    print("fine-tuning the randomly initialised copy on SST-2 ...", flush=True)
    scratch = finetune(work, "ft-random", work / "random-init", sst2, args.epochs, args.lr)

    print("\n| model | SST-2 dev accuracy (best epoch) | final | fine-tune s |\n|---|---|---|---|")
    print(
        f"| MLM-pretrained on WikiText-2 ({args.pretrain_steps} steps, {pretrain_seconds:.0f}s) | {pretrained['best_accuracy']:.3f} | {pretrained['final_accuracy']:.3f} | {pretrained['seconds']:.0f} |"
    )
    print(
        f"| same network, random init | {scratch['best_accuracy']:.3f} | {scratch['final_accuracy']:.3f} | {scratch['seconds']:.0f} |"
    )
    gain = pretrained["best_accuracy"] - scratch["best_accuracy"]
    print(f"\npretraining gain: {gain:+.3f} accuracy ({'pretrained wins' if gain > 0 else 'NO GAIN'})")


if __name__ == "__main__":
    main()
