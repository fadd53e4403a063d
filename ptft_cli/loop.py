"""The one training loop, shared by every task.

A task hands in how to batch, collate, score and evaluate its data (`TrainingData`); the runner
hands in where records, checkpoints and the model go (`Callbacks`) and the state to start from
(`TrainState`, fresh or restored). The loop owns the order of events: micro-batches summed into
optimizer steps, clipping, the schedule, then every N steps logging, evaluation with best-model
tracking and early stopping, and checkpoints. It imports no console, file layout or CLI: on a
process that must stay quiet the runner hands in callables that do nothing.

Read `train` top to bottom.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ptft_cli.config import TrainingConfig
from ptft_cli.data import sampler
from ptft_cli.data.sampler import BatchSource
from ptft_cli.distributed import Replica


@dataclass
class TrainingData:
    """What differs per task: batch order, tensors, loss and evaluation."""

    batches: BatchSource  # batch specs per epoch (index lists, block starts, token blocks), resumable
    collate: Callable[[Any], dict[str, torch.Tensor]]  # batch spec -> tensors on the device
    loss_sum: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]  # summed over scored items
    count: Callable[[dict[str, torch.Tensor]], int]  # scored items (examples or target tokens)
    evaluate: Callable[[Any], dict[str, Any]] | None  # model -> metrics incl. "loss"; None: no validation
    lower_is_better: frozenset[str]  # metric names where smaller is better
    # Language models report tokens/s and achieved FLOP/s as well as samples/s.
    tokens: Callable[[dict[str, torch.Tensor]], int] | None = None
    seq_len: int | None = None  # tokens per block (or the longest row), for the FLOPs estimate
    blocks: bool = True  # every row is a block of seq_len tokens (packed language modelling)
    flops_per_token: float | None = None
    summary: list[tuple[str, str]] = field(default_factory=list)  # header rows: train/validation sizes


@dataclass
class Plan:
    """Step arithmetic and cadences, fixed before step 0."""

    batches_per_epoch: int | None  # global batches = steps; None: a stream of unknown length
    steps_per_epoch: int | None
    total_steps: int
    eval_every: int | None  # in steps; None: at each epoch's end
    save_every: int | None  # in steps; None: at each evaluation
    log_every: int
    accumulation: int  # micro-batches per optimizer step and process
    patience: int | None  # evaluations without a new best before stopping early
    global_batch: int = 1  # examples or blocks per step, over all processes
    peak_flops: float | None = None  # the devices' stated peak FLOP/s together (for MFU), if known

    @classmethod
    def make(cls, batches_per_epoch: int | None, t: TrainingConfig, processes: int = 1) -> Plan:
        eval_every = t.eval_every if isinstance(t.eval_every, int) else None
        save_every = t.save_every if isinstance(t.save_every, int) else None
        cadence = (
            eval_every,
            save_every,
            t.log_every,
            t.gradient_accumulation_steps,
            t.early_stopping_patience,
        )
        size = sampler.global_batch(t, processes)
        if batches_per_epoch is None:  # streaming: the config guarantees max_steps
            assert t.max_steps is not None
            return cls(None, None, t.max_steps, *cadence, size)
        total = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * batches_per_epoch))
        return cls(batches_per_epoch, batches_per_epoch, total, *cadence, size)


@dataclass
class Optimization:
    """What turns gradients into updates."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any = None  # torch.amp.GradScaler for fp16, else None
    max_grad_norm: float | None = None


@dataclass
class Window:
    """Running sums between two training log records (saved in checkpoints: a resumed run's first
    record averages the same steps as the uninterrupted run's)."""

    loss: float = 0.0
    items: int = 0
    examples: int = 0
    tokens: int = 0

    def mean_loss(self) -> float | None:
        return self.loss / self.items if self.items else None


@dataclass
class TrainState:
    """Everything that decides what the loop does next; saved in every checkpoint's state.json."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    stream: dict[str, Any] | None = None  # a stream's position after those batches (streaming; at saves)
    examples: int = 0
    best_metric: str | None = None
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    interrupted: bool = False  # stopped on request (a signal); the last checkpoint is this state
    last_eval: dict[str, Any] = field(default_factory=dict)
    window: Window = field(default_factory=Window)
    global_batch: int | None = None  # examples or blocks per step, over all processes

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; a stream's arrays are left out (the checkpoint stores them apart)."""
        out = asdict(self)
        if self.stream is not None:
            out["stream"] = {k: v for k, v in self.stream.items() if k != "arrays"}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in values.items() if k in known})
        state.window = Window(**values.get("window", {}))
        return state


@dataclass
class Callbacks:
    """Where the loop's results go; the runner decides (console, files, or nowhere)."""

    log: Callable[[dict[str, Any]], None]  # a metrics record (training or evaluation)
    # every step: {step, epoch, lr, loss, samples_per_s, tokens_per_s, ...} of the steps since the last record
    progress: Callable[[dict[str, Any]], None]
    note: Callable[[str], None]  # a line for the user
    save_checkpoint: Callable[[TrainState], None]  # a resumable checkpoint of this state
    save_model: Callable[[], None]  # the current weights become the run's model (best or final)
    stop_requested: Callable[[], bool]  # a signal asked the run to stop after this step


class Diverged(Exception):
    """The loss became NaN or infinite (the runner turns this into a user-facing error)."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss is {loss} at step {step}")
        self.step, self.loss = step, loss


class EmptyEpoch(Exception):
    """An epoch yielded no batch at all (e.g. a stream shorter than one block)."""


@dataclass
class Clock:
    """Wall time of this session, so throughput and `train_seconds` measure training alone."""

    window_start: float = field(default_factory=time.perf_counter)
    side_seconds: float = 0.0  # evaluating and saving

    def side(self, started: float) -> None:
        self.side_seconds += time.perf_counter() - started
        self.window_start += time.perf_counter() - started


def train(
    model: Replica, data: TrainingData, opt: Optimization, plan: Plan, state: TrainState, cb: Callbacks
) -> tuple[TrainState, Clock]:
    """Train from `state` until `plan.total_steps`, early stopping or a stop request.

    Every process of a distributed run runs this loop in step with the others: `model.world`
    splits each step's batch and sums what must be global (items, losses, stop requests)."""
    clock = Clock()
    model.module.train()
    while state.step < plan.total_steps and not state.stopped_early:
        fresh_epoch = state.batch_in_epoch == 0 and state.stream is None
        batches = data.batches.iterate(state.epoch, state.batch_in_epoch, state.stream)
        epoch_over = False
        while not epoch_over and state.step < plan.total_steps:
            # one optimizer step = one global batch, of which this process takes its micro-batches
            step_batch = next(batches, None)
            if step_batch is None and fresh_epoch:
                raise EmptyEpoch(state.epoch)  # else every later epoch is empty too: a busy loop
            fresh_epoch = False
            stepped, stop = step_batch is not None, False
            if step_batch is None:
                epoch_over = True  # a stream ran dry at a step boundary
            else:
                w = model.world
                parts = sampler.micro_batches(step_batch, w.rank, w.size, plan.accumulation)
                micro = [(data.collate(spec), real) for spec, real in parts]
                grad_norm = _step(model, micro, opt, data, state)
                # a signal to any process stops all of them after the same step
                stop = model.world.sum([float(cb.stop_requested())])[0] > 0
                state.batch_in_epoch += 1
                if plan.batches_per_epoch is not None:
                    epoch_over = state.batch_in_epoch >= plan.batches_per_epoch
                else:
                    epoch_over = len(step_batch) < plan.global_batch  # a stream's short last batch
            if epoch_over:
                state.epoch += 1
                state.batch_in_epoch, state.stream = 0, None

            # every step: progress (loss, lr and throughput of the steps since the last record);
            # every log_every steps: that record is written, and the window starts again
            if stepped:
                record = {
                    "step": state.step,
                    "epoch": _epoch(state, plan),
                    "lr": opt.scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    **_rates(state.window, clock, data.flops_per_token, plan.peak_flops),
                }
                if state.step % plan.log_every == 0 or state.step == plan.total_steps:
                    cb.log(record)
                    state.window = Window()
                    clock.window_start = time.perf_counter()
                cb.progress(record)

            # every eval_every steps (or at each epoch's end): evaluate, keep the best model
            finished = state.step >= plan.total_steps
            evaluate = (plan.eval_every is None and epoch_over) or (
                stepped and plan.eval_every is not None and state.step % plan.eval_every == 0
            )
            if finished and state.last_eval.get("step") != state.step:
                evaluate = True  # the run ends between evaluations
            if evaluate:
                started = time.perf_counter()
                _evaluate(model.module, data, state, plan, cb)
                clock.side(started)

            # every save_every steps (or at each evaluation), at the end, and when asked to stop
            save = (
                (plan.save_every is None and evaluate)
                or (stepped and plan.save_every is not None and state.step % plan.save_every == 0)
                or finished
                or state.stopped_early
                or stop
            )
            if save:
                started = time.perf_counter()
                # a stream's position is read only here: it copies the shuffle buffer
                state.stream = data.batches.position() if state.batch_in_epoch else None
                cb.save_checkpoint(state)
                clock.side(started)
            if stop:
                state.interrupted = True
                return state, clock
            if state.stopped_early:
                break

    if state.best_metric is None or data.evaluate is None:
        started = time.perf_counter()
        cb.save_model()  # the final model
        clock.side(started)
    return state, clock


def _step(
    model: Replica,
    micro: list[tuple[dict[str, torch.Tensor], bool]],
    opt: Optimization,
    data: TrainingData,
    state: TrainState,
) -> float | None:
    """Forward and backward over this process's micro-batches (`real` False: a filler weighted 0),
    then clip, update and advance the schedule. Returns the gradient norm."""
    world = model.world
    # The loss is normalised by the items (examples or target tokens) of the whole global batch, so
    # any split over processes and accumulation equals one big batch. DDP and FSDP average
    # gradients over processes, hence the factor `world.size`.
    (items,) = world.sum([sum(data.count(b) for b, real in micro if real)])
    step_loss = 0.0  # this process's share of the step's mean loss
    for i, (batch, real) in enumerate(micro):
        with model.sync_gradients(i == len(micro) - 1):
            loss = data.loss_sum(model.forward, batch) * ((world.size if real else 0.0) / items)
            (opt.scaler.scale(loss) if opt.scaler else loss).backward()
        step_loss += loss.item() / world.size
    real_micro = [b for b, real in micro if real]
    examples = sum(b["input_ids"].shape[0] for b in real_micro)
    tokens = sum(data.tokens(b) for b in real_micro) if data.tokens else 0
    total = world.sum([step_loss, examples, tokens])
    mean_loss = total[0]
    if not math.isfinite(mean_loss):
        raise Diverged(state.step + 1, mean_loss)  # every process sees the same sum: all stop here
    params = [p for p in model.module.parameters() if p.requires_grad]
    if opt.scaler:
        opt.scaler.unscale_(opt.optimizer)
    norm = None
    if opt.max_grad_norm is not None:
        norm_t = torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
        norm = (norm_t.full_tensor() if hasattr(norm_t, "full_tensor") else norm_t).item()  # FSDP: a DTensor
    if opt.scaler:
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.examples += int(total[1])
    state.window.loss += mean_loss * items
    state.window.items += int(items)
    state.window.examples += int(total[1])
    state.window.tokens += int(total[2])
    return norm


def _evaluate(model: Any, data: TrainingData, state: TrainState, plan: Plan, cb: Callbacks) -> None:
    """Validation metrics; a new best `best_metric` saves the model; patience runs out: stop early."""
    record: dict[str, Any] = {"step": state.step, "epoch": _epoch(state, plan)}
    if data.evaluate is None:
        state.last_eval = record
        return
    result = data.evaluate(model)
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    record.update({f"eval_{k}": v for k, v in scalars.items()})
    cb.log(record)
    state.last_eval = record
    cb.note(f"step {state.step}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in scalars.items()))
    if state.best_metric is None:
        return
    value = float(scalars[state.best_metric])
    lower = state.best_metric in data.lower_is_better
    if state.best_value is None or (value < state.best_value if lower else value > state.best_value):
        state.best_value, state.best_step, state.evals_without_improvement = value, state.step, 0
        cb.save_model()
        cb.note(f"  new best {state.best_metric} {_fmt(value)}: saved the model")
        return
    state.evals_without_improvement += 1
    if plan.patience is not None and state.evals_without_improvement >= plan.patience:
        state.stopped_early = True
        cb.note(f"  no better {state.best_metric} in {plan.patience} evaluations: stopping early")


def _epoch(state: TrainState, plan: Plan) -> float:
    """Epochs done, fractional where the epoch's length is known (the same in every record)."""
    if not plan.batches_per_epoch:
        return state.epoch
    return round(state.epoch + state.batch_in_epoch / plan.batches_per_epoch, 4)


def _rates(
    window: Window, clock: Clock, flops_per_token: float | None, peak_flops: float | None
) -> dict[str, float | None]:
    elapsed = time.perf_counter() - clock.window_start
    out: dict[str, float | None] = {
        "loss": window.mean_loss(),
        "samples_per_s": window.examples / elapsed if elapsed > 0 else None,
    }
    if window.tokens:
        out["tokens_per_s"] = window.tokens / elapsed if elapsed > 0 else None
        if flops_per_token and out["tokens_per_s"]:
            out["flops_per_s"] = out["tokens_per_s"] * flops_per_token
            if peak_flops:  # model FLOPs utilisation: of the stated peak of all devices together
                out["mfu"] = out["flops_per_s"] / peak_flops
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)
