"""Model FLOPs utilisation of ptft pretraining a GPT-2-124M-shape model on one GPU, bf16, compiled.

The model: GPT-2 small's shape (12 layers, 12 heads, 768 wide, 1,024 positions, vocabulary 50,304 as
nanoGPT pads it), randomly initialised, with a byte-level BPE tokenizer trained on the corpus (padded
with unused tokens to GPT-2's 50,257). ptft then pretrains it on tinyshakespeare in blocks of 1,024
tokens, batch 32, bf16 autocast, fused AdamW, with `training.compile` on and off.

MFU = achieved model FLOP/s (6 × (non-embedding parameters + output layer) + 12·L·d·T per token, as
PaLM counts it; recomputation not counted) ÷ the device's stated dense bf16 peak (989 TFLOP/s for an
H100/H200 SXM). Printed: the median over the logged windows after the first two (compilation and
warm-up excluded), from ptft's own metrics.jsonl.

    python scripts/bench_mfu.py --data PATH/tinyshakespeare/input.txt [--steps 300] [--batch 32]
    python scripts/bench_mfu.py --data ... --quick     # a tiny shape on the CPU: checks the script runs
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
GPT2_VOCAB = 50257


def make_model(folder: Path, data: Path, quick: bool) -> None:
    """A randomly initialised GPT-2-small-shape model and a BPE tokenizer trained on `data`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    vocab = 512 if quick else GPT2_VOCAB
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(data)], vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=1024,
    )
    # the corpus is too small for 50,257 merges: unused tokens give GPT-2's vocabulary size
    tokenizer.add_tokens([f"<|unused{i}|>" for i in range(vocab - len(tokenizer))])
    tokenizer.save_pretrained(folder)
    shape = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128) if quick else {}
    config = GPT2Config(
        vocab_size=64 * -(-len(tokenizer) // 64),  # 50,304: a multiple of 64, as nanoGPT pads it
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **shape,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)


def run(work: Path, name: str, args: argparse.Namespace, compile_: bool) -> dict:
    out = work / name
    block = 128 if args.quick else 1024
    config = work / f"{name}.yaml"
    config.write_text(
        f"""task: clm
output_dir: {out}
seed: 0
device: {"cpu" if args.quick else "cuda"}
precision: bf16
model:
  name_or_path: {work / "gpt2-124m-shape"}
tokenizer:
  max_length: {block}
data:
  train: {args.data.resolve()}
  validation_fraction: 0
  cache_dir: {work / "token-cache"}
training:
  max_steps: {args.steps}
  batch_size: {args.batch}
  learning_rate: 6.0e-4
  warmup_steps: 20
  lr_scheduler: cosine
  weight_decay: 0.1
  adam_betas: [0.9, 0.95]
  log_every: {max(1, args.steps // 15)}
  save_every: {args.steps}
  compile: {str(compile_).lower()}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "ptft_cli", "pretrain", "--config", str(config)], check=True, env=env
    )
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in windows if "tokens_per_s" in r][2:]
    results = json.loads((out / "results.json").read_text())
    return {
        "name": name,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "tflops": statistics.median(r["flops_per_s"] for r in steady) / 1e12,
        "mfu": statistics.median(r["mfu"] for r in steady) if all("mfu" in r for r in steady) else None,
        "peak_gb": results["peak_memory_gb"][0],
        "loss": windows[-1]["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/tinyshakespeare/input.txt")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a tiny shape on the CPU")
    parser.add_argument("--eager", action="store_true", help="also run without compile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_model(work / "gpt2-124m-shape", args.data, args.quick)
        rows = [run(work, "compiled", args, True)]
        if args.eager:
            rows.append(run(work, "eager", args, False))
    import torch

    device = "CPU" if args.quick else torch.cuda.get_device_name()
    print(f"\nGPT-2-124M shape, bf16, batch {args.batch} × 1024 tokens, {args.steps} steps on {device}")
    print(f"{'run':10} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9} {'loss':>7}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(
            f"{r['name']:10} {r['tokens_per_s']:>10,.0f} {r['tflops']:>8.1f} {mfu:>6} {r['peak_gb']:>9.1f} "
            f"{r['loss']:>7.3f}"
        )


if __name__ == "__main__":
    main()
