"""The task registry: what differs between classification, masked LM, NSP and causal LM.

Each task is one module exposing the same small set of names (the `Task` protocol below); the
runner looks the configured task up here and never tests task names itself. Adding a task means
adding one module and one line to `TASKS`.

Task modules import torch only inside functions, so `ptft validate` stays torch-free.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from ptft_cli.config import Config
from ptft_cli.errors import ConfigError

if TYPE_CHECKING:
    from ptft_cli.checkpoint import RunDir
    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData
    from ptft_cli.models import Head


@dataclass
class Inputs:
    """What a task read and checked before anything is written (pure Python)."""

    data: Any  # the task's own: labelled examples, corpus files and texts, prompts, ...
    summary: list[tuple[str, str]]  # rows for `validate` and the run header
    files: list[Path] = field(default_factory=list)  # data files a resumed run must find unchanged
    texts: Callable[[], Iterator[str]] | None = None  # training text, to train a tokenizer on
    split: dict[str, Any] | None = None  # validation rows held out of the training data (split.json)


@dataclass
class Loaded:
    """A trained model ready for evaluate / predict."""

    model: Any
    tokenizer: Any
    hw: Hardware
    ref: str  # where it was loaded from


class Task(Protocol):
    """The names every task module defines."""

    NAME: str  # the `task:` value
    TITLE: str  # for the run header: "masked LM", ...
    COMMANDS: tuple[str, ...]  # which of `pretrain` / `finetune` train it
    METRICS: tuple[str, ...]  # validation metrics `training.best_metric` may name
    PREDICTION_FORMATS: tuple[str, ...]  # file suffixes `predict` writes

    def check_config(self, cfg: Config) -> list[ConfigError]:
        """This task's own config rules (the schema checks the rest)."""
        ...

    def read_inputs(self, cfg: Config, command: str) -> Inputs:
        """Read and check the training data; every data error surfaces here, before anything is written."""
        ...

    def head(self, cfg: Config, inputs: Inputs | None) -> Head:
        """The head the model needs (inputs None: a trained model loaded for evaluate / predict)."""
        ...

    def training_data(self, cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
        """Batch order, collation, loss and in-training evaluation."""
        ...

    def evaluation_inputs(self, cfg: Config, run: RunDir, model_ref: str) -> Inputs:
        """The data `ptft evaluate` scores (pure Python)."""
        ...

    def evaluate(self, cfg: Config, inputs: Inputs, loaded: Loaded, progress: Callable[[int], None]) -> dict:
        """Metrics of the loaded model on those inputs."""
        ...

    def prediction_inputs(self, cfg: Config) -> Inputs:
        """The texts or prompts `ptft predict` reads (pure Python)."""
        ...

    def predict(
        self,
        cfg: Config,
        inputs: Inputs,
        loaded: Loaded,
        progress: Callable[[int], None],
        stream: Callable[[str], None] | None = None,
    ) -> list[dict[str, Any]]:
        """One plain row per input, in input order. A task that generates text may write what
        `shown` would show through `stream` while it is produced (one input only); others ignore it."""
        ...

    def shown(self, row: dict[str, Any]) -> str:
        """One prediction as the terminal shows it (for `--prompt`)."""
        ...


def _registry() -> dict[str, ModuleType]:
    from ptft_cli.tasks import classification, clm, mlm, nsp, sft

    return {m.NAME: m for m in (classification, mlm, nsp, clm, sft)}


def get(cfg: Config, command: str | None = None) -> Task:
    """The configured task, checked: it exists, `command` trains it, and its config rules hold."""
    tasks = _registry()
    task = tasks.get(cfg.task)
    if task is None:
        close = difflib.get_close_matches(cfg.task, list(tasks), n=1)
        raise ConfigError(
            f"{cfg.task!r} is not a task" + (f" (did you mean {close[0]!r}?)" if close else ""),
            where=cfg.where("task"),
            key="task",
            hint=f"allowed: {', '.join(tasks)}",
        )
    if command is not None and command not in task.COMMANDS:
        takes = [name for name, t in tasks.items() if command in t.COMMANDS]
        raise ConfigError(
            f"task {cfg.task!r} is not something `ptft {command}` does",
            where=cfg.where("task"),
            key="task",
            hint=f"`ptft {command}` takes task: {' | '.join(takes)}",
        )
    problems = task.check_config(cfg)
    best = cfg.training.best_metric
    if best is not None and best not in task.METRICS:
        problems.append(
            ConfigError(
                f"{best!r} is not a {task.NAME} metric",
                where=cfg.where("training.best_metric"),
                key="training.best_metric",
                hint=f"allowed: {', '.join(task.METRICS)}",
            )
        )
    if cfg.evaluate.group_by is not None and not hasattr(task, "group_report"):
        problems.append(
            ConfigError(
                f"task {task.NAME} has no per-group metrics",
                where=cfg.where("evaluate.group_by"),
                key="evaluate.group_by",
                hint="evaluate.group_by is for classification; remove it",
            )
        )
    if problems:
        raise ConfigError.many(problems)
    return task  # type: ignore[return-value]


def explainable(cfg: Config) -> Task:
    """The configured task, if `ptft explain` can explain it (it defines `explanation_inputs`)."""
    task = get(cfg)
    if not hasattr(task, "explanation_inputs"):
        takes = [name for name, t in _registry().items() if hasattr(t, "explanation_inputs")]
        raise ConfigError(
            f"`ptft explain` explains classifiers, not task {cfg.task!r}",
            where=cfg.where("task"),
            key="task",
            hint=f"`ptft explain` takes task: {' | '.join(takes)}",
        )
    return task
