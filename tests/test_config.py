"""The schema: typed loading, overrides, path resolution, and every shipped config being valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ptft_cli import config
from ptft_cli.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_schema(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "output_dir: out\n"))
    assert (
        cfg.task == "classification"
        and cfg.training.learning_rate == 5e-5
        and cfg.training.eval_every == "epoch"
    )
    assert cfg.output_dir == str(tmp_path / "out")  # relative to the config's folder


def test_types_are_converted_and_checked(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "output_dir: o\ntraining:\n  learning_rate: 1e-4\n  epochs: 2\n  eval_every: 50\n")
    )
    assert cfg.training.learning_rate == 1e-4  # YAML reads `1e-4` as a string; the schema makes it a number
    assert cfg.training.epochs == 2.0 and isinstance(cfg.training.epochs, float)
    assert cfg.training.eval_every == 50
    with pytest.raises(ConfigError, match="expected an integer, got 2.5"):
        config.load(write(tmp_path, "output_dir: o\ntraining:\n  batch_size: 2.5\n"))
    with pytest.raises(ConfigError, match="expected true or false"):
        config.load(write(tmp_path, "output_dir: o\ntraining:\n  group_by_length: 1\n"))


def test_overrides_are_typed_and_relative_to_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "output_dir: o\n")
    cfg = config.load(
        path,
        ["training.batch_size=8", "data.labels=[neg, pos]", "predict.input=texts.txt", "model.dropout=null"],
    )
    assert cfg.training.batch_size == 8 and cfg.data.labels == ["neg", "pos"]
    assert cfg.predict.input == str(tmp_path / "texts.txt")
    assert cfg.where("training.batch_size") == "--set"
    with pytest.raises(ConfigError) as e:
        config.load(path, ["training.batch_size=big", "training.bach_size=3"])
    lines = [p.line() for p in e.value.problems]
    assert lines == [
        "--set: training.batch_size: expected an integer, got 'big'",
        "--set: training.bach_size: unknown key",
    ]
    assert e.value.problems[1].hint == "did you mean `training.batch_size`?"


def test_hub_ids_stay_hub_ids_and_local_paths_resolve(tmp_path: Path) -> None:
    (tmp_path / "local-model").mkdir()
    cfg = config.load(
        write(
            tmp_path,
            "output_dir: o\nmodel:\n  name_or_path: local-model\ntokenizer:\n  name_or_path: bert-base-uncased\n",
        )
    )
    assert cfg.model.name_or_path == str(tmp_path / "local-model")
    assert cfg.tokenizer.name_or_path == "bert-base-uncased"
    cfg = config.load(write(tmp_path, "output_dir: o\nmodel:\n  name_or_path: org/some-model\n"))
    assert cfg.model.name_or_path == "org/some-model"


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "output_dir: o\ntraining:\n  batch_size: 8\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert e.value.line() == f"{path.resolve()}:4: training.learning_rat: unknown key"
    assert e.value.hint == "did you mean `training.learning_rate`?"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "output_dir: o\ndata:\n  labels: [a, b]\n"))
    again = config.load(write(tmp_path, config.dump(cfg)))
    assert again.to_dict() == cfg.to_dict()


def test_reference_lists_every_key_once() -> None:
    keys = [row[0] for row in config.reference()]
    assert len(keys) == len(set(keys))
    assert {
        "task",
        "training.learning_rate",
        "data.labels",
        "predict.output",
        "model.freeze_backbone",
    } <= set(keys)
    assert all(row[3] for row in config.reference())  # every key documented


def test_readme_documents_every_key() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [key for key, *_ in config.reference() if f"`{key}`" not in readme]
    assert missing == []


SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_config_loads_and_says_how_to_run_it(path: Path) -> None:
    cfg = config.load(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ptft "), f"{path} must start with the command that runs it"
    assert cfg.output_dir


def test_shipped_configs_were_found() -> None:
    assert len(SHIPPED) >= 3 and any("demo" in str(p) for p in SHIPPED)


def test_help_and_validate_do_not_import_torch(tmp_path: Path) -> None:
    """`ptft --help` and `ptft validate` stay fast: no torch, transformers or datasets."""
    demo = REPO / "configs" / "demo" / "sentiment.yaml"
    code = f"""
import sys
from typer.testing import CliRunner
from ptft_cli.cli import app
r = CliRunner()
assert r.invoke(app, ["--help"]).exit_code == 0
res = r.invoke(app, ["validate", "--config", r"{demo}"])
assert res.exit_code == 0, res.output
heavy = sorted(m for m in ("torch", "transformers", "datasets", "matplotlib") if m in sys.modules)
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_reference_is_generated_from_the_schema() -> None:
    from tests.conftest import load_script

    module = load_script("config_reference")
    readme = (REPO / "README.md").read_text()
    block = readme.split(module.START, 1)[1].split(module.END, 1)[0]
    assert block.strip() == module.markdown().strip(), "run: python scripts/config_reference.py --write"
