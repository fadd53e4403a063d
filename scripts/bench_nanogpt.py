"""Character-level GPT on tinyshakespeare: ptft against nanoGPT's CPU recipe, same run, same machine.

Reference: scripts/reference/nanogpt_char.py, a faithful re-implementation of nanoGPT's model and
train loop with its README's CPU settings (4 layers, 4 heads, 128 wide, block 64, batch 12, 2,000
iterations, lr 1e-3 cosine to 1e-4 after 100 warmup, dropout 0, eval every 250 iterations).

ptft runs configs/pretrain/shakespeare_char.yaml (the same shape and schedule) twice: with GPT-2
blocks (nanoGPT's architecture family) and with LLaMA blocks (RoPE, RMSNorm, SwiGLU sized to the
same parameter count). Then "its own best settings in the same wall time": LLaMA blocks with as
many steps as fit in nanoGPT's time, character-level and with a byte-level BPE tokenizer (compared
in bits per character, which does not depend on the tokenizer).

Every validation number is the loss over the whole held-out last 10% of characters (nanoGPT's own
log shows a 20-batch estimate; the reference prints both).

    python scripts/bench_nanogpt.py [--data ../shared/data/tinyshakespeare/input.txt] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pretrain" / "shakespeare_char.yaml"


def run_ptft(work: Path, name: str, data: Path, *overrides: str) -> dict:
    out = work / name
    cmd = [
        str(Path(sys.executable).with_name("ptft")),
        "pretrain",
        "--config",
        str(CONFIG),
        "--set",
        f"output_dir={out}",
    ]
    cmd += ["--set", f"data.train={data}", "--set", f"data.cache_dir={work / 'cache'}"]
    for o in overrides:
        cmd += ["--set", o]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    r = json.loads((out / "results.json").read_text())
    final = r["final"]
    return {
        "name": name,
        "loop_seconds": r["train_seconds"] + r["eval_and_save_seconds"],
        "train_seconds": r["train_seconds"],
        "process_seconds": wall,
        "steps": r["steps"],
        "val_loss": final["eval_loss"],
        "bits_per_char": final["eval_bits_per_char"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    )
    p.add_argument("--quick", action="store_true", help="skip the same-wall-time runs")
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"skip: tinyshakespeare not found at {args.data}")
    work = Path(tempfile.mkdtemp(prefix="bench-nanogpt-"))

    print("nanoGPT reference ...", flush=True)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reference" / "nanogpt_char.py"), "--data", str(args.data)],
        check=True,
        capture_output=True,
        text=True,
    )
    ref = json.loads(out.stdout.strip().splitlines()[-1])
    ref.update(
        name="nanoGPT (reference)",
        loop_seconds=ref["train_seconds"],
        process_seconds=time.perf_counter() - started,
        steps=2000,
    )
    ref["bits_per_char"] = ref["val_loss"] / math.log(2)
    rows = [ref]
    print(
        f"  {ref['loop_seconds']:.1f}s, val loss {ref['val_loss']:.4f} (its 20-batch estimate: {ref['estimated_val_loss']:.4f})",
        flush=True,
    )

    for name, overrides in (
        (
            "ptft gpt2 blocks, same shape + schedule",
            ("model.architecture=gpt2", "model.intermediate_size=null"),
        ),
        ("ptft llama blocks, same shape + schedule", ()),
    ):
        print(f"{name} ...", flush=True)
        rows.append(run_ptft(work, name.split(",")[0].replace(" ", "-"), args.data, *overrides))
        print(f"  {rows[-1]['loop_seconds']:.1f}s, val loss {rows[-1]['val_loss']:.4f}", flush=True)

    if not args.quick:
        llama = rows[-1]
        per_step = llama["loop_seconds"] / llama["steps"]
        steps = int(ref["loop_seconds"] / per_step)
        for name, overrides in (
            (f"ptft best: llama, char, {steps} steps", ()),
            (
                f"ptft best: llama, BPE 512, {steps} steps",
                ("tokenizer.type=bpe", "tokenizer.vocab_size=512", "tokenizer.min_frequency=2"),
            ),
        ):
            print(f"{name} ...", flush=True)
            common = (f"training.max_steps={steps}", f"training.eval_every={steps}")
            rows.append(
                run_ptft(
                    work, name.split(":")[1].split(",")[1].strip() + "-best", args.data, *common, *overrides
                )
            )
            rows[-1]["name"] = name
            print(f"  {rows[-1]['loop_seconds']:.1f}s, bits/char {rows[-1]['bits_per_char']:.4f}", flush=True)

    print(
        "\n| run | loop s (training + evals) | steps | val loss (nats/token) | bits/char | nanoGPT time / this time |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['loop_seconds']:.1f} | {r['steps']} | {r['val_loss']:.4f} | {r['bits_per_char']:.4f} | {ref['loop_seconds'] / r['loop_seconds']:.2f}x |"
        )
    same = rows[1:3]
    print(f"\ntarget: val loss <= 1.89 nats/char in less wall time than nanoGPT ({ref['loop_seconds']:.1f}s)")
    for r in same:
        ok = r["val_loss"] <= 1.89 and r["loop_seconds"] < ref["loop_seconds"]
        print(
            f"  {r['name']}: {r['val_loss']:.4f} in {r['loop_seconds']:.1f}s -> {'met' if ok else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
