"""Bad pretraining input: one `error:` line naming the file and key, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_bad_input import snapshot

BASE = """task: clm
output_dir: run
device: cpu
model:
  architecture: gpt2
  hidden_size: 32
  num_layers: 2
  num_heads: 2
tokenizer:
  type: char
  max_length: 32
data:
  train: corpus.txt
  cache_dir: null
training:
  max_steps: 5
"""


def replace(old: str, new: str):
    def setup(tmp: Path) -> None:
        cfg = tmp / "c.yaml"
        text = cfg.read_text()
        assert old in text, old
        cfg.write_text(text.replace(old, new, 1))

    return setup


def corpus(content: str | bytes, name: str = "corpus.txt"):
    def setup(tmp: Path) -> None:
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def both(*steps):
    def setup(tmp: Path) -> None:
        for step in steps:
            step(tmp)

    return setup


def encoder_model(tmp: Path, tiny_bert: Path) -> None:
    cfg = tmp / "c.yaml"
    cfg.write_text(
        cfg.read_text()
        .replace("  architecture: gpt2\n", f"  name_or_path: {tiny_bert}\n")
        .replace("  type: char\n", "")
    )


CASES = [
    ("empty corpus", corpus("\n  \n\n"), ["corpus.txt", "the training corpus is empty"]),
    ("corpus not utf-8", corpus(b"to be or not\nto b\xe9 that is\n"), ["corpus.txt:2", "not UTF-8"]),
    (
        "missing text field",
        both(
            corpus('{"body": "hello there"}\n', "corpus.jsonl"),
            replace("train: corpus.txt", "train: corpus.jsonl"),
        ),
        ["corpus.jsonl:1", "no column 'text'", "body"],
    ),
    (
        "glob matches nothing",
        replace("train: corpus.txt", "train: texts/*.txt"),
        ["data.train", "no files match"],
    ),
    (
        "mlm on a decoder",
        replace("task: clm", "task: mlm"),
        ["model.architecture", "gpt2 is a decoder; masked LM needs an encoder"],
    ),
    (
        "nsp on roberta",
        both(replace("task: clm", "task: mlm+nsp"), replace("architecture: gpt2", "architecture: roberta")),
        ["model.architecture", "BERT's objective"],
    ),
    (
        "vocab smaller than the special tokens",
        both(replace("type: char", "type: bpe\n  vocab_size: 3")),
        ["tokenizer", "vocab_size"],
    ),
    (
        "heads do not divide width",
        replace("num_heads: 2", "num_heads: 3"),
        ["model.num_heads", "does not divide hidden_size 32"],
    ),
    (
        "positions shorter than blocks",
        replace("  num_heads: 2\n", "  num_heads: 2\n  max_position_embeddings: 16\n"),
        ["model.max_position_embeddings", "shorter than tokenizer.max_length 32"],
    ),
    (
        "architecture and pretrained model",
        replace("  architecture: gpt2\n", "  architecture: gpt2\n  name_or_path: gpt2\n"),
        ["model.architecture", "not both"],
    ),
    ("no model at all", replace("  architecture: gpt2\n", ""), ["model.name_or_path", "no model"]),
    ("no tokenizer for a new model", replace("  type: char\n", ""), ["tokenizer.type", "no tokenizer"]),
    (
        "tokenizer twice",
        replace("  type: char\n", "  type: char\n  name_or_path: gpt2\n"),
        ["tokenizer.type", "not both"],
    ),
    (
        "unknown special-token role",
        replace("  type: char\n", "  type: char\n  special_tokens: {start: '<s>'}\n"),
        ["tokenizer.special_tokens", "unknown role 'start'"],
    ),
    (
        "streaming without max_steps",
        both(
            replace("  max_steps: 5\n", "  epochs: 1\n"),
            replace(
                "  cache_dir: null\n", "  cache_dir: null\n  streaming: true\n  validation_fraction: 0\n"
            ),
        ),
        ["data.streaming", "training.max_steps"],
    ),
    (
        "streaming with a held-out fraction",
        replace("  cache_dir: null\n", "  cache_dir: null\n  streaming: true\n"),
        ["data.streaming", "cannot hold out a fraction"],
    ),
    (
        "unpacked causal LM",
        replace("  cache_dir: null\n", "  cache_dir: null\n  packing: false\n"),
        ["data.packing", "task: mlm"],
    ),
    ("corpus too short", corpus("To be, or not to be.\n" * 3), ["data.train", "too few for even two blocks"]),
    (
        "bad masking ratios",
        replace("training:", "objective:\n  mask_replace_ratio: 0.9\n  random_replace_ratio: 0.2\ntraining:"),
        ["objective.random_replace_ratio", "exceeds 1"],
    ),
    (
        "language-model best metric",
        replace("  max_steps: 5\n", "  max_steps: 5\n  best_metric: accuracy\n"),
        ["training.best_metric", "'accuracy' is not a clm metric"],
    ),
]


@pytest.mark.parametrize(("name", "setup", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_pretraining_input(cli, tmp_path: Path, name, setup, needles) -> None:
    (tmp_path / "c.yaml").write_text(BASE)
    (tmp_path / "corpus.txt").write_text(
        "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40
    )
    setup(tmp_path)
    before = snapshot(tmp_path)
    result = cli("pretrain", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, (
        result.output
    )
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("task", ["clm", "mlm"])
def test_objective_that_does_not_fit_a_pretrained_model(
    cli, tmp_path: Path, tiny_bert: Path, task: str
) -> None:
    (tmp_path / "c.yaml").write_text(BASE.replace("task: clm", f"task: {task}"))
    (tmp_path / "corpus.txt").write_text("the film was good and the plot was fun\n" * 50)
    encoder_model(tmp_path, tiny_bert)
    if task == "mlm":  # the tiny BERT has 64 positions: ask for more
        (tmp_path / "c.yaml").write_text(
            (tmp_path / "c.yaml").read_text().replace("max_length: 32", "max_length: 128")
        )
    before = snapshot(tmp_path)
    result = cli("pretrain", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2, result.output
    expected = (
        "is a bert encoder; causal LM needs a decoder"
        if task == "clm"
        else "128 tokens per sequence is more than the model's 64 positions"
    )
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
