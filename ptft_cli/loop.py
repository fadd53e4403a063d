"""The one training loop, shared by every task.

A task hands in how to batch, collate and score its data (`TaskHooks`); the loop owns the order of
events: micro-batches summed into optimizer steps, clipping, the schedule, logging, evaluation,
best-model tracking, early stopping and checkpoints. Read `train` top to bottom.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ptft_cli import checkpoint, console
from ptft_cli.config import TrainingConfig
from ptft_cli.errors import PtftError
from ptft_cli.hardware import Hardware
from ptft_cli.metrics import MetricsLog


@dataclass
class TaskHooks:
    """What differs per task: batch order, tensors, loss and evaluation."""

    epoch_batches: Callable[[int], Iterable[Any]]  # epoch -> batch specs (deterministic; may be a stream)
    collate: Callable[[Any], dict[str, torch.Tensor]]  # batch spec -> tensors on the device
    loss_sum: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]  # summed over scored items
    count: Callable[[dict[str, torch.Tensor]], int]  # scored items (examples or target tokens)
    evaluate: Callable[[Any], dict[str, Any]] | None  # model -> metrics incl. "loss"; None: no validation
    lower_is_better: Callable[[str], bool]
    # Language models report tokens/s and achieved FLOP/s as well as samples/s.
    tokens: Callable[[dict[str, torch.Tensor]], int] | None = None
    flops_per_token: float | None = None


@dataclass
class Plan:
    """Step arithmetic, fixed before step 0."""

    batches_per_epoch: int | None  # None: a stream of unknown length
    steps_per_epoch: int | None
    total_steps: int
    eval_every: int | None  # in steps; None: at each epoch's end

    @classmethod
    def make(cls, n_batches: int | None, t: TrainingConfig) -> Plan:
        eval_every = t.eval_every if isinstance(t.eval_every, int) else None
        if n_batches is None:  # streaming: the config guarantees max_steps
            assert t.max_steps is not None
            return cls(None, None, t.max_steps, eval_every)
        steps_per_epoch = math.ceil(n_batches / t.gradient_accumulation_steps)
        total = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
        return cls(n_batches, steps_per_epoch, total, eval_every)


@dataclass
class LoopState:
    """Everything needed to continue a run, saved in every checkpoint's state.json."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    examples: int = 0
    best_metric: str | None = None
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    last_eval: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    """Running sums between two log lines."""

    loss: float = 0.0
    items: int = 0
    examples: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, items: int, examples: int, tokens: int) -> None:
        self.items += items
        self.examples += examples
        self.tokens += tokens

    def restart(self) -> None:
        self.start = time.perf_counter()

    def mean_loss(self) -> float | None:
        return self.loss / self.items if self.items else None

    def rates(self, flops_per_token: float | None) -> dict[str, float | None]:
        elapsed = time.perf_counter() - self.start
        out: dict[str, float | None] = {
            "loss": self.mean_loss(),
            "samples_per_s": self.examples / elapsed if elapsed > 0 else None,
        }
        if self.tokens:
            out["tokens_per_s"] = self.tokens / elapsed if elapsed > 0 else None
            if flops_per_token and out["tokens_per_s"]:
                out["flops_per_s"] = out["tokens_per_s"] * flops_per_token
        return out

    @staticmethod
    def shown(record: dict[str, Any]) -> str:
        if record.get("tokens_per_s"):
            text = f"{record['tokens_per_s']:,.0f} tok/s"
            if record.get("flops_per_s"):
                text += f" {record['flops_per_s'] / 1e9:,.1f} GFLOP/s"
            return text
        return f"{record.get('samples_per_s') or 0:.1f} samples/s"


class Diverged(PtftError):
    """The loss became NaN or infinite."""


@dataclass
class Trainer:
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    hw: Hardware
    t: TrainingConfig
    hooks: TaskHooks
    plan: Plan
    run: checkpoint.RunDir
    log: MetricsLog
    scaler: Any = None
    # Wall time spent evaluating and saving, so throughput and `train_seconds` measure training alone.
    side_seconds: float = 0.0

    def train(self, state: LoopState) -> LoopState:
        model, t, plan, hooks = self.model, self.t, self.plan, self.hooks
        model.train()
        window = _Window()
        with console.TrainProgress(plan.total_steps, start=state.step) as bar:
            while state.step < plan.total_steps and not state.stopped_early:
                batches = iter(hooks.epoch_batches(state.epoch))
                for _ in itertools.islice(batches, state.batch_in_epoch):  # resuming mid-epoch
                    pass
                epoch_done = False
                while not epoch_done and state.step < plan.total_steps:
                    # one optimizer step = `gradient_accumulation_steps` micro-batches; the loss is
                    # normalised by the items in the whole step, so accumulation equals one big batch
                    micro = [
                        hooks.collate(b) for b in itertools.islice(batches, t.gradient_accumulation_steps)
                    ]
                    epoch_done = len(micro) < t.gradient_accumulation_steps
                    if not micro:
                        break
                    items = sum(hooks.count(b) for b in micro)
                    for batch in micro:
                        loss = hooks.loss_sum(model, batch) / items
                        if not torch.isfinite(loss):
                            raise Diverged(
                                f"loss is {loss.item()} at step {state.step + 1}",
                                key="training.learning_rate",
                                hint="lower the learning rate, add warmup, or use precision: fp32",
                            )
                        (self.scaler.scale(loss) if self.scaler else loss).backward()
                        window.loss += loss.item() * items
                    grad_norm = self._clip_and_step()
                    state.step += 1
                    state.batch_in_epoch += len(micro)
                    if plan.batches_per_epoch is not None and state.batch_in_epoch >= plan.batches_per_epoch:
                        epoch_done = True
                    n_examples = sum(b["input_ids"].shape[0] for b in micro)
                    state.examples += n_examples
                    window.add(items, n_examples, sum(hooks.tokens(b) for b in micro) if hooks.tokens else 0)

                    # every log_every steps: training loss, learning rate, throughput
                    if state.step % t.log_every == 0 or state.step == plan.total_steps:
                        record = {
                            "step": state.step,
                            "epoch": round(state.epoch + state.batch_in_epoch / plan.batches_per_epoch, 4)
                            if plan.batches_per_epoch
                            else state.epoch,
                            "lr": self.scheduler.get_last_lr()[0],
                            "grad_norm": grad_norm,
                            **window.rates(hooks.flops_per_token),
                        }
                        self.log.write(record)
                        bar.advance(state.step, record["loss"], window.shown(record))
                        window = _Window()
                    else:
                        bar.advance(state.step, window.mean_loss(), "")

                    # every eval_every steps: evaluate, keep the best model, checkpoint
                    if plan.eval_every and state.step % plan.eval_every == 0:
                        self._evaluate_and_checkpoint(state, bar)
                        window.restart()  # evaluation time is not training throughput
                        if state.stopped_early:
                            break

                if epoch_done:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    if plan.eval_every is None:
                        self._evaluate_and_checkpoint(state, bar)
                        window.restart()

            if state.last_eval.get("step") != state.step:  # the run ended between evaluations
                self._evaluate_and_checkpoint(state, bar)
        if state.best_metric is None or hooks.evaluate is None:
            started = time.perf_counter()
            checkpoint.save_pretrained(model, self.tokenizer, self.run.model_dir)  # the final model
            self.side_seconds += time.perf_counter() - started
        return state

    def _clip_and_step(self) -> float | None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.t.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.t.max_grad_norm).item()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _evaluate_and_checkpoint(self, state: LoopState, bar: console.TrainProgress) -> None:
        started = time.perf_counter()
        hooks = self.hooks
        metrics: dict[str, Any] = {"step": state.step, "epoch": state.epoch}
        if hooks.evaluate is not None:
            result = hooks.evaluate(self.model)
            scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
            metrics.update({f"eval_{k}": v for k, v in scalars.items()})
            self.log.write(metrics)
            shown = ", ".join(f"{k} {console.fmt(v)}" for k, v in scalars.items())
            bar.note(f"step {state.step}: {shown}")
            if state.best_metric is not None:
                value = float(scalars[state.best_metric])
                better = state.best_value is None or (
                    value < state.best_value
                    if hooks.lower_is_better(state.best_metric)
                    else value > state.best_value
                )
                if better:
                    state.best_value, state.best_step, state.evals_without_improvement = value, state.step, 0
                    checkpoint.save_pretrained(self.model, self.tokenizer, self.run.model_dir)
                    bar.note(f"  new best {state.best_metric} {console.fmt(value)}: saved model/")
                else:
                    state.evals_without_improvement += 1
                    patience = self.t.early_stopping_patience
                    if patience is not None and state.evals_without_improvement >= patience:
                        state.stopped_early = True
                        bar.note(f"  no better {state.best_metric} in {patience} evaluations: stopping early")
        state.last_eval = metrics
        checkpoint.save_training_state(
            self.run,
            state.step,
            model=self.model,
            tokenizer=self.tokenizer,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            state=asdict(state),
            keep=self.t.keep_checkpoints,
        )
        self.model.train()
        self.side_seconds += time.perf_counter() - started
