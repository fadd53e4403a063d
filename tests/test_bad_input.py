"""Bad input: every case exits 2 with one `error:` line naming the file and key or row, no traceback,
and leaves the disk exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Each case: (id, how to break things, command-line extras, text the error line must contain).
# `setup(tmp, cfg)` gets the tmp folder and the path of a valid config, and may rewrite either.


def edit(old: str, new: str) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, cfg: Path) -> None:
        text = cfg.read_text()
        assert old in text, old
        cfg.write_text(text.replace(old, new, 1))

    return setup


def append(extra: str) -> Callable[[Path, Path], None]:
    return lambda tmp, cfg: cfg.write_text(cfg.read_text() + extra)


def write_file(name: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, cfg: Path) -> None:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def both(*steps: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, cfg: Path) -> None:
        for step in steps:
            step(tmp, cfg)

    return setup


def previous_run(tmp: Path, cfg: Path) -> None:
    run = tmp / "run"
    run.mkdir()
    (run / ".ptft-run").write_text("{}\n")
    (run / "config.yaml").write_text("task: classification\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')


def foreign_dir(tmp: Path, cfg: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "thesis.tex").write_text("years of work")


CASES = [
    (
        "unknown top-level key",
        append("tasks: classification\n"),
        [],
        ["config.yaml:", "tasks: unknown key", "did you mean `task`"],
    ),
    (
        "misspelt nested key",
        edit("  learning_rate:", "  learnig_rate:"),
        [],
        ["config.yaml:15", "training.learnig_rate: unknown key", "training.learning_rate"],
    ),
    (
        "wrong type",
        edit("batch_size: 16", "batch_size: sixteen"),
        [],
        [
            "config.yaml:14",
            "training.batch_size",
            "expected an integer",
            "allowed: integer (>= 1, <= 1048576)",
        ],
    ),
    (
        "negative learning rate",
        edit("learning_rate: 1.0e-2", "learning_rate: -1.0e-2"),
        [],
        ["config.yaml:15", "training.learning_rate", "must be > 0"],
    ),
    ("zero epochs", edit("epochs: 8", "epochs: 0"), [], ["training.epochs", "must be > 0"]),
    (
        "bad choice",
        edit("precision: fp32", "precision: bf32"),
        [],
        ["config.yaml:5", "precision", "not one of auto, fp32, bf16, fp16", "did you mean"],
    ),
    (
        "bad device",
        edit("device: cpu", "device: gpu"),
        [],
        ["config.yaml:4", "device", "'gpu' is not a device"],
    ),
    ("section given a scalar", append("evaluate: yes\n"), [], ["evaluate", "must be a section"]),
    (
        "bool given a string",
        edit("  dropout: 0.0", "  dropout: 0.0\n  freeze_backbone: maybe"),
        [],
        ["model.freeze_backbone", "expected true or false"],
    ),
    (
        "list given a scalar",
        edit("  log_every: 2", "  log_every: 2\n  adam_betas: 0.9"),
        [],
        ["training.adam_betas", "expected a list"],
    ),
    (
        "adam betas out of range",
        edit("  log_every: 2", "  log_every: 2\n  adam_betas: [0.9, 1.5]"),
        [],
        ["training.adam_betas", "two numbers in [0, 1)"],
    ),
    (
        "warmup twice",
        edit("  log_every: 2", "  log_every: 2\n  warmup_steps: 5"),
        [],
        ["training.warmup_steps", "not both"],
    ),
    (
        "unknown best metric",
        edit("  log_every: 2", "  log_every: 2\n  best_metric: acc"),
        [],
        ["training.best_metric", "not a classification metric", "accuracy"],
    ),
    (
        "patience without metric",
        edit("  log_every: 2", "  log_every: 2\n  early_stopping_patience: 2"),
        [],
        ["training.early_stopping_patience", "needs training.best_metric"],
    ),
    (
        "one label declared",
        edit("  validation: data/validation.csv", "  validation: data/validation.csv\n  labels: [positive]"),
        [],
        ["data.labels", "at least 2 labels"],
    ),
    ("duplicate key", append("seed: 3\n"), [], ["config.yaml:", "seed: key appears twice"]),
    ("invalid yaml", append("training: [unclosed\n"), [], ["config.yaml:", "invalid YAML"]),
    ("empty config", lambda tmp, cfg: cfg.write_text(""), [], ["config.yaml", "config file is empty"]),
    (
        "config is a list",
        lambda tmp, cfg: cfg.write_text("- task\n- classification\n"),
        [],
        ["config.yaml:1", "must be a mapping"],
    ),
    (
        "config not utf-8",
        lambda tmp, cfg: cfg.write_bytes(b"task: classification\noutput_dir: caf\xe9\n"),
        [],
        ["config.yaml", "not UTF-8"],
    ),
    ("missing output_dir", edit("output_dir: run\n", ""), [], ["output_dir", "is required"]),
    (
        "task for another command",
        edit("task: classification", "task: mlm"),
        [],
        ["config.yaml:1", "task", "not something `ptft finetune` does"],
    ),
    ("--set unknown key", None, ["--set", "training.lr=0.1"], ["--set", "training.lr: unknown key"]),
    (
        "--set wrong type",
        None,
        ["--set", "training.batch_size=[1, 2]"],
        ["--set", "training.batch_size", "expected an integer"],
    ),
    ("--set without =", None, ["--set", "training.batch_size"], ["--set", "expected key=value"]),
    (
        "missing train file",
        edit("train: data/train.csv", "train: data/nope.csv"),
        [],
        ["nope.csv", "file not found"],
    ),
    ("empty train file", write_file("data/train.csv", ""), [], ["train.csv", "file is empty"]),
    ("header only", write_file("data/train.csv", "text,label\n"), [], ["train.csv", "no data rows"]),
    (
        "missing text column",
        write_file("data/train.csv", "review,label\ngood film,positive\nbad film,negative\n"),
        [],
        ["train.csv:2", "no column 'text'", "review"],
    ),
    (
        "missing label column",
        write_file("data/train.csv", "text,sentiment\ngood film,positive\nbad film,negative\n"),
        [],
        ["train.csv:2", "no column 'label'"],
    ),
    (
        "ragged csv",
        write_file("data/train.csv", "text,label\ngood film,positive\nbad, film,negative\n"),
        [],
        ["train.csv:3", "3 fields but the header has 2"],
    ),
    (
        "unclosed quote",
        write_file("data/train.csv", 'text,label\n"good film,positive\nbad film,negative\n'),
        [],
        ["train.csv", "malformed CSV"],
    ),
    (
        "non-utf8 data",
        write_file("data/train.csv", b"text,label\ngood film,positive\ncaf\xe9 film,negative\n"),
        [],
        ["train.csv:3", "not UTF-8"],
    ),
    (
        "empty text",
        write_file("data/train.csv", "text,label\ngood film,positive\n ,negative\n"),
        [],
        ["train.csv:3", "empty text"],
    ),
    (
        "empty label",
        write_file("data/train.csv", "text,label\ngood film,positive\nbad film,\n"),
        [],
        ["train.csv:3", "empty label"],
    ),
    (
        "single class",
        write_file("data/train.csv", "text,label\ngood film,positive\ngreat film,positive\n"),
        [],
        ["train.csv", "only one label"],
    ),
    (
        "label outside declared set",
        both(
            edit(
                "  validation: data/validation.csv",
                "  validation: data/validation.csv\n  labels: [negative, positive]",
            ),
            write_file("data/validation.csv", "text,label\ngood film,positive\nmeh film,neutral\n"),
        ),
        [],
        ["validation.csv:3", "label 'neutral' is not in data.labels"],
    ),
    (
        "validation label unseen in train",
        write_file("data/validation.csv", "text,label\ngood film,positive\nmeh film,neutral\n"),
        [],
        ["validation.csv:3", "label 'neutral' is not in the training labels"],
    ),
    (
        "bad jsonl line",
        both(
            write_file("data/train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", label: 0}\n'),
            edit("data/train.csv", "data/train.jsonl"),
        ),
        [],
        ["train.jsonl:2", "invalid JSON"],
    ),
    (
        "jsonl line not an object",
        both(
            write_file("data/train.jsonl", '{"text": "good", "label": 1}\n["bad", 0]\n'),
            edit("data/train.csv", "data/train.jsonl"),
        ),
        [],
        ["train.jsonl:2", "expected a JSON object"],
    ),
    (
        "unknown extension",
        both(write_file("data/train.xlsx", "x"), edit("data/train.csv", "data/train.xlsx")),
        [],
        ["train.xlsx", "cannot tell the format", ".csv"],
    ),
    (
        "fraction leaves nothing",
        both(
            write_file("data/train.csv", "text,label\ngood film,positive\nbad film,negative\n"),
            edit("  validation: data/validation.csv", "  validation_fraction: 0.9"),
        ),
        [],
        ["data.validation_fraction", "leaves no training rows"],
    ),
    (
        "missing model dir",
        edit("  name_or_path: ", "  name_or_path: ./no-such-model  # "),
        [],
        ["config.yaml:7", "model.name_or_path", "no such directory"],
    ),
    (
        "model dir without config.json",
        both(
            lambda tmp, cfg: (tmp / "empty-model").mkdir(),
            edit("  name_or_path: ", "  name_or_path: empty-model  # "),
        ),
        [],
        ["model.name_or_path", "no config.json"],
    ),
    (
        "cuda on a cpu machine",
        edit("device: cpu", "device: cuda"),
        [],
        ["config.yaml:4", "device", "CUDA is not available"],
    ),
    (
        "output_dir holds another run",
        previous_run,
        [],
        ["config.yaml:2", "output_dir", "already holds a run", "--overwrite"],
    ),
    (
        "output_dir holds other files",
        foreign_dir,
        ["--overwrite"],
        ["output_dir", "is not empty and is not a ptft run"],
    ),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("name", "setup", "extra", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(
    cli, write_config, tmp_path: Path, name, setup, extra, needles
) -> None:
    cfg = write_config()
    if setup is not None:
        setup(tmp_path, cfg)
    before = snapshot(tmp_path)
    result = cli("finetune", "--config", cfg, *extra)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten


def test_there_are_at_least_25_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 25


def test_several_problems_are_reported_together(cli, write_config) -> None:
    cfg = write_config()
    cfg.write_text(
        cfg.read_text().replace("epochs: 8", "epochs: -1").replace("batch_size: 16", "batch_sise: 16")
    )
    result = cli("finetune", "--config", cfg)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert any("training.epochs" in e for e in errors) and any("training.batch_sise" in e for e in errors)


def test_missing_config_file(cli, tmp_path: Path) -> None:
    result = cli("finetune", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml: config file not found" in result.output


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_inference_without_a_trained_model(cli, write_config, command) -> None:
    result = cli(command, "--config", write_config())
    assert result.exit_code == 2
    assert "no trained model at" in result.output and "ptft finetune" in result.output


def test_predict_input_problems(cli, write_config, tiny_bert: Path, tmp_path: Path) -> None:
    cfg = write_config()
    # any model directory with labels works for predict: use a tiny classifier saved by hand
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).save_pretrained(
        tmp_path / "clf"
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "clf" / f).write_bytes((tiny_bert / f).read_bytes())
    base = ["predict", "--config", cfg, "--set", f"predict.model={tmp_path / 'clf'}"]
    result = cli(*base, "--input", tmp_path / "missing.txt")
    assert result.exit_code == 2 and "missing.txt: file not found" in result.output
    result = cli(*base, "--output", tmp_path / "out.txt")
    assert result.exit_code == 2 and "predict.output" in result.output and ".jsonl or .csv" in result.output
    (tmp_path / "empty.txt").write_text("\n\n")
    result = cli(*base, "--input", tmp_path / "empty.txt")
    assert result.exit_code == 2 and "empty.txt: no data rows" in result.output
    assert not (tmp_path / "run").exists()


def test_evaluate_rejects_labels_the_model_does_not_know(
    cli, write_config, tiny_bert: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(
        tiny_bert,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    ).save_pretrained(tmp_path / "clf")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "clf" / f).write_bytes((tiny_bert / f).read_bytes())
    (tmp_path / "data" / "odd.csv").write_text("text,label\ngood film,positive\nfine film,neutral\n")
    cfg = write_config()
    result = cli(
        "evaluate",
        "--config",
        cfg,
        "--set",
        f"evaluate.model={tmp_path / 'clf'}",
        "--set",
        f"evaluate.data={tmp_path / 'data' / 'odd.csv'}",
    )
    assert result.exit_code == 2
    assert "odd.csv:3" in result.output and "'neutral'" in result.output
    assert "the model's labels" in result.output and "data.labels" not in result.output  # not the config's
    assert not (tmp_path / "run").exists()


def test_no_traceback_for_a_config_that_is_a_directory(cli, tmp_path: Path) -> None:
    result = cli("validate", "--config", tmp_path)
    assert result.exit_code == 2 and "is a directory, not a file" in result.output
    assert os.listdir(tmp_path) == []
