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


def fit(
    cfg: Config,
    *,
    command: str,
    model: Any,
    tokenizer: Any,
    hw: Any,
    hooks: Any,
    n_batches: int | None,
    rows: list[tuple[str, Any]],
    batch_note: str,
    overwrite: bool,
    started: float,
) -> dict[str, Any]:
    """The shared second half of every training recipe: optimizer and schedule, the run header,
    the run directory (its first write), the loop, and the results.

    `rows` are the recipe's own header rows, task and model first: the parameter count goes
    after those two, the device, batch, schedule and output rows after the rest.
    """
    import torch

    from ptft_cli import loop, models, optim

    t = cfg.training
    plan = loop.Plan.make(n_batches, t)
    optimizer = optim.adamw(model, t, hw.device)
    scheduler = optim.scheduler(optimizer, t, plan.total_steps)
    scaler = torch.amp.GradScaler("cuda") if hw.needs_grad_scaler else None
    total, trainable = models.parameter_counts(model)
    per_epoch = f"{plan.steps_per_epoch}/epoch" if plan.steps_per_epoch else "streaming"
    floor = f" to {t.min_learning_rate:g}" if t.min_learning_rate else ""
    accumulated = t.batch_size * t.gradient_accumulation_steps
    console.key_values(
        f"ptft {command} · {cfg.source.name if cfg.source else ''}",
        [
            *rows[:2],
            ("parameters", f"{console.count(total)} total, {console.count(trainable)} trainable"),
            *rows[2:],
            ("device", f"{hw.device} · {hw.precision} ({hw.why})"),
            (
                "batch",
                f"{t.batch_size} × {t.gradient_accumulation_steps} accumulation = {accumulated}{batch_note}",
            ),
            (
                "schedule",
                f"{plan.total_steps} steps ({per_epoch}), lr {t.learning_rate:g} {t.lr_scheduler}{floor}, "
                f"warmup {optim.warmup_steps(t, plan.total_steps)}",
            ),
            ("output", cfg.output_dir),
        ],
    )
    run = RunDir(cfg.output_dir)
    log = start_run(cfg, run, hw, overwrite=overwrite)
    trainer = loop.Trainer(model, tokenizer, optimizer, scheduler, hw, t, hooks, plan, run, log, scaler)
    train_started = time.perf_counter()
    state = trainer.train(loop.LoopState(best_metric=t.best_metric))
    return finish_run(cfg, run, log, trainer, state, started=started, train_started=train_started)


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
