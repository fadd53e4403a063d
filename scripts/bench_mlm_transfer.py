"""The seed's thesis, measured: does masked-LM pretraining help a downstream task?

1. `ptft pretrain` configs/pretrain/wikitext2_bert_mlm.yaml: a small BERT with a 2,000-piece WordPiece
   vocabulary trained on the WikiText-2 raw files (~28 min on 2 CPU cores).
2. `ptft finetune` that model on the first 4,000 SST-2 training rows after a seeded shuffle; accuracy
   on dev.tsv.
3. The same fine-tuning from a randomly initialised copy of the same network (same config, same
   tokenizer, only the weights differ).

Each arm is fine-tuned at every learning rate of a small sweep and reported at its best, as GLUE
results are (a single shared rate would favour whichever arm it happens to suit), as the mean over
several seeds: a seed picks the 4,000 rows, the batch order, the classifier's initialisation and,
for the control, the whole network's. On 872 dev sentences one run's noise is about ±1.5 points.

    python scripts/bench_mlm_transfer.py [--pretrain-steps 2500] [--epochs 5] [--lrs 3e-4,1e-3] [--seeds 0,1,2]
        [--data ../shared/data] [--pretrained RUN_DIR]   # reuse an earlier pretraining run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ptft(*args: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).with_name("ptft")), *args], check=True, stderr=subprocess.DEVNULL
    )


def finetune(work: Path, name: str, model_dir: Path, sst2: Path, epochs: int, lr: float, seed: int) -> float:
    config = work / f"{name}.yaml"
    config.write_text(
        f"""task: classification
output_dir: {work / name}
seed: {seed}
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
    return json.loads((work / name / "results.json").read_text())["best"]["value"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--pretrain-steps", type=int, default=2500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lrs", default="3e-4,1e-3", help="fine-tuning learning rates (both arms)")
    p.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds (both arms)")
    p.add_argument("--pretrained", type=Path, help="an earlier pretraining run directory to reuse")
    args = p.parse_args()
    if (
        not (args.data / "wikitext2_raw" / "wiki.valid.raw").is_file()
        or not (args.data / "sst2" / "train.tsv").is_file()
    ):
        sys.exit(f"skip: wikitext2_raw and sst2 are needed under {args.data}")
    work = Path(tempfile.mkdtemp(prefix="bench-mlm-"))
    wiki = args.data / "wikitext2_raw"

    if args.pretrained:
        run = args.pretrained.resolve()
    else:
        print("pretraining (masked LM on WikiText-2) ...", flush=True)
        run = work / "pretrain"
        ptft(
            "pretrain", "--config", str(ROOT / "configs" / "pretrain" / "wikitext2_bert_mlm.yaml"),
            "--set", f"output_dir={run}", "--set", f"training.max_steps={args.pretrain_steps}",
            "--set", f"data.train=[{wiki / 'wiki.test.raw'}, {wiki / 'wiki.valid.raw'}]", "--set", f"data.cache_dir={work / 'cache'}",
        )  # fmt: skip
    pre = json.loads((run / "results.json").read_text())
    steps = pre["steps"]
    print(
        f"  {pre['total_seconds']:.0f}s, validation MLM loss {pre['final']['eval_loss']:.3f}, "
        f"masked accuracy {pre['final']['eval_masked_accuracy']:.3f}",
        flush=True,
    )

    # the control: the same network and tokenizer, freshly initialised (one network per seed)
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    seeds = [int(x) for x in args.seeds.split(",")]
    config = AutoConfig.from_pretrained(run / "model")
    for seed in seeds:
        torch.manual_seed(seed)
        AutoModelForMaskedLM.from_config(config).save_pretrained(work / f"random-init-{seed}")
        AutoTokenizer.from_pretrained(run / "model").save_pretrained(work / f"random-init-{seed}")

    sst2 = args.data / "sst2"
    lrs = [float(x) for x in args.lrs.split(",")]
    arms = ("pretrained", "random")
    acc: dict[tuple[str, float], list[float]] = {}
    for lr in lrs:
        for seed in seeds:
            for arm in arms:
                model_dir = run / "model" if arm == "pretrained" else work / f"random-init-{seed}"
                print(f"fine-tuning the {arm} model on SST-2, lr {lr:g}, seed {seed} ...", flush=True)
                best_accuracy = finetune(
                    work, f"ft-{arm}-{lr:g}-{seed}", model_dir, sst2, args.epochs, lr, seed
                )
                acc.setdefault((arm, lr), []).append(best_accuracy)

    def mean_sd(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    print(f"\nSST-2 dev accuracy (best epoch), mean ± sd over seeds {args.seeds}")
    print("\n| model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |")
    print("|---|" + "---|" * (len(lrs) + 1))
    best: dict[str, float] = {}
    for arm, label in (
        (
            "pretrained",
            f"MLM-pretrained on WikiText-2 ({steps} steps, val MLM loss {pre['final']['eval_loss']:.2f})",
        ),
        ("random", "same network, random init"),
    ):
        best[arm] = max(lrs, key=lambda lr: mean_sd(acc[arm, lr])[0])
        cells = " | ".join("{:.3f} ± {:.3f}".format(*mean_sd(acc[arm, lr])) for lr in lrs)
        print(f"| {label} | {cells} | {best[arm]:g} |")
    p_acc, r_acc = acc["pretrained", best["pretrained"]], acc["random", best["random"]]
    diffs = [p - r for p, r in zip(p_acc, r_acc)]  # paired: same seed, same rows
    gain, sd = mean_sd(diffs)
    se = sd / len(diffs) ** 0.5
    verdict = "pretrained wins" if gain - 2 * se > 0 else "NO GAIN" if gain <= 0 else "within noise"
    print(
        f"\npretraining gain: {gain:+.3f} ± {se:.3f} (s.e., paired over seeds) accuracy, each arm at its "
        f"best learning rate: {verdict}; ahead at {sum(d > 0 for d in diffs)}/{len(diffs)} seeds"
    )


if __name__ == "__main__":
    main()
