"""The Python API: ptft's commands as functions, for notebooks and scripts. The CLI is a thin layer on
it (`cli.py` parses options, then calls `load_config` and `run` like the functions below).

    import ptft_cli as ptft
    result = ptft.finetune("configs/demo/sentiment.yaml", overrides={"training.epochs": 1})
    result.run_dir, result.results["final"]["eval_accuracy"]

A config is a YAML file or a plain dict, checked by the same schema with the same messages (a dict
is named `<dict>` where a file would be); relative paths in a dict resolve against the working
directory. `overrides` is a dict of dotted keys (values taken as they are) or the CLI's
`key=value` strings (values parsed as YAML, as `--set`). A user error raises a `PtftError` listing
every problem, with its hints as the traceback's notes; a run stopped by Ctrl-C raises
`signals.Interrupted` after saving a checkpoint.

Nothing heavy is imported here: torch and transformers load when a command runs.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ptft_cli.errors import ConfigError

if TYPE_CHECKING:
    from ptft_cli.config import Config
    from ptft_cli.runner import RunOptions

ConfigSource = Union[str, os.PathLike, Mapping[str, Any], "Config"]
Overrides = Mapping[str, Any] | Sequence[str] | None

TRAINING = ("pretrain", "finetune")


@dataclass
class Result:
    """What a command produced."""

    command: str  # pretrain | finetune | evaluate | predict | explain | compress | validate
    run_dir: Path  # the run directory (`output_dir`)
    # pretrain/finetune: results.json's content; evaluate: metrics.json's; predict: {"rows": [...]}
    # (the predictions as written); explain: {"rows": [...]} (explanations.jsonl); validate: what it
    # checked (task, model, data, batch, ...)
    results: dict[str, Any] = field(repr=False)  # thousands of rows must not flood a notebook
    config: Config = field(repr=False)  # the resolved config the command ran with
    output: Path | None = None  # the file written: results.json, metrics.json or the predictions


def load_config(config: ConfigSource, overrides: Overrides = None, values: dict | None = None) -> Config:
    """A checked `Config` from a YAML path, a dict, or a `Config` (returned as it is, without overrides).

    `values` maps a key to (the option that set it, a typed value), as the CLI's `--input PATH`."""
    from ptft_cli import config as config_mod
    from ptft_cli.config import Config

    strings, typed = _split_overrides(overrides)
    typed = {**typed, **(values or {})}
    if isinstance(config, Config):
        if strings or typed:
            raise ConfigError(
                "overrides apply to a config file or dict, not to an already loaded Config",
                where=config.name,
                hint="pass the path or dict with overrides=..., or change the Config's fields",
            )
        return config
    if isinstance(config, Mapping):
        return config_mod.load_dict(dict(config), strings, typed)
    if isinstance(config, (str, os.PathLike)):
        return config_mod.load(config, strings, typed)
    raise ConfigError(
        f"a config is a YAML path or a dict, got {type(config).__name__}",
        where="config",
        hint="e.g. ptft.finetune('configs/demo/sentiment.yaml') or ptft.finetune({...})",
    )


def _split_overrides(overrides: Overrides) -> tuple[list[str], dict[str, tuple[str, Any]]]:
    """`key=value` strings (YAML-parsed, as `--set`) and typed {key: value} (taken as they are)."""
    if overrides is None:
        return [], {}
    if isinstance(overrides, Mapping):
        bad = [k for k in overrides if not isinstance(k, str) or not k.strip()]
        if bad:
            raise ConfigError(
                f"override keys are dotted config keys, got {bad[0]!r}",
                where="overrides",
                hint="e.g. overrides={'training.epochs': 1}",
            )
        return [], {k.strip(): ("overrides", v) for k, v in overrides.items()}
    if isinstance(overrides, str):  # one string is one override, not a sequence of characters
        return [overrides], {}
    items = list(overrides)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(
            "overrides are a dict of dotted keys or a list of `key=value` strings",
            where="overrides",
            hint="e.g. overrides={'training.epochs': 1} or ['training.epochs=1']",
        )
    return items, {}


def resume_value(resume: str | os.PathLike | None) -> str | None:
    """`auto` stays a word; anything else is a checkpoint path, taken relative to the working directory."""
    if resume is None or resume == "auto":
        return resume
    return os.path.abspath(Path(resume).expanduser())


def _train(command: str, config: ConfigSource, overrides: Overrides, resume: Any, overwrite: bool) -> Result:
    from ptft_cli.runner import RunOptions

    started = time.perf_counter()
    values = {} if resume is None else {"resume": ("resume=", resume_value(resume))}
    cfg = load_config(config, overrides, values)
    again = f'ptft.{command}(<the same config>, resume="auto")'
    return run(command, cfg, RunOptions(overwrite=overwrite, resume_command=again, started=started))


def pretrain(
    config: ConfigSource, overrides: Overrides = None, *, resume: str | None = None, overwrite: bool = False
) -> Result:
    """`ptft pretrain`: masked-LM or causal-LM pretraining. `resume` is `auto` or a checkpoint
    folder; `overwrite` replaces an earlier run in output_dir (never a directory that is not a run)."""
    return _train("pretrain", config, overrides, resume, overwrite)


def finetune(
    config: ConfigSource, overrides: Overrides = None, *, resume: str | None = None, overwrite: bool = False
) -> Result:
    """`ptft finetune`: fine-tune a pretrained model (classification, sft, causal LM); `results`
    holds results.json (final and best metrics, steps, timings), `run_dir` the run."""
    return _train("finetune", config, overrides, resume, overwrite)


def evaluate(config: ConfigSource, overrides: Overrides = None) -> Result:
    """`ptft evaluate`: metrics of the trained model; `results` holds metrics.json."""
    return run("evaluate", load_config(config, overrides))


def predict(
    config: ConfigSource,
    overrides: Overrides = None,
    *,
    input: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    prompt: str | None = None,
) -> Result:
    """`ptft predict`: labels and probabilities (or generations, fill-mask) for `input` or one
    `prompt`; `results["rows"]` holds the predictions as written to `output`."""
    values = {
        "predict.input": ("input=", _absolute(input)),
        "predict.output": ("output=", _absolute(output)),
        "predict.prompt": ("prompt=", prompt),
    }
    cfg = load_config(config, overrides, {k: v for k, v in values.items() if v[1] is not None})
    return run("predict", cfg)


def explain(
    config: ConfigSource,
    overrides: Overrides = None,
    *,
    input: str | os.PathLike | None = None,
    text: str | None = None,
    output: str | os.PathLike | None = None,
) -> Result:
    """`ptft explain`: per-token attributions of a classifier's predictions for `input` or one
    `text`; `results["rows"]` holds the records of the .jsonl written to `output` (the .html beside it)."""
    values = {
        "explain.input": ("input=", _absolute(input)),
        "explain.text": ("text=", text),
        "explain.output": ("output=", _absolute(output)),
    }
    cfg = load_config(config, overrides, {k: v for k, v in values.items() if v[1] is not None})
    return run("explain", cfg)


def compress(config: ConfigSource, overrides: Overrides = None) -> Result:
    """`ptft compress`: a quantized, factorised or pruned copy of the trained model in
    compress.output_dir, and the trade-off table; `results["rows"]` holds compare.json's rows."""
    return run("compress", load_config(config, overrides))


def validate(
    config: ConfigSource, overrides: Overrides = None, *, resume: str | None = None, overwrite: bool = False
) -> Result:
    """`ptft validate`: check the config and its data (schema, paths, columns, labels) without
    training or importing torch; a problem raises `PtftError` (where `ptft validate` exits 2).
    `results` holds what was checked (task, model, data, batch, output_dir)."""
    from ptft_cli.runner import RunOptions

    values = {} if resume is None else {"resume": ("resume=", resume_value(resume))}
    return run("validate", load_config(config, overrides, values), RunOptions(overwrite=overwrite))


def env() -> dict[str, Any]:
    """`ptft env`: versions, optional extras, the device and precision `auto` picks, threads, GPUs."""
    from ptft_cli import metrics

    return metrics.machine()


def _absolute(path: str | os.PathLike | None) -> str | None:
    return os.path.abspath(Path(path).expanduser()) if path is not None else None


def needs_launch(cfg: Config) -> bool:
    """True when the config asks for several processes and this is not one of them: the CLI then
    starts them through torchrun; the API, which runs in the caller's process, refuses."""
    from ptft_cli import distributed

    d = cfg.distributed
    return not distributed.launched() and ((d.nproc_per_node or 1) > 1 or d.nnodes > 1)


def run(command: str, cfg: Config, opts: RunOptions | None = None) -> Result:
    """Run `command` on a loaded config: what every function above and every CLI command ends in."""
    from ptft_cli import runner
    from ptft_cli.checkpoint import RunDir

    run_dir = RunDir(cfg.output_dir)
    if command in TRAINING:
        if needs_launch(cfg):
            raise ConfigError(
                "several processes are launched by the command line, not from Python",
                where=cfg.where("distributed.nproc_per_node"),
                key="distributed.nproc_per_node",
                hint=f"run `ptft {command} --config ... --nproc N`, or call this under torchrun",
            )
        results = getattr(runner, command)(cfg, opts)
        return Result(command, run_dir.path, results, cfg, run_dir.results_json)
    if command == "evaluate":
        metrics = runner.evaluate(cfg)
        out = Path(cfg.evaluate.output_dir or run_dir.eval_dir) / "metrics.json"
        return Result(command, run_dir.path, metrics, cfg, out)
    if command == "predict":
        out = runner.predict(cfg)
        return Result(command, run_dir.path, {"rows": _read_rows(out)}, cfg, out)
    if command == "explain":
        out = runner.explain(cfg)
        return Result(command, run_dir.path, {"rows": _read_rows(out)}, cfg, out)
    if command == "compress":
        done = runner.compress(cfg)
        out = Path(done["model"])
        return Result(command, run_dir.path, {"rows": done["compare"]}, cfg, out.parent / "compare.json")
    if command == "validate":
        return Result(command, run_dir.path, runner.validate(cfg, opts), cfg)
    raise ValueError(f"unknown command {command!r}")  # a bug: the CLI and the functions above name them


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The predictions as written (.jsonl or .csv)."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            return list(csv.DictReader(f))
        return [json.loads(line) for line in f if line.strip()]
