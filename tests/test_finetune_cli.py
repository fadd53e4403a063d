"""End to end on a tiny BERT: finetune → evaluate → predict, and what each leaves on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def trained(cli, write_config, tmp_path: Path) -> Path:
    config = write_config()
    result = cli("finetune", "--config", config)
    assert result.exit_code == 0, result.output
    return config


def test_finetune_writes_the_documented_run_directory(trained, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "results.json",
        "loss.png",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
    ):
        assert (run / name).is_file(), name
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000048"]  # keep_checkpoints: 1, 8 epochs x 6 steps
    assert {p.name for p in checkpoints[0].iterdir()} >= {
        "model.safetensors",
        "training_state.pt",
        "state.json",
        "config.json",
        "checkpoint.json",
        "metrics.jsonl",
        "config.yaml",
    }
    state = json.loads((checkpoints[0] / "state.json").read_text())["state"]
    assert state["step"] == 48 and state["epoch"] == 8
    # the training state loads without unpickling code
    tensors = torch.load(checkpoints[0] / "training_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng_torch"} <= set(tensors)
    resolved = (run / "config.yaml").read_text()
    assert f"train: {tmp_path / 'data' / 'train.csv'}" in resolved  # paths resolved, absolute
    env = json.loads((run / "env.json").read_text())
    assert env["precision"] == "fp32" and env["device"] == "cpu" and env["torch"] == torch.__version__


def test_training_loss_falls_and_validation_is_logged(trained, tmp_path: Path) -> None:
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_accuracy" in r]
    assert train[0]["step"] == 2 and {"lr", "samples_per_s", "grad_norm", "epoch"} <= set(train[0])
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]
    assert [e["step"] for e in evals] == [6, 12, 18, 24, 30, 36, 42, 48]  # eval_every: epoch
    assert evals[-1]["eval_accuracy"] >= 0.9
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 48 and results["final"]["eval_accuracy"] == evals[-1]["eval_accuracy"]


def test_plain_transformers_reproduces_ptft_predict(cli, trained, tmp_path: Path) -> None:
    result = cli("predict", "--config", trained)
    assert result.exit_code == 0, result.output
    predictions = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    texts = [line for line in (tmp_path / "data" / "texts.txt").read_text().splitlines() if line]
    assert [p["text"] for p in predictions] == texts  # input order restored after length sorting
    assert [p["id"] for p in predictions] == list(range(1, len(texts) + 1))  # line numbers

    model_dir = tmp_path / "run" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        probs = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    labels = [model.config.id2label[i] for i in probs.argmax(-1).tolist()]
    assert [p["label"] for p in predictions] == labels
    ours = torch.tensor([[p["probabilities"][n] for n in ("negative", "positive")] for p in predictions])
    torch.testing.assert_close(ours, probs, atol=1e-4, rtol=0)
    assert all(abs(p["score"] - max(p["probabilities"].values())) < 1e-12 for p in predictions)


def test_predict_writes_csv(cli, trained, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    result = cli("predict", "--config", trained, "--output", out)
    assert result.exit_code == 0, result.output
    header, *rows = out.read_text().splitlines()
    assert header == "id,text,label,score,p_negative,p_positive"
    assert len(rows) == 20


def test_evaluate_writes_metrics_and_confusion_matrix(cli, trained, tmp_path: Path) -> None:
    result = cli("evaluate", "--config", trained)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["examples"] == 32 and metrics["labels"] == ["negative", "positive"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 32
    assert set(metrics["per_class"]) == {"negative", "positive"}
    assert {"loss", "accuracy", "macro_f1"} <= set(metrics)
    assert (tmp_path / "run" / "eval" / "confusion_matrix.png").stat().st_size > 1000
    # evaluate's fp32 accuracy agrees with the last in-training evaluation (also fp32 here)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(results["final"]["eval_accuracy"])


def test_a_second_run_never_overwrites_the_first(cli, trained, tmp_path: Path) -> None:
    before = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    result = cli("finetune", "--config", trained)
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == before
    result = cli("finetune", "--config", trained, "--overwrite", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 6


def test_best_metric_keeps_the_best_model_and_early_stopping_stops(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    result = cli(
        "finetune",
        "--config",
        config,
        "--set",
        "training.epochs=30",
        "--set",
        "training.eval_every=3",
        "--set",
        "training.best_metric=loss",
        "--set",
        "training.early_stopping_patience=2",
        "--set",
        "training.lr_scheduler=constant",
        "--set",
        "training.learning_rate=0.05",
    )
    assert result.exit_code == 0, result.output
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "eval_loss" in r]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    best = min(evals, key=lambda r: r["eval_loss"])
    assert results["best"] == {"metric": "loss", "value": best["eval_loss"], "step": best["step"]}
    assert results["stopped_early"] and results["steps"] < 30 * 6
    assert evals[-1]["step"] - best["step"] == 2 * 3  # two evaluations without improvement
    # model/ holds the best step's weights: evaluating it reproduces the best validation loss
    result = cli("evaluate", "--config", config)
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(best["eval_loss"], rel=1e-5)


def test_gradient_accumulation_matches_one_big_batch(cli, write_config, tmp_path: Path) -> None:
    """16 examples as 2 micro-batches of 8 give the same update as one batch of 16."""
    weights = []
    for name, extra in (
        ("big", []),
        ("accum", ["--set", "training.batch_size=8", "--set", "training.gradient_accumulation_steps=2"]),
    ):
        config = write_config(name=f"{name}.yaml")
        args = [
            "--set",
            f"output_dir={tmp_path / name}",
            "--set",
            "training.max_steps=1",
            "--set",
            "training.group_by_length=false",
        ]
        result = cli("finetune", "--config", config, *args, *extra)
        assert result.exit_code == 0, result.output
        weights.append(load_file(tmp_path / name / "model" / "model.safetensors"))
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-6, rtol=1e-5)


def test_freeze_backbone_trains_only_the_head(cli, write_config, tiny_bert: Path, tmp_path: Path) -> None:
    config = write_config()
    result = cli(
        "finetune", "--config", config, "--set", "model.freeze_backbone=true", "--set", "training.epochs=1"
    )
    assert result.exit_code == 0, result.output
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    changed = {k for k in after if k in before and not torch.equal(after[k], before[k])}
    assert changed == set()  # every pretrained tensor untouched
    assert {k for k in after if k not in before} >= {"classifier.weight", "classifier.bias"}


def test_train_top_k_layers_freezes_the_lower_layers(
    cli, write_config, tiny_bert: Path, tmp_path: Path
) -> None:
    config = write_config()
    result = cli(
        "finetune", "--config", config, "--set", "model.train_top_k_layers=1", "--set", "training.epochs=1"
    )
    assert result.exit_code == 0, result.output
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    changed = {
        k.split(".")[1] + ("." + k.split(".")[3] if ".layer." in k else "")
        for k in after
        if k in before and not torch.equal(after[k], before[k])
    }
    assert changed == {"encoder.1"}  # embeddings and layer 0 untouched (the pooler is new in this checkpoint)


def test_freeze_marks_the_right_parameters_trainable(tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from ptft_cli.config import ModelConfig
    from ptft_cli.models import freeze

    def trainable(**kw) -> set[str]:
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
        freeze(model, ModelConfig(**kw))
        return {
            n.split(".")[1] + ("." + n.split(".")[3] if ".layer." in n else "")
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    assert trainable() == {"embeddings", "encoder.0", "encoder.1", "pooler", "weight", "bias"}
    assert trainable(freeze_backbone=True) == {"weight", "bias"}  # classifier.weight / classifier.bias
    assert trainable(train_top_k_layers=1) == {"encoder.1", "pooler", "weight", "bias"}
    assert trainable(train_top_k_layers=0) == {"weight", "bias"}


def test_sentence_pairs_and_integer_labels_from_jsonl(cli, write_config, tmp_path: Path) -> None:
    rows = [
        {"premise": f"the film was {w}", "hypothesis": f"it was {w}", "label": i % 2}
        for i, w in enumerate(["good", "bad"] * 20)
    ]
    (tmp_path / "data" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config()
    result = cli(
        "finetune",
        "--config",
        config,
        "--set",
        "data.train=" + str(tmp_path / "data" / "pairs.jsonl"),
        "--set",
        "data.validation=null",
        "--set",
        "data.validation_fraction=0.25",
        "--set",
        "data.text_column=premise",
        "--set",
        "data.text_pair_column=hypothesis",
        "--set",
        "training.epochs=1",
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "0", "1": "1"}
    assert "30 examples" in result.output.replace(",", "")  # 40 rows, 25% held out
