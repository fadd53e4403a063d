"""Causal-LM distillation: a 2-layer student of a 4-layer tinyshakespeare model against the same
2-layer model trained without a teacher, same steps, same data, same tokenizer, same seed.

Teacher: configs/pretrain/shakespeare_char.yaml (character-level LLaMA, 4 layers, 128 wide, block 64,
batch 12) pretrained by ptft for --teacher-steps. Students: that config with `model.num_layers: 2`
and the teacher's tokenizer, trained for --student-steps, once with `distillation:` (token-level KL
at every next-token position, temperature --temperature, alpha --alpha) and once without. Both are
scored on the same held-out last 10% of the characters; the benchmark prints both validation losses.

    python scripts/bench_distill_clm.py [--teacher-steps 2000] [--student-steps 1000] [--teacher RUN]

On a CPU shared by many busy processes, set OMP_NUM_THREADS=1: two OpenMP threads spin-waiting on a
descheduled partner cost ~10x the CPU time (measured here during the issue-12 runs).
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
CONFIG = ROOT / "configs" / "pretrain" / "shakespeare_char.yaml"


def pretrain(*sets: str) -> dict:
    """`ptft pretrain` of the shakespeare config with these --set overrides; its results.json."""
    args = [sys.executable, "-m", "ptft_cli", "pretrain", "--config", str(CONFIG)]
    for s in sets:
        args += ["--set", s]
    started = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    run = Path(next(s.split("=", 1)[1] for s in sets if s.startswith("output_dir=")))
    results = json.loads((run / "results.json").read_text())
    results["wall_seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare")
    parser.add_argument(
        "--teacher", type=Path, help="an existing 4-layer teacher run (skips its pretraining)"
    )
    parser.add_argument("--teacher-steps", type=int, default=2000)
    parser.add_argument("--student-steps", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--keep", type=Path, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    corpus = args.data / "input.txt"
    if not corpus.is_file():
        sys.exit(f"skip: tinyshakespeare not found at {args.data}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-distill-clm-"))
    work.mkdir(parents=True, exist_ok=True)
    common = [f"data.train={corpus}", "data.cache_dir=null"]

    teacher = args.teacher
    if teacher is None:
        teacher = work / "teacher"
        r = pretrain(
            *common,
            f"output_dir={teacher}",
            f"training.max_steps={args.teacher_steps}",
            f"training.eval_every={args.teacher_steps}",
        )
        print(
            f"teacher: 4 layers, {args.teacher_steps} steps, val loss {r['final']['eval_loss']:.4f} "
            f"({r['wall_seconds']:.0f}s)",
            flush=True,
        )
    teacher_loss = json.loads((teacher / "results.json").read_text())["final"]["eval_loss"]
    student = [
        *common,
        "model.num_layers=2",
        f"tokenizer.name_or_path={teacher / 'model'}",
        "tokenizer.type=null",
        f"training.max_steps={args.student_steps}",
        f"training.eval_every={args.student_steps}",
        f"training.warmup_steps={min(100, args.student_steps // 10)}",
    ]
    plain = pretrain(*student, f"output_dir={work / 'student-plain'}")
    print(
        f"2 layers without a teacher: val loss {plain['final']['eval_loss']:.4f} ({plain['wall_seconds']:.0f}s)",
        flush=True,
    )
    distilled = pretrain(
        *student,
        f"output_dir={work / 'student-distilled'}",
        f"distillation.teacher={teacher}",
        f"distillation.temperature={args.temperature}",
        f"distillation.alpha={args.alpha}",
    )
    print(
        f"2 layers distilled:         val loss {distilled['final']['eval_loss']:.4f} "
        f"({distilled['wall_seconds']:.0f}s)",
        flush=True,
    )

    a, b = plain["final"]["eval_loss"], distilled["final"]["eval_loss"]
    print("\n| model | steps | validation loss (nats/char) |")
    print("|---|---|---|")
    print(
        f"| teacher, 4 layers | {args.teacher_steps if args.teacher is None else '(given)'} | {teacher_loss:.4f} |"
    )
    print(f"| student, 2 layers, no teacher | {args.student_steps} | {a:.4f} |")
    print(
        f"| student, 2 layers, distilled (T {args.temperature}, alpha {args.alpha}) | {args.student_steps} | {b:.4f} |"
    )
    print(
        f"\ndistilled - plain: {b - a:+.4f} nats/char ({'lower: distillation helps' if b < a else 'NOT lower'})"
    )


if __name__ == "__main__":
    main()
