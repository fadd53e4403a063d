"""Config ergonomics: Hugging Face argument names get the right "did you mean", a misplaced ptft key
is sent to its section, and every problem of a config is reported at once (exit 2, one line each)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ptft_cli import config
from ptft_cli.config.aliases import HF_ALIASES
from ptft_cli.errors import ConfigError

KEYS = {row[0] for row in config.reference()}


def problems_of(data: dict) -> dict[str, str]:
    """key -> hint of every problem a dict config has."""
    with pytest.raises(ConfigError) as e:
        config.load_dict({"output_dir": "o", **data})
    return {p.key: p.hint for p in e.value.problems}


def test_every_alias_names_a_real_key() -> None:
    assert len(HF_ALIASES) >= 20
    assert {a.key for a in HF_ALIASES.values()} <= KEYS


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("per_device_train_batch_size", "`training.batch_size`"),
        ("per_device_eval_batch_size", "`training.eval_batch_size`"),
        ("num_train_epochs", "`training.epochs`"),
        ("logging_steps", "`training.log_every`"),
        ("eval_steps", "`training.eval_every`"),
        ("save_steps", "`training.save_every`"),
        ("save_total_limit", "`training.keep_checkpoints`"),
        ("lr_scheduler_type", "`training.lr_scheduler`"),
        ("bf16", "`precision: bf16`"),
        ("fp16", "`precision: fp16`"),
        ("model_name_or_path", "`model.name_or_path`"),
        ("resume_from_checkpoint", "`resume`"),
    ],
)
def test_hugging_face_names_suggest_the_ptft_key_at_top_level_and_in_a_section(name: str, meant: str) -> None:
    found = problems_of({name: 1, "training": {name: 1}})
    assert set(found) == {name, f"training.{name}"}
    for hint in found.values():
        assert hint.startswith(f"did you mean {meant}?"), hint
        assert "Hugging Face" in hint
    if name == "resume_from_checkpoint":  # the flag too, since that is how a run is usually resumed
        assert "`--resume auto|PATH`" in found[name]


def test_every_alias_in_every_section_where_it_is_unknown() -> None:
    for name, alias in HF_ALIASES.items():
        for prefix in ("", "training.", "data."):
            if prefix + name in KEYS:  # e.g. `seed` at the top level, `max_steps` in training
                continue
            data: dict = {name: 1} if not prefix else {prefix[:-1]: {name: 1}}
            hint = problems_of(data)[prefix + name]
            assert f"`{alias.key}" in hint, (prefix + name, hint)


def test_a_ptft_key_in_the_wrong_section_is_sent_to_its_section() -> None:
    found = problems_of({"learning_rate": 0.1, "training": {"seed": 3, "name_or_path": "x"}})
    assert found["learning_rate"].startswith("did you mean `training.learning_rate`?")
    assert found["training.seed"].startswith("did you mean `seed`?")
    assert "`model.name_or_path` or `tokenizer.name_or_path`" in found["training.name_or_path"]
    assert problems_of({"training": {"learnig_rate": 1}})["training.learnig_rate"] == (
        "did you mean `training.learning_rate`?"
    )  # a plain typo still gets the nearest key


def test_set_with_a_hugging_face_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: o\n")
    with pytest.raises(ConfigError) as e:
        config.load(path, ["per_device_train_batch_size=8"])
    assert e.value.line() == "--set: per_device_train_batch_size: unknown key"
    assert e.value.hint.startswith("did you mean `training.batch_size`?")


BROKEN = """task: classification
output_dir: run
per_device_train_batch_size: 8
model:
  architecture: bert
  num_heads: 3
training:
  learning_rate: fast
  min_learning_rate: 0.001
  epochs: -1
  epochs: 2
  max_grad_norm: [1]
"""


def test_every_problem_of_a_config_is_reported_at_once(cli, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN)
    result = cli("validate", "--config", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = result.output.strip().splitlines()
    assert all(line.startswith("error: ") for line in errors), result.output
    where = f"{path.resolve()}:"
    expected = [
        f"{where}3: per_device_train_batch_size: unknown key; did you mean `training.batch_size`?",
        f"{where}8: training.learning_rate: expected a number, got 'fast'",
        f"{where}12: training.max_grad_norm: expected a number, got [1]",
        f"{where}11: training.epochs: key appears twice (first on line 10)",
        f"{where}6: model.num_heads: 3 does not divide hidden_size 256",  # a cross-field check beside them
    ]
    for line in expected:
        assert sum(e.startswith(f"error: {line}") for e in errors) == 1, (line, errors)
    # min_learning_rate is compared with a learning rate that was refused: no second, made-up problem
    assert len(errors) == len(expected) and "min_learning_rate" not in result.output
    assert not (tmp_path / "run").exists()


def test_an_api_error_lists_every_problem_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as e:
        config.load_dict({"output_dir": "o", "num_train_epochs": 1, "training": {"batch_size": 0}})
    lines = str(e.value).splitlines()
    assert lines == [
        "<dict>: num_train_epochs: unknown key",
        "<dict>: training.batch_size: 0 is out of range: must be >= 1",
    ]
    assert e.value.__notes__ == [
        "hint (num_train_epochs): did you mean `training.epochs`? (`num_train_epochs` is Hugging Face's name for it)",
        "hint (training.batch_size): allowed: integer (>= 1, <= 1048576)",
    ]


def test_a_missing_model_and_a_missing_data_file_are_reported_together(cli, write_config, tmp_path) -> None:
    cfg = write_config()
    text = cfg.read_text().replace("train: data/train.csv", "train: data/nope.csv")
    cfg.write_text(re.sub(r"name_or_path: .*", "name_or_path: ./no-model", text, count=1))
    for command in ("validate", "finetune"):
        result = cli(command, "--config", cfg)
        assert result.exit_code == 2 and "Traceback" not in result.output
        errors = result.output.strip().splitlines()
        assert len(errors) == 2 and all(e.startswith("error: ") for e in errors), result.output
        assert "model.name_or_path" in errors[0] and "nope.csv" in errors[1], errors
    assert not (tmp_path / "run").exists()
