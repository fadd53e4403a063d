"""Pretraining end to end on tiny models: causal LM, masked LM (+NSP), tokenizer training, caching,
streaming, reuse of the result, and plain transformers reproducing ptft's validation loss."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from tests.conftest import OBJECTS, SUBJECTS, VERBS, write_corpus  # noqa: F401 (imported by other tests)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def clm_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "clm.yaml"
    path.write_text(
        f"""task: clm
output_dir: run
seed: 0
device: cpu
precision: fp32
model:
  architecture: gpt2
  hidden_size: 32
  num_layers: 2
  num_heads: 2
tokenizer:
  type: char
  max_length: 32
data:
  train: corpus/[ab].txt
  validation: corpus/valid.txt
  cache_dir: cache
training:
  max_steps: 60
  batch_size: 16
  learning_rate: 3.0e-3
  warmup_steps: 5
  lr_scheduler: cosine
  eval_every: 30
  log_every: 10
predict:
  max_new_tokens: 12
{extra}""",
        encoding="utf-8",
    )
    return path


def mlm_config(tmp_path: Path, extra: str = "", task: str = "mlm") -> Path:
    path = tmp_path / "mlm.yaml"
    path.write_text(
        f"""task: {task}
output_dir: run
seed: 0
device: cpu
precision: fp32
model:
  architecture: bert
  hidden_size: 32
  num_layers: 2
  num_heads: 2
tokenizer:
  type: wordpiece
  vocab_size: 200
  lowercase: true
  max_length: 32
data:
  train: corpus/[ab].txt
  validation: corpus/valid.txt
  document_boundary: paragraph
  cache_dir: cache
training:
  max_steps: 60
  batch_size: 16
  learning_rate: 3.0e-3
  warmup_steps: 5
  eval_every: 30
  log_every: 10
{extra}""",
        encoding="utf-8",
    )
    return path


def test_causal_lm_from_scratch(cli, corpus_dir: Path, tmp_path: Path) -> None:
    result = cli("pretrain", "--config", clm_config(tmp_path))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    records = read_jsonl(run / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert train[-1]["loss"] < 0.75 * train[0]["loss"]
    assert {"tokens_per_s", "flops_per_s", "samples_per_s"} <= set(train[0])
    evals = [r for r in records if "eval_loss" in r]
    assert [e["step"] for e in evals] == [30, 60]
    assert {"eval_perplexity", "eval_bits_per_char", "eval_bits_per_byte"} <= set(evals[0])
    assert evals[-1]["eval_perplexity"] == pytest.approx(np.exp(evals[-1]["eval_loss"]), rel=1e-6)

    # plain transformers reproduces the validation loss: T+1-token blocks every T tokens, last one partial
    model = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    text = (corpus_dir / "valid.txt").read_text()
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids[:-1]) == text  # the char tokenizer round-trips the text
    nats, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, 32):
            block = torch.tensor(ids[start : start + 33])[None]
            logits = model(block[:, :-1]).logits
            nats += torch.nn.functional.cross_entropy(logits[0], block[0, 1:], reduction="sum").item()
            n += block.shape[1] - 1
    assert n == len(ids) - 1 == evals[-1]["eval_tokens"]
    assert nats / n == pytest.approx(evals[-1]["eval_loss"], rel=1e-4)
    assert evals[-1]["eval_bits_per_char"] == pytest.approx(nats / len(text) / np.log(2), rel=1e-4)


def test_masked_lm_from_scratch_and_plain_transformers_agree(cli, corpus_dir: Path, tmp_path: Path) -> None:
    result = cli("pretrain", "--config", mlm_config(tmp_path))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    records = read_jsonl(run / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    final = json.loads((run / "results.json").read_text())["final"]
    assert final["eval_masked_accuracy"] > 0.1  # well above chance (1 in ~200)

    from ptft_cli.config import ObjectiveConfig
    from ptft_cli.data import corpus
    from ptft_cli.tasks import mlm

    model = AutoModelForMaskedLM.from_pretrained(run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    assert tokenizer("a dog")["input_ids"][0] == tokenizer.cls_token_id  # saved with its post-processor
    pieces = [
        p
        for p, _ in corpus.iter_pieces(
            [corpus_dir / "valid.txt"], fmt="auto", text_column="text", boundary="paragraph"
        )
    ]
    stream = corpus.tokenize_stream(pieces, tokenizer, tokenizer.sep_token_id)
    masking = mlm.Masking.of(tokenizer, ObjectiveConfig())
    nats, n = 0.0, 0
    with torch.no_grad():
        for body in mlm.val_bodies(stream, 32, None, 64):
            batch = mlm.collate_packed(body, masking, 12345, torch.device("cpu"))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            nats += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                batch["labels"].reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ).item()
            n += int((batch["labels"] != -100).sum())
    assert n == final["eval_tokens"]
    assert nats / n == pytest.approx(final["eval_loss"], rel=1e-4)


def test_mlm_masking_follows_the_80_10_10_recipe() -> None:
    from ptft_cli.config import ObjectiveConfig
    from ptft_cli.tasks import mlm

    s = mlm.Specials(cls=1, sep=2, pad=0, mask=3, vocab=1000)
    ids = torch.randint(10, 1000, (200, 128))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    inputs, labels = mlm.mask_tokens(ids, special, ObjectiveConfig(), s, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any()  # special tokens are never targets
    assert chosen.float().mean().item() == pytest.approx(0.15 * 127 / 128, abs=0.01)
    assert (labels[chosen] == ids[chosen]).all()
    masked = (inputs == 3) & chosen
    unchanged = (inputs == ids) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.02)
    assert unchanged.sum() / chosen.sum() == pytest.approx(0.1, abs=0.02)  # random replacements ~0.1 too
    assert (inputs[~chosen] == ids[~chosen]).all()


def test_whole_word_masking_masks_every_piece_of_a_word() -> None:
    from ptft_cli.config import ObjectiveConfig
    from ptft_cli.tasks import mlm

    s = mlm.Specials(cls=1, sep=2, pad=0, mask=3, vocab=8)
    starts = np.array([True, True, True, True, True, False, True, False])  # ids 5 and 7 continue a word
    ids = torch.tensor([[1] + [4, 5, 5, 6, 7] * 20 + [2]])
    special = (ids == 1) | (ids == 2)
    o = ObjectiveConfig(mlm_probability=0.3)
    _, labels = mlm.mask_tokens(ids, special, o, s, torch.Generator().manual_seed(0), starts)
    chosen = (labels != -100)[0].tolist()
    for w in range(20):
        word = chosen[1 + 5 * w : 4 + 5 * w]  # 4 5 5 is one word
        assert all(word) or not any(word)
    assert any(chosen)


def test_nsp_pretraining(cli, corpus_dir: Path, tmp_path: Path) -> None:
    result = cli("pretrain", "--config", mlm_config(tmp_path, task="mlm+nsp"))
    assert result.exit_code == 0, result.output
    final = json.loads((tmp_path / "run" / "results.json").read_text())["final"]
    assert 0.0 <= final["eval_nsp_accuracy"] <= 1.0 and final["eval_loss"] > 0
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"]


def test_modernbert_mlm_pretraining_makes_a_mean_pooling_classifier(
    cli, corpus_dir: Path, tmp_path: Path
) -> None:
    result = cli("pretrain", "--config", mlm_config(tmp_path), "--set", "model.architecture=modernbert")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForMaskedLM"]
    # the [CLS] state of an MLM-only encoder was never trained: classifiers read the token mean
    assert config["classifier_pooling"] == "mean"


def test_line_by_line_mlm(cli, corpus_dir: Path, tmp_path: Path) -> None:
    result = cli("pretrain", "--config", mlm_config(tmp_path), "--set", "data.packing=false")
    assert result.exit_code == 0, result.output
    assert "documents" in result.output


def test_tokenization_cache_is_reused_and_keyed_on_the_tokenizer(
    cli, corpus_dir: Path, tmp_path: Path
) -> None:
    config = clm_config(tmp_path)
    first = cli("pretrain", "--config", config, "--set", "training.max_steps=2")
    assert first.exit_code == 0 and "(cached)" not in first.output
    again = cli("pretrain", "--config", config, "--set", "training.max_steps=2", "--overwrite")
    assert again.exit_code == 0 and "(cached)" in again.output
    other = cli(
        "pretrain",
        "--config",
        config,
        "--set",
        "training.max_steps=2",
        "--overwrite",
        "--set",
        "tokenizer.type=bpe",
        "--set",
        "tokenizer.vocab_size=300",
    )
    assert other.exit_code == 0, other.output
    assert "(cached)" not in other.output  # a different tokenizer never reuses a stale cache
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 2


def test_streaming_pretraining(cli, corpus_dir: Path, tmp_path: Path) -> None:
    result = cli(
        "pretrain",
        "--config",
        clm_config(tmp_path),
        "--set",
        "data.streaming=true",
        "--set",
        "data.shuffle_buffer=64",
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert len(train) == 6 and train[-1]["loss"] < 0.7 * train[0]["loss"]
    assert "streamed" in result.output


def test_stream_blocks_cover_the_stream_and_memory_is_bounded() -> None:
    from ptft_cli.data.corpus import Cursor
    from ptft_cli.data.stream import BlockStream, Cutting

    chunks = [np.arange(i * 100, (i + 1) * 100, dtype=np.uint32) for i in range(50)]
    source = lambda start: iter((c, Cursor(0, i + 1)) for i, c in enumerate(chunks))
    blocks = list(BlockStream(source, Cutting(span=11, stride=10, buffer_blocks=16, seed=0), epoch=0))
    starts = sorted(int(b[0]) for b in blocks)
    assert starts == list(range(0, 4990, 10))  # every block once, in a shuffled order
    assert all((b == np.arange(b[0], b[0] + 11)).all() for b in blocks)
    assert [int(b[0]) for b in blocks] != starts


def test_reuse_pretrained_models(cli, corpus_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    """The MLM run's model/ fine-tunes a classifier; the CLM run's model/ continues causal-LM training."""
    assert (
        cli(
            "pretrain", "--config", mlm_config(tmp_path), "--set", f"output_dir={tmp_path / 'mlm-run'}"
        ).exit_code
        == 0
    )
    clf = tmp_path / "clf.yaml"
    clf.write_text(
        f"""task: classification
output_dir: clf-run
device: cpu
model: {{name_or_path: mlm-run/model}}
data: {{train: {data_dir / "train.csv"}, validation: {data_dir / "validation.csv"}}}
training: {{epochs: 1, batch_size: 16}}
"""
    )
    result = cli("finetune", "--config", clf)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clf-run" / "model" / "model.safetensors").is_file()

    assert (
        cli(
            "pretrain", "--config", clm_config(tmp_path), "--set", f"output_dir={tmp_path / 'clm-run'}"
        ).exit_code
        == 0
    )
    result = cli(
        "finetune",
        "--config",
        clm_config(tmp_path),
        "--set",
        f"output_dir={tmp_path / 'clm-tuned'}",
        "--set",
        "model.architecture=null",
        "--set",
        f"model.name_or_path={tmp_path / 'clm-run' / 'model'}",
        "--set",
        "tokenizer.type=null",
        "--set",
        "training.max_steps=10",
    )
    assert result.exit_code == 0, result.output
    evals = [r for r in read_jsonl(tmp_path / "clm-tuned" / "metrics.jsonl") if "eval_loss" in r]
    first = json.loads((tmp_path / "clm-run" / "results.json").read_text())["final"]["eval_loss"]
    assert evals[-1]["eval_loss"] < first + 0.05  # continued from the pretrained weights, not from scratch


def test_evaluate_and_predict_for_language_models(cli, corpus_dir: Path, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    assert cli("pretrain", "--config", config).exit_code == 0
    result = cli("evaluate", "--config", config)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    final = json.loads((tmp_path / "run" / "results.json").read_text())["final"]
    assert metrics["loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
    assert metrics["bits_per_char"] == pytest.approx(final["eval_bits_per_char"], rel=1e-5)

    result = cli("predict", "--config", config, "--prompt", "The cat")
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert (
        row["prompt"] == "The cat"
        and 0 < row["new_tokens"] <= 12
        and row["finish_reason"] in ("eos", "length")
    )
    (tmp_path / "prompts.txt").write_text("A dog\nThe film liked\nMy\n")
    result = cli(
        "predict", "--config", config, "--input", tmp_path / "prompts.txt", "--output", tmp_path / "gen.jsonl"
    )
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "gen.jsonl")
    assert [r["prompt"] for r in rows] == ["A dog", "The film liked", "My"] and [r["id"] for r in rows] == [
        1,
        2,
        3,
    ]


def test_fill_mask_predictions(cli, corpus_dir: Path, tmp_path: Path) -> None:
    config = mlm_config(tmp_path)
    assert cli("pretrain", "--config", config).exit_code == 0
    result = cli(
        "predict", "--config", config, "--prompt", "the cat [MASK] the garden.", "--set", "predict.top_k=3"
    )
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    (mask,) = row["masks"]
    scores = [p["score"] for p in mask["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    # the terminal shows the filled text and every candidate with its probability
    shown = "  mask 1: " + "  ".join(f"{p['token']} {p['score']:.3f}" for p in mask["predictions"])
    assert row["filled"] in result.output and shown in result.output


def test_a_datasets_folder_as_the_corpus_and_as_labelled_data(cli, tmp_path: Path, tiny_bert: Path) -> None:
    """data.dataset takes anything `datasets.load_dataset` reads: a Hub id online, a local folder here."""
    ds = tmp_path / "reviews"
    ds.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 120), ("validation", 30)):
        rows = [
            {
                "text": f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}",
                "label": rng.choice(["neg", "pos"]),
            }
            for _ in range(n)
        ]
        (ds / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = clm_config(tmp_path, "")
    config.write_text(
        config.read_text().replace(
            "  train: corpus/[ab].txt\n  validation: corpus/valid.txt\n", "  dataset: reviews\n"
        )
    )
    for streaming in ("false", "true"):
        result = cli(
            "pretrain",
            "--config",
            config,
            "--set",
            f"data.streaming={streaming}",
            "--overwrite",
            "--set",
            "training.max_steps=5",
        )
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "run" / "results.json").read_text())["final"]["eval_tokens"] > 0
    clf = tmp_path / "clf.yaml"
    clf.write_text(
        f"task: classification\noutput_dir: clf\ndevice: cpu\nmodel: {{name_or_path: {tiny_bert}}}\ndata: {{dataset: reviews}}\ntraining: {{epochs: 1}}\n"
    )
    result = cli("finetune", "--config", clf)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "clf" / "model" / "config.json").read_text())["id2label"] == {
        "0": "neg",
        "1": "pos",
    }
    result = cli("pretrain", "--config", config, "--set", "data.train_split=nope", "--overwrite")
    assert result.exit_code == 2 and "cannot load split 'nope'" in result.output
