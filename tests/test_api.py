"""The Python API (`import ptft_cli as ptft`), `ptft env` and shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ptft_cli as ptft
from ptft_cli import api

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tiny_bert: Path, data_dir: Path) -> dict:
    """The classification config of conftest's `write_config`, as Python data."""
    return {
        "task": "classification",
        "output_dir": data_dir.parent / "run",  # a Path: notebooks pass them
        "device": "cpu",
        "precision": "fp32",
        "model": {"name_or_path": str(tiny_bert), "dropout": 0.0},
        "data": {"train": str(data_dir / "train.csv"), "validation": str(data_dir / "validation.csv")},
        "training": {"epochs": 8, "batch_size": 16, "learning_rate": 1.0e-2, "warmup_ratio": 0.1},
    }


def test_import_is_light_and_exports_the_commands() -> None:
    code = (
        "import sys\nimport ptft_cli as ptft\n"
        "fns = [ptft.finetune, ptft.pretrain, ptft.evaluate, ptft.predict, ptft.explain, ptft.validate, ptft.env]\n"
        "assert all(callable(f) for f in fns) and issubclass(ptft.ConfigError, ptft.PtftError)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
    with pytest.raises(AttributeError):
        ptft.no_such_function  # noqa: B018


def test_finetune_from_a_dict_trains_and_returns_the_run(
    tiny_bert: Path, data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tiny_bert, data_dir)
    before = repr(cfg)
    result = ptft.finetune(cfg, overrides={"training.eval_every": 24, "training.log_every": 4})
    assert repr(cfg) == before  # the caller's dict is not changed
    assert result.command == "finetune" and result.run_dir == tmp_path / "run"
    assert result.output == tmp_path / "run" / "results.json"
    assert result.results == json.loads(result.output.read_text())
    assert result.results["steps"] == 48  # 96 rows / 16 × 8 epochs
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_loss" in r] == [24, 48]  # the override applied
    assert result.results["final"]["eval_accuracy"] >= 0.9
    assert (result.run_dir / "model" / "config.json").is_file()
    assert (result.run_dir / "config.yaml").read_text().startswith("# resolved by ptft from <dict>\n")

    # evaluate and predict the run through the API too, a dotted key and a `key=value` string
    metrics = ptft.evaluate({"output_dir": "run", "device": "cpu", "data.validation": "data/validation.csv"})
    assert metrics.results["accuracy"] == pytest.approx(result.results["final"]["eval_accuracy"])
    assert metrics.output == tmp_path / "run" / "eval" / "metrics.json" and metrics.output.is_file()
    predicted = ptft.predict(
        {"output_dir": "run"}, ["device=cpu"], input=data_dir / "texts.txt", output="out.csv"
    )
    assert predicted.output == tmp_path / "out.csv"
    assert len(predicted.results["rows"]) == 20 and {"text", "label"} <= set(predicted.results["rows"][0])


def test_a_bad_dict_raises_a_typed_error_naming_the_key(tiny_bert: Path, data_dir: Path) -> None:
    cfg = tiny_config(tiny_bert, data_dir)
    cfg["training"] = {"per_device_train_batch_size": 8, "learning_rate": -1}
    with pytest.raises(ptft.ConfigError) as e:
        ptft.finetune(cfg)
    assert str(e.value).splitlines() == [
        "<dict>: training.per_device_train_batch_size: unknown key",
        "<dict>: training.learning_rate: -1.0 is out of range: must be > 0",
    ]
    assert "did you mean `training.batch_size`?" in e.value.__notes__[0]
    assert not (data_dir.parent / "run").exists()  # nothing written
    with pytest.raises(ptft.PtftError, match=r"overrides: training.epochs: expected a number, got 'x'"):
        ptft.validate(tiny_config(tiny_bert, data_dir), {"training.epochs": "x"})
    with pytest.raises(ptft.ConfigError, match="a config is a YAML path or a dict, got int"):
        ptft.validate(3)  # type: ignore[arg-type]
    with pytest.raises(ptft.ConfigError, match="config file not found"):
        ptft.finetune(data_dir / "nope.yaml")
    looped: dict = {"output_dir": "o"}
    looped["training"] = looped
    with pytest.raises(ptft.ConfigError, match="<dict>: .* refers to itself"):
        ptft.validate(looped)


def test_validate_and_load_config_from_a_path(write_config, tmp_path: Path) -> None:
    path = write_config()
    cfg = ptft.load_config(path, ["training.batch_size=8"])
    assert cfg.training.batch_size == 8 and cfg.where("training.batch_size") == "--set"
    result = ptft.validate(cfg)
    assert result.results["task"] == "classification" and result.run_dir == tmp_path / "run"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ptft.ConfigError, match="not to an already loaded Config"):
        ptft.validate(cfg, {"training.epochs": 1})


def test_several_processes_are_refused_from_python(write_config) -> None:
    with pytest.raises(ptft.ConfigError, match="launched by the command line") as e:
        ptft.finetune(write_config(), {"distributed.nproc_per_node": 2})
    assert e.value.where == "overrides"


def test_the_cli_runs_through_the_api(cli, write_config, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(api, "run", lambda command, cfg, opts=None: calls.append((command, cfg)))
    cfg = write_config()
    for command in ("finetune", "evaluate", "predict", "validate"):
        assert cli(command, "--config", cfg, "--set", "seed=7").exit_code == 0
    assert [c for c, _ in calls] == ["finetune", "evaluate", "predict", "validate"]
    assert all(loaded.seed == 7 and loaded.source == cfg.resolve() for _, loaded in calls)


def test_env_prints_versions_device_precision_and_threads(cli) -> None:
    import torch

    result = cli("env", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["ptft"] == ptft.__version__ and info["torch"] == torch.__version__
    assert info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert info["precision"] in ("fp32", "bf16", "fp16") and info["threads"] == torch.get_num_threads()
    assert info["cuda_available"] == torch.cuda.is_available() and isinstance(info["gpus"], list)
    assert set(info["extras"]) >= {"gguf", "bitsandbytes", "tensorboard", "wandb"}
    assert {"peft", "transformers", "python", "mps_available"} <= set(info)
    text = cli("env")
    assert text.exit_code == 0
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines() if not line.startswith(" "))
    assert lines["torch"] == torch.__version__ and lines["threads"].startswith(str(info["threads"]))
    assert f"{info['device']} (" in text.stdout and f"{info['precision']} (" in text.stdout


def test_the_run_environment_is_the_same_record() -> None:
    """`ptft env` and a run's env.json come from one function (metrics.environment)."""
    from ptft_cli import metrics

    env = metrics.environment("cpu", "fp32", "set in the config", None)
    assert set(api.env()) == (set(env) - {"command", "git_sha"}) | {"eval_precision"}


def _ptft(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptft_cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=60,
    )


def test_shell_completion_shows_installs_and_completes_without_torch(tmp_path: Path) -> None:
    no_detection = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = _ptft("--show-completion", "bash", env=no_detection)
    assert shown.returncode == 0, shown.stderr
    assert "_ptft_completion()" in shown.stdout and "_PTFT_COMPLETE=complete_bash" in shown.stdout
    installed = _ptft("--install-completion", "bash", env={**no_detection, "HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    assert "_PTFT_COMPLETE=complete_bash" in (tmp_path / ".bash_completions" / "ptft.sh").read_text()
    assert "ptft.sh" in (tmp_path / ".bashrc").read_text()
    # what the shell runs on <TAB>: the commands, with no torch behind them
    code = (
        "import sys\nfrom ptft_cli.cli import app\n"
        "try:\n    app(prog_name='ptft')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "_PTFT_COMPLETE": "complete_bash", "COMP_WORDS": "ptft fi", "COMP_CWORD": "1"},
        timeout=60,
    )
    assert done.stdout.split() == ["finetune"] and done.stderr.strip() == "False"


def test_every_api_name_is_the_function_even_after_the_modules_load() -> None:
    """`ptft.compress` is the command, not the module behind it (ptft_cli.compression)."""
    import ptft_cli
    from ptft_cli import api, compression, runner  # noqa: F401

    for name in ("pretrain", "finetune", "evaluate", "predict", "explain", "compress", "validate", "env"):
        assert getattr(ptft_cli, name) is getattr(api, name)
