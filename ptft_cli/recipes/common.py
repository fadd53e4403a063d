"""Steps every recipe shares: the task check, finding a trained model, starting and finishing a run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptft_cli import console
from ptft_cli.checkpoint import RunDir, atomic_write_json, atomic_write_text
from ptft_cli.config import Config, dump
from ptft_cli.errors import ConfigError, RunDirError


def require_task(cfg: Config, command: str, allowed: Sequence[str]) -> None:
    if cfg.task not in allowed:
        raise ConfigError(
            f"task {cfg.task!r} is not something `ptft {command}` does",
            where=cfg.where("task"),
            key="task",
            hint=f"`ptft {command}` takes task: {' | '.join(allowed)}",
        )


def trained_model_ref(cfg: Config, explicit: str | None, key: str) -> str:
    """The model `evaluate`/`predict` use: the one named in the config, else `<output_dir>/model`."""
    from ptft_cli import models

    if explicit:
        return models.check_ref(explicit, key, cfg.where(key))
    model_dir = RunDir(cfg.output_dir).model_dir
    if not (model_dir / "config.json").is_file():
        command = "finetune" if cfg.task == "classification" else "pretrain"
        raise RunDirError(
            f"no trained model at {model_dir}",
            where=cfg.where("output_dir"),
            key="output_dir",
            hint=f"run `ptft {command} --config {cfg.source}` first, or set {key} to a model directory",
        )
    return str(model_dir)


def check_output_dir(cfg: Config, overwrite: bool) -> RunDir:
    run = RunDir(cfg.output_dir)
    run.check_claimable(overwrite=overwrite, where=cfg.where("output_dir"))
    return run


def start_run(cfg: Config, run: RunDir, hw: Any, *, overwrite: bool) -> Any:
    """Claim the directory (the first write of a run) and record the config and environment."""
    from ptft_cli.metrics import MetricsLog, environment

    run.claim(overwrite=overwrite)
    atomic_write_text(run.config_yaml, f"# resolved by ptft from {cfg.source}\n{dump(cfg)}")
    atomic_write_json(
        run.env_json,
        environment(str(hw.device), hw.precision, hw.why, cfg.source.parent if cfg.source else None),
    )
    return MetricsLog(run.metrics_jsonl)


def finish_run(
    cfg: Config, run: RunDir, log: Any, trainer: Any, state: Any, *, started: float, train_started: float
) -> dict[str, Any]:
    """results.json, loss.png and the final table."""
    from ptft_cli.metrics import plot_losses

    t = cfg.training
    train_seconds = time.perf_counter() - train_started - trainer.side_seconds
    results = {
        "train_seconds": round(train_seconds, 2),
        "eval_and_save_seconds": round(trainer.side_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "steps": state.step,
        "examples_seen": state.examples,
        "stopped_early": state.stopped_early,
        "final": state.last_eval,
        "best": {"metric": t.best_metric, "value": state.best_value, "step": state.best_step}
        if t.best_metric
        else None,
        "model_dir": str(run.model_dir),
    }
    atomic_write_json(run.results_json, results)
    plot_losses(log.records, run.loss_png, f"{Path(str(cfg.source)).stem}: loss")
    shown = {k[5:]: v for k, v in state.last_eval.items() if k.startswith("eval_")}
    shown.update({"steps": state.step, "train time (s)": round(train_seconds, 1)})
    if t.best_metric and state.best_value is not None:
        shown[f"best {t.best_metric}"] = f"{state.best_value:.4f} at step {state.best_step}"
    console.metrics_table("results", shown)
    console.info(f"model saved to {run.model_dir}")
    return results
