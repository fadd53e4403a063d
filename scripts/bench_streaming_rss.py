"""Streaming pretraining keeps memory flat as the corpus grows.

Generates two text corpora (default 0.5 GB and 2 GB), then at each size measures peak resident
memory (ru_maxrss of a fresh process) of:
  A. a full pass of ptft's streaming reader (read, tokenize, cut, shuffle-buffer, batch: the exact
     generator `ptft pretrain` trains from) over the whole file;
  B. `ptft pretrain` with data.streaming: true for a fixed number of steps.
For contrast, C. the non-streaming path (which tokenizes the corpus into memory) on 1/40 and 1/10
of the small corpus.

    python scripts/bench_streaming_rss.py [--sizes-gb 0.5 2] [--work /tmp/ptft-stream]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "i",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "one",
    "all",
    "we",
    "their",
    "can",
    "has",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "film",
    "story",
    "book",
    "good",
    "bad",
    "time",
    "people",
    "made",
    "great",
    "little",
    "old",
    "new",
    "first",
    "last",
    "long",
    "way",
    "house",
    "day",
    "night",
    "water",
    "city",
    "world",
    "music",
    "light",
    "garden",
    "road",
    "river",
    "street",
]


def generate(path: Path, n_bytes: int, seed: int = 0) -> None:
    """Random sentences in paragraphs, written in 8 MB blocks (8 distinct blocks, cycled)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(8):
        words = np.array(WORDS)[rng.integers(0, len(WORDS), 1_600_000)]
        text = " ".join(words)
        sentences = text.split(" the ")
        blocks.append(".\nThe ".join(sentences).encode()[: 8 << 20] + b"\n\n")
    with open(path, "wb") as f:
        written = 0
        while written < n_bytes:
            block = blocks[int(rng.integers(0, 8))]
            f.write(block)
            written += len(block)


def peak_rss(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, stdout) of a command run as a fresh child of a fresh interpreter."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "out = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True); "
        "print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ''); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True, env=env
    )
    *head, last = out.stdout.strip().splitlines()
    kb, seconds = last.split()
    return int(kb) / 1024, float(seconds), head[-1] if head else ""


FULL_PASS = """
import sys, json
from ptft_cli import config, models
from ptft_cli.data import corpus
from ptft_cli.tasks import lm
cfg = config.load(sys.argv[1])
models.quiet_transformers()
tok = models.load_tokenizer(cfg.tokenizer.name_or_path, cfg.model, "tokenizer", "")
files = corpus.corpus_files(cfg)
T = cfg.tokenizer.max_length
batches = tokens = 0
source = lm.stream_batches(cfg, files, tok, lm.separator_id(tok, causal=True), T + 1, T)
for batch in source.iterate(0, 0, None):
    batches += 1
    tokens += batch.size
print(json.dumps({"batches": batches, "tokens": tokens}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-gb", type=float, nargs=2, default=[0.5, 2.0])
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    ptft = str(Path(sys.executable).with_name("ptft"))

    sizes = [int(gb * (1 << 30)) for gb in args.sizes_gb]
    corpora = []
    for n in sizes:
        path = work / f"corpus-{n >> 20}MB.txt"
        if not path.exists() or path.stat().st_size < n:
            print(f"generating {path.name} ...", flush=True)
            generate(path, n)
        corpora.append(path)
    (work / "valid.txt").write_bytes(corpora[0].read_bytes()[: 1 << 20])

    # a tokenizer trained once on a slice, so every measurement below tokenizes the same way
    sys.path.insert(0, str(ROOT))
    from ptft_cli.data.tokenizer_train import TokenizerSpec, special_tokens_for, train_tokenizer

    sample = corpora[0].read_text()[: 8 << 20].split("\n\n")
    spec = TokenizerSpec("bpe", 1024, special_tokens_for("gpt2"), model_max_length=128)
    tok = train_tokenizer(iter(sample), spec)
    tok.save_pretrained(work / "tokenizer")

    def config(corpus: Path, streaming: bool, name: str) -> Path:
        path = work / f"{name}.yaml"
        path.write_text(
            f"""task: clm
output_dir: {work / "runs" / name}
model: {{architecture: gpt2, hidden_size: 64, num_layers: 2, num_heads: 2}}
tokenizer: {{name_or_path: {work / "tokenizer"}, max_length: 128}}
data:
  train: {corpus}
  validation: {work / "valid.txt"}
  streaming: {str(streaming).lower()}
  shuffle_buffer: 2000
  cache_dir: null
training: {{max_steps: {args.steps}, batch_size: 32, eval_every: {args.steps}, log_every: 50}}
"""
        )
        return path

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    for corpus in corpora:
        gb = corpus.stat().st_size / (1 << 30)
        print(f"A. full streaming pass over {gb:.2f} GB ...", flush=True)
        mb, seconds, out = peak_rss(
            [sys.executable, "-c", FULL_PASS, str(config(corpus, True, f"pass-{corpus.stem}"))], env
        )
        stats = json.loads(out)
        rows.append(
            (
                f"A. streaming reader, full pass, {gb:.2f} GB",
                mb,
                seconds,
                f"{stats['tokens']:,} tokens in {stats['batches']:,} batches",
            )
        )
        print(f"   peak {mb:,.0f} MB, {seconds:.0f}s", flush=True)
        print(f"B. ptft pretrain, streaming, {args.steps} steps, {gb:.2f} GB ...", flush=True)
        mb, seconds, _ = peak_rss(
            [ptft, "pretrain", "--config", str(config(corpus, True, f"train-{corpus.stem}"))]
        )
        rows.append((f"B. ptft pretrain --streaming, {args.steps} steps, {gb:.2f} GB", mb, seconds, ""))
        print(f"   peak {mb:,.0f} MB, {seconds:.0f}s", flush=True)

    for share in (40, 10):
        part = work / f"slice-{share}.txt"
        data = corpora[0].read_bytes()
        part.write_bytes(data[: len(data) // share])
        gb = part.stat().st_size / (1 << 30)
        print(f"C. ptft pretrain, in memory, {gb:.3f} GB ...", flush=True)
        mb, seconds, _ = peak_rss([ptft, "pretrain", "--config", str(config(part, False, f"memory-{share}"))])
        rows.append((f"C. ptft pretrain in memory (no streaming), {gb:.3f} GB", mb, seconds, ""))
        print(f"   peak {mb:,.0f} MB, {seconds:.0f}s", flush=True)

    print("\n| run | peak RSS MB | seconds | |\n|---|---|---|---|")
    for name, mb, seconds, note in rows:
        print(f"| {name} | {mb:,.0f} | {seconds:.0f} | {note} |")
    a_small, a_large = rows[0][1], rows[2][1]
    b_small, b_large = rows[1][1], rows[3][1]
    print(f"\nstreaming pass: {a_large / a_small:.2f}x the memory for {sizes[1] / sizes[0]:.1f}x the corpus")
    print(
        f"streaming training: {b_large / b_small:.2f}x the memory for {sizes[1] / sizes[0]:.1f}x the corpus"
    )
    print(f"in-memory training: {rows[5][1] / rows[4][1]:.2f}x the memory for 4x the corpus")


if __name__ == "__main__":
    main()
