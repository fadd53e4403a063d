"""`training.compile: true` against eager PyTorch on the nanoGPT-shape CLM run, same machine, same run.

configs/pretrain/shakespeare_char.yaml (4 layers, 128 wide, block 64, batch 12, 2,000 steps) four
times: eager; compiled (the default `compile_scope: blocks`: each transformer block's forward, one
graph shared by the blocks) with an empty compile cache (what a first run pays: Inductor generates
and builds C++ kernels); compiled again with the cache warm (every later run of the same shapes);
and the whole model compiled (`compile_scope: model`) with an empty cache.
Printed: steady-state tokens/s (median of the logged windows after the first two, so compilation
is not in it), the training loop's seconds (compilation included) and each against eager.

    python scripts/bench_compile.py [--data ../shared/data/tinyshakespeare/input.txt] [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pretrain" / "shakespeare_char.yaml"


def run(work: Path, name: str, args: argparse.Namespace, scope: str | None, cache: Path) -> dict:
    """One training run; scope None is eager, else `training.compile` with that `compile_scope`."""
    out = work / name
    cmd = [
        sys.executable,
        "-m",
        "ptft_cli",
        "pretrain",
        "--config",
        str(CONFIG),
        "--set",
        f"output_dir={out}",
    ]
    for o in (
        f"data.train={args.data}",
        f"data.cache_dir={work / 'token-cache'}",
        f"training.max_steps={args.steps}",
        f"training.eval_every={args.steps}",
        "training.log_every=100",
        f"training.compile={str(scope is not None).lower()}",
        f"training.compile_scope={scope or 'blocks'}",
    ):
        cmd += ["--set", o]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, env=env)
    results = json.loads((out / "results.json").read_text())
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in windows if "tokens_per_s" in r][2:]
    return {
        "name": name,
        "tokens_per_s": statistics.median(rates),
        "loop_seconds": results["train_seconds"],
        "val_loss": results["final"]["eval_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/tinyshakespeare/input.txt")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"no data at {args.data}: pass --data PATH to tinyshakespeare's input.txt")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = work / "inductor-cache"
        rows = [
            run(work, "eager", args, None, cache),
            run(work, "compile (cold cache)", args, "blocks", cache),
            run(work, "compile (warm cache)", args, "blocks", cache),
            run(work, "compile model (cold)", args, "model", work / "inductor-cache-model"),
        ]
    eager = rows[0]
    print(f"\nnanoGPT-shape CLM, {args.steps} steps, this machine ({os.cpu_count()} CPUs)")
    print(f"{'run':24} {'tok/s (steady)':>15} {'× eager':>8} {'loop s':>8} {'× eager':>8} {'val loss':>9}")
    for r in rows:
        print(
            f"{r['name']:24} {r['tokens_per_s']:>15,.0f} {r['tokens_per_s'] / eager['tokens_per_s']:>8.2f} "
            f"{r['loop_seconds']:>8.1f} {eager['loop_seconds'] / r['loop_seconds']:>8.2f} {r['val_loss']:>9.4f}"
        )
    print("(× eager: speed relative to eager; above 1.00 is faster)")


if __name__ == "__main__":
    main()
