"""Problems found by using ptft as a new user would, each fixed and kept fixed here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_pretrain_cli import clm_config, mlm_config

REPO = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_fills_masks_with_an_nsp_model(cli, corpus_dir, tmp_path: Path) -> None:
    config = mlm_config(tmp_path, task="mlm+nsp")
    assert cli("pretrain", "--config", config, "--set", "training.max_steps=5").exit_code == 0
    result = cli("predict", "--config", config, "--prompt", "the cat [MASK] the garden.")
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len(row["masks"]) == 1 and len(row["masks"][0]["predictions"]) == 50  # predict.top_k
    assert "Traceback" not in result.output


def test_evaluate_uses_the_rows_a_classification_run_held_out(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    holdout = ["--set", "data.validation=null", "--set", "data.validation_fraction=0.25"]
    result = cli("finetune", "--config", config, *holdout, "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["rows"]) == 24  # 25% of 96 rows
    result = cli("evaluate", "--config", config, *holdout)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    final = json.loads((tmp_path / "run" / "results.json").read_text())["final"]
    assert metrics["examples"] == 24
    assert metrics["loss"] == pytest.approx(final["eval_loss"], rel=1e-6)
    assert metrics["accuracy"] == final["eval_accuracy"]


def test_evaluate_uses_the_tail_a_language_model_run_held_out(cli, corpus_dir, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    holdout = ["--set", "data.validation=null", "--set", "training.max_steps=10"]
    assert cli("pretrain", "--config", config, *holdout).exit_code == 0
    result = cli("evaluate", "--config", config, *holdout)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    final = json.loads((tmp_path / "run" / "results.json").read_text())["final"]
    assert metrics["tokens"] == final["eval_tokens"]
    assert metrics["loss"] == pytest.approx(final["eval_loss"], rel=1e-6)


def test_the_best_figure_is_the_one_evaluate_reproduces(cli, write_config, tmp_path: Path) -> None:
    """precision auto trains in bf16 where the CPU has it, and validates in evaluate's precision."""
    config = write_config()
    config.write_text(config.read_text().replace("precision: fp32", "precision: auto"))
    sets = ["--set", "training.best_metric=loss", "--set", "training.epochs=3"]
    result = cli("finetune", "--config", config, *sets)
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "run" / "results.json").read_text())["best"]
    assert cli("evaluate", "--config", config).exit_code == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(best["value"], rel=1e-6)


def test_evaluation_records_carry_the_same_epoch_as_training_records(
    cli, write_config, tmp_path: Path
) -> None:
    result = cli(
        "finetune", "--config", write_config(), "--set", "training.eval_every=3", "--set", "training.epochs=2"
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    evals = {r["step"]: r["epoch"] for r in records if "eval_loss" in r}
    train = {r["step"]: r["epoch"] for r in records if "loss" in r}
    assert evals == {3: 0.5, 6: 1.0, 9: 1.5, 12: 2.0}  # 6 steps per epoch
    assert all(train[s] == e for s, e in evals.items() if s in train)


def test_validate_takes_the_training_commands_flags(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    for flags in (["--overwrite"], ["--resume", "auto"]):
        result = cli("validate", "--config", config, *flags)
        assert result.exit_code == 0, result.output
        assert "would refuse" not in result.output
    result = cli("validate", "--config", config)
    assert result.exit_code == 0 and "already holds a run" in result.output  # a warning, as before


def test_run_on_gpu_script_passes_only_config_flags_to_validate(tmp_path: Path) -> None:
    """scripts/run_on_gpu.sh runs `validate` with the same extra arguments as the command."""
    fake = tmp_path / "ptft"
    fake.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n')
    fake.chmod(0o755)
    script = REPO / "scripts" / "run_on_gpu.sh"
    env = {"PTFT": str(fake), "PATH": "/usr/bin:/bin"}
    args = [str(script), "finetune", "c.yaml", "1", "--overwrite", "--set", "training.batch_size=64"]
    subprocess.run(args, check=True, env=env)
    validate, finetune = (tmp_path / "calls").read_text().splitlines()
    assert validate.startswith("validate --config c.yaml") and "--overwrite" in validate
    assert finetune.startswith("finetune --config c.yaml") and "--overwrite" in finetune


def test_a_missing_column_names_the_key_to_set(cli, write_config, tmp_path: Path) -> None:
    result = cli("finetune", "--config", write_config(), "--set", "data.text_column=sentence")
    assert result.exit_code == 2
    assert "data.text_column: no column 'sentence' (the text)" in result.output
    assert "set data.text_column to one of them" in result.output


def test_a_missing_data_file_names_the_config_line_and_key(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    config.write_text(config.read_text().replace("data/validation.csv", "nowhere/missing.csv"))
    result = cli("finetune", "--config", config)
    assert result.exit_code == 2
    line = config.read_text().splitlines().index("  validation: nowhere/missing.csv") + 1
    expected = (
        f"error: {config}:{line}: data.validation: {tmp_path / 'nowhere' / 'missing.csv'}: file not found"
    )
    assert result.output.startswith(expected), result.output


def test_paths_from_the_command_line_are_never_parsed_as_yaml(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    odd = tmp_path / "data" / "a #1.txt"
    odd.write_text("good film\nbad film\n")
    out = tmp_path / "x: y.jsonl"
    result = cli("predict", "--config", config, "--input", odd, "--output", out)
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in read_jsonl(out)] == ["good film", "bad film"]
