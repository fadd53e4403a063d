"""The two steps of `make demo` that are not ptft commands: the random-init control arm and the table.

python scripts/demo_story.py random-init runs/demo-pretrain/model runs/demo-random-init
    a copy of a pretrained model directory with freshly initialised weights (same config, same
    tokenizer, seed 0): fine-tuning it shows what the pretraining was worth
python scripts/demo_story.py compare runs/demo-sentiment-random-init runs/demo-sentiment-pretrained ...
    the validation accuracy of each fine-tuned run side by side
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABELS = {
    "demo-sentiment-random-init": "demo encoder, random init",
    "demo-sentiment-pretrained": "demo encoder, pretrained (demo MLM)",
    "demo-sentiment": "MiniLM (pretrained on ~1B sentence pairs)",
}


def random_init(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ptft_cli.models import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    print(
        f"{target}: {source.name}'s network with random weights ({sum(p.numel() for p in model.parameters()):,} parameters)"
    )


def compare(runs: list[Path]) -> None:
    rows = []
    for run in runs:
        results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        best = results.get("best") or {}
        final = results.get("final") or {}
        accuracy = best.get("value") if best.get("metric") == "accuracy" else final.get("eval_accuracy")
        rows.append((LABELS.get(run.name, run.name), accuracy, final.get("eval_loss"), results.get("steps")))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'sentiment, demo validation set (100 reviews)':<{width}}  accuracy")
    for name, accuracy, _, _ in rows:
        shown = f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "?"
        print(f"{name:<{width}}  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("random-init")
    init.add_argument("source", type=Path)
    init.add_argument("target", type=Path)
    table = sub.add_parser("compare")
    table.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "random-init":
        if not (args.source / "config.json").is_file():
            sys.exit(f"error: {args.source}: no model here (run the demo's pretraining first)")
        random_init(args.source, args.target)
    else:
        compare(args.runs)


if __name__ == "__main__":
    main()
