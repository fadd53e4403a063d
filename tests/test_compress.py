"""`ptft compress` and the trade-off table on a tiny BERT classifier: each path's output loads through
ptft (and, for dropped layers, plain transformers) and computes what the in-memory transformation does;
every bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptft_cli import compression as compress


@pytest.fixture(scope="session")
def classifier(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with a 2-label head, saved like a run's model/ (untrained: the tests check
    structure and numerics, not accuracy)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(
        tiny_bert,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


def _config(write_config, classifier: Path, section: str) -> Path:
    return write_config(
        f"compress:\n  model: {classifier}\n  output_dir: out\n  throughput_rounds: 1\n{section}"
    )


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, return_tensors="pt", padding=True)).logits


def _load(ref: Path):
    """A compressed model as `ptft evaluate` / `predict` load it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(ref)
    return compress.load(
        AutoModelForSequenceClassification.from_config(config, attn_implementation="eager"), str(ref)
    )


def test_int8_is_stored_as_int8_and_loads_as_torch_quantizes(cli, write_config, classifier, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = cli("compress", "--config", _config(write_config, classifier, "  quantize: int8\n"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.png", "model"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["ptft_compression"] == {"quantize": "int8"}
    with safe_open(out / "model" / "model.safetensors", "pt") as f:
        assert f.get_tensor("bert.encoder.layer.0.attention.self.query.weight").dtype == torch.int8
    assert compress.weight_bytes(out / "model") < 0.6 * compress.weight_bytes(classifier)

    # what ptft loads is exactly torch's per-channel dynamic int8 of the original
    tok = AutoTokenizer.from_pretrained(classifier)
    reference = compress.quantize(AutoModelForSequenceClassification.from_pretrained(classifier), "int8")
    texts = ["the film was great", "a dull and boring plot", "it was very good"]
    torch.testing.assert_close(_logits(_load(out / "model"), tok, texts), _logits(reference, tok, texts))

    table = json.loads((out / "compare.json").read_text())
    assert table["unit"] == "examples" and [r["name"] for r in table["rows"]] == ["original", "out"]
    for row in table["rows"]:
        assert row["parameters"] == table["rows"][0]["parameters"]  # packed int8 weights counted
        assert row["per_second"] > 0 and 0 <= row["accuracy"] <= 1
    assert table["rows"][1]["size_mb"] < table["rows"][0]["size_mb"]

    # predict reads it; evaluate --compare puts it in a table beside the original
    result = cli("predict", "--config", write_config(), "--set", f"predict.model={out / 'model'}")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 20
    result = cli(
        "evaluate", "--config", write_config(), "--set", f"evaluate.model={classifier}", "--compare", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "run" / "eval" / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows] == [classifier.name, "out"]
    assert (tmp_path / "run" / "eval" / "compare.png").is_file()

    # a quantized model is for inference: fine-tuning it is refused in one line
    result = cli(
        "finetune",
        "--config",
        write_config(),
        "--set",
        f"model.name_or_path={out / 'model'}",
        "--set",
        "output_dir=run2",
    )
    assert result.exit_code == 2 and "a quantized model cannot be trained" in result.output
    assert not (tmp_path / "run2").exists()


def test_low_rank_prune_and_recovery_run_end_to_end(cli, write_config, classifier, tmp_path):
    section = (
        "  low_rank:\n    rank_ratio: 0.5\n    modules: [query, intermediate.dense]\n"
        "  prune:\n    layers: [0]\n    heads: {1: [0]}\n  recover: true\n"
    )
    path = _config(write_config, classifier, section)
    result = cli(
        "compress", "--config", path, "--set", "training.epochs=1", "--set", "training.batch_size=32"
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    record = json.loads((out / "model" / "config.json").read_text())["ptft_compression"]
    # layer 1 became layer 0; only the named layers were factorised, at half their parameters
    assert record["pruned_heads"] == {"0": [0]}
    assert set(record["low_rank"]) == {
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.intermediate.dense",
    }
    assert record["low_rank"]["bert.encoder.layer.0.intermediate.dense"] == int(0.5 * 32 * 64 / 96)
    results = json.loads((out / "recovery" / "results.json").read_text())
    assert results["steps"] == 3  # one epoch of 96 rows in batches of 32: the normal training loop
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["original", "before recovery", "out"]
    assert rows[1]["parameters"] == rows[2]["parameters"] < rows[0]["parameters"]
    result = cli("evaluate", "--config", write_config(), "--set", f"evaluate.model={out / 'model'}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(rows[2]["accuracy"])


def test_dropped_layers_load_in_plain_transformers(cli, write_config, classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = cli("compress", "--config", _config(write_config, classifier, "  prune:\n    layers: [1]\n"))
    assert result.exit_code == 0, result.output
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    assert plain.config.num_hidden_layers == 1
    original = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    original.bert.encoder.layer = original.bert.encoder.layer[:1]
    tok = AutoTokenizer.from_pretrained(classifier)
    texts = ["the film was great", "awful"]
    torch.testing.assert_close(_logits(plain, tok, texts), _logits(original, tok, texts))


def test_low_rank_is_exact_for_a_low_rank_weight():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(48, 40)])
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.randn(40, 4) @ torch.randn(4, 48))
    x = torch.randn(5, 48)
    expected = model.layers[0](x)
    plan = compress.Plan([], {}, None, 0.999, None, None)
    ranks = compress.low_rank(model, plan, compress.linear_names(model))
    assert ranks == {"layers.0": 4}
    torch.testing.assert_close(model.layers[0](x), expected, atol=1e-4, rtol=1e-4)


def test_pruning_a_head_removes_exactly_its_contribution(classifier):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(classifier)
    texts = ["the film was great", "a dull and boring plot"]
    masked = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    size = masked.bert.encoder.layer[0].attention.self.attention_head_size
    with torch.no_grad():  # head 1 of block 0 contributes nothing: its columns of output.dense are zero
        masked.bert.encoder.layer[0].attention.output.dense.weight[:, size : 2 * size] = 0
    pruned = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    compress.prune_heads(pruned, {0: [1]})
    assert pruned.bert.encoder.layer[0].attention.self.query.out_features == size
    torch.testing.assert_close(_logits(pruned, tok, texts), _logits(masked, tok, texts))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "  low_rank:\n    rank_ratio: 1.5\n",
            "compress.low_rank.rank_ratio: 1.5 is out of range: must be < 1",
        ),
        ("  low_rank:\n    rank_ratio: 0.5\n    energy: 0.9\n", "set rank_ratio or energy, not both"),
        ("  prune:\n    layers: [0, 1]\n", "compress.prune.layers: drops all 2 blocks"),
        ("  prune:\n    layers: [5]\n", "compress.prune.layers: block 5 does not exist"),
        ("  prune:\n    heads: {0: [2]}\n", "compress.prune.heads: block 0 has no head 2"),
        ("  prune:\n    heads: {0: [0, 1]}\n", "removes every head of block 0"),
        ("  low_rank:\n    rank_ratio: 0.5\n    modules: [qury]\n", "'qury' names no linear layer"),
        ("  recover: true\n  quantize: int8\n", "a recovery fine-tune follows pruning or low-rank"),
        ("  recover: false\n", "nothing to compress"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, write_config, classifier, tmp_path, section, message):
    result = cli("compress", "--config", _config(write_config, classifier, section))
    assert result.exit_code == 2, result.output
    assert message in result.output
    (line,) = result.output.strip().splitlines()  # one line: where, what, and a hint after "; "
    assert line.startswith("error: ") and "; " in line
    assert not (tmp_path / "out").exists()


def test_int8_on_a_gpu_is_refused_before_anything_is_written(
    cli, write_config, classifier, tmp_path, monkeypatch
):
    from ptft_cli import hardware

    monkeypatch.setattr(
        hardware, "resolve", lambda *a, **k: hardware.Hardware(torch.device("cuda"), "fp32", "test")
    )
    result = cli("compress", "--config", _config(write_config, classifier, "  quantize: int8\n"))
    assert result.exit_code == 2, result.output
    assert "dynamic int8 quantization runs on the CPU only, and the device is cuda" in result.output
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_never_overwritten(cli, write_config, classifier, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    result = cli("compress", "--config", _config(write_config, classifier, "  quantize: int8\n"))
    assert result.exit_code == 2 and "already exists" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.txt"]


def test_int8_weight_only_round_trips_through_torchao(classifier, tmp_path):
    pytest.importorskip("torchao")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ptft_cli import checkpoint

    tok = AutoTokenizer.from_pretrained(classifier)
    texts = ["the film was great", "a dull and boring plot"]
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    expected = _logits(model, tok, texts)
    model.config.ptft_compression = {"quantize": "int8_weight"}
    checkpoint.save_tensors_dir(
        model.config, compress.quantized_state(model, "int8_weight"), tok, tmp_path / "m"
    )
    assert compress.weight_bytes(tmp_path / "m") < 0.6 * compress.weight_bytes(classifier)
    torch.testing.assert_close(_logits(_load(tmp_path / "m"), tok, texts), expected, atol=2e-2, rtol=0)


def test_validate_checks_the_compress_section(cli, write_config, classifier):
    result = cli("validate", "--config", _config(write_config, classifier, "  prune:\n    heads: {0: [5]}\n"))
    assert result.exit_code == 2 and "compress.prune.heads: block 0 has no head 5" in result.output
    result = cli("validate", "--config", _config(write_config, classifier, "  quantize: int8\n"))
    assert result.exit_code == 0 and "quantize int8" in result.output


def test_gpt2_conv1d_layers_become_the_linears_they_compute():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16)).eval()
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        expected = model(ids).logits
        assert compress.conv1d_to_linear(model)
        assert "transformer.h.0.attn.c_attn" in compress.linear_names(model)
        torch.testing.assert_close(model(ids).logits, expected)
