"""What each command runs, one function per command; the only module that wires the others.

    pretrain / finetune   train: task → inputs → run directory (new | resumed) → seed → tokenizer
                          → data → models.build → optimizer → restore → loop.train → results
    evaluate              task → evaluation inputs → load the trained model → metrics → eval/
    predict               task → prediction inputs → load the trained model → rows → predictions file
    validate              every check the commands above make before they load a model

The task (`tasks.get`) decides what differs between classification, masked LM, NSP and causal LM;
nothing here tests task names.
"""

from __future__ import annotations

import contextlib
import glob
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptft_cli import checkpoint, console, distill, models, tasks, tracking
from ptft_cli.checkpoint import RunDir
from ptft_cli.config import Config, dump, resume_changes
from ptft_cli.errors import ConfigError, DataError, PtftError, RunDirError
from ptft_cli.metrics import MetricsLog
from ptft_cli.signals import Interrupted


@dataclass
class RunOptions:
    """Command-line choices that are not config keys."""

    overwrite: bool = False  # replace the run in output_dir
    resume_command: str | None = None  # the command line that continues this run (printed on a stop)
    started: float = field(default_factory=time.perf_counter)  # when the command started


def pretrain(cfg: Config, opts: RunOptions | None = None) -> dict[str, Any]:
    return train(cfg, "pretrain", opts or RunOptions())


def finetune(cfg: Config, opts: RunOptions | None = None) -> dict[str, Any]:
    return train(cfg, "finetune", opts or RunOptions())


def train(cfg: Config, command: str, opts: RunOptions) -> dict[str, Any]:
    """Train the configured task, from scratch or from a checkpoint; returns results.json's content.
    Under torchrun every process runs this; rank 0 alone prints and writes."""
    from ptft_cli import distributed

    world = distributed.join(cfg.device, cfg.distributed.timeout_minutes, cfg.distributed.strategy)
    console.quiet(not world.main)
    try:
        results = _train(cfg, command, opts, world)
        # every process leaves together: none tears the group down while rank 0 still writes
        world.barrier()
        return results
    finally:
        distributed.leave(world)


def _train(cfg: Config, command: str, opts: RunOptions, world: Any) -> dict[str, Any]:
    from ptft_cli.distributed import agreeing

    # 1. Everything that can be checked without torch, before anything is written. Every process
    #    checks; if any fails, all stop with the same line (`agreeing`).
    with agreeing(world):
        task = tasks.get(cfg, command)
        tracking.check(cfg)
        _, _, inputs = _gather(
            lambda: models.check_refs(cfg, command),
            lambda: distill.check(cfg, task),
            lambda: task.read_inputs(cfg, command),
        )
        run = RunDir(cfg.output_dir)
        saved = resume_point(cfg, run, opts, inputs.files)
    _same_checkpoint(cfg, world, saved)

    import torch

    from ptft_cli import distributed, hardware, loop, optim

    # 2. Seed, device, tokenizer (a resumed run reads its own), data, model.
    with agreeing(world):
        seed_everything(cfg.seed)
        hw = hardware.resolve(cfg.device, cfg.precision, training=True, where=cfg.where("device"))
        hw = hardware.for_process(hw, world, cfg.where("device"))
        models.quiet_transformers()
        head = task.head(cfg, inputs)
        distill.check_labels(cfg, head)
        if saved is not None:
            tokenizer = models.load_tokenizer(str(saved.path), cfg.model, "resume", cfg.where("resume"))
            tokenizer_desc = f"from {saved.path.name}, {len(tokenizer):,} tokens"
        else:
            tokenizer, tokenizer_desc = models.tokenizer(cfg, head, inputs.texts or (lambda: iter(())))
        if head.pads:
            models.ensure_pad_token(tokenizer, None)
    data: Any = None
    for first_on_node in (True, False):  # the token cache is built by one process per node, then read
        with agreeing(world):
            if (world.local_rank == 0) == first_on_node:
                data = task.training_data(cfg, inputs, tokenizer, hw)
    with agreeing(world):
        t = cfg.training
        plan = loop.Plan.make(data.batches.batches_per_epoch, t, world.size)
        if saved is not None:
            _check_global_batch(cfg, saved, plan, world)
        attn = hardware.attn_implementation(
            cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length
        )
        model, model_desc = models.build(cfg, head, tokenizer, attn)
        if saved is not None:
            with checkpoint.reading(saved.path):
                models.load_weights(model, saved.path)
        total, trainable = models.parameter_counts(model)
        if trainable == 0:
            raise ConfigError(
                "nothing to train: every parameter of the model is frozen",
                where=cfg.where("model.freeze_backbone"),
                key="model.freeze_backbone",
                hint="this model has no separate head; train it unfrozen, or with train_top_k_layers",
            )
        model = models.to_device(model, hw.device)
        teacher = distill.load(cfg, head, tokenizer, model, hw)
        if teacher is not None:
            distill.wrap(data, teacher)  # the task's loss gains the teacher's term
        if t.gradient_checkpointing:
            models.checkpoint_activations(model, cfg.where("training.gradient_checkpointing"))
        if data.tokens is not None and data.seq_len:
            data.flops_per_token = models.flops_per_token(model, data.seq_len)
            plan.peak_flops = hardware.peak_flops(hw) * world.size if hardware.peak_flops(hw) else None

    # 3. Several processes: DDP or FSDP2 (collectives: every process gets here); compile; optimizer
    #    and schedule. A resumed run restores them and its loop state.
    replica = distributed.wrap(model, world, cfg.distributed.strategy, hw.precision)
    if t.compile and not (t.compile_scope == "blocks" and models.compile_blocks(model)):
        replica.forward = torch.compile(replica.forward)
    optimizer = optim.adamw(model, t, hw.device)
    scaler = torch.amp.GradScaler("cuda") if hw.needs_grad_scaler else None
    opt = loop.Optimization(
        optimizer, optim.scheduler(optimizer, t, plan.total_steps), scaler, t.max_grad_norm
    )
    if t.l1:
        opt.l1, opt.l1_params = t.l1, optim.decay_split(model)[0]
    state = loop.TrainState(best_metric=t.best_metric, global_batch=plan.global_batch)
    if saved is not None:
        with agreeing(world), checkpoint.reading(saved.path):
            checkpoint.restore_training(saved, opt, model)
            state = loop.TrainState.from_dict(saved.state)
        state.best_metric, state.interrupted, state.global_batch = t.best_metric, False, plan.global_batch
        if state.step >= plan.total_steps or state.stopped_early:
            return _already_done(cfg, run, state, plan)

    # 4. The header, then the first writes (rank 0): claim the directory, record config and environment.
    flops = f"; {data.flops_per_token / 1e6:,.1f} MFLOP per token" if data.flops_per_token else ""
    rows = [
        *data.summary[:1],
        ("model", f"{model_desc}, attention {attn}{flops}"),
        ("parameters", f"{console.count(total)} total, {console.count(trainable)} trainable"),
        ("tokenizer", tokenizer_desc),
        *data.summary[1:],
    ]
    if saved is not None:
        rows.append(("resume", f"from {saved.path} (step {state.step}, epoch {state.epoch})"))
    if cfg.logging.report_to:
        rows.append(("tracking", ", ".join(dict.fromkeys(cfg.logging.report_to))))
    _header(cfg, command, rows, data.seq_len if data.blocks else None, plan, hw)
    claim, history = None, []
    with agreeing(world):
        if world.main:
            claim, history = _claim(cfg, run, opts, saved, hw, inputs)
    config_text = _resolved(cfg)
    snapshot = checkpoint.Snapshot(model, tokenizer, opt, config_text, _sizes(inputs.files))
    log = MetricsLog(run.metrics_jsonl, history) if world.main else None
    session = _Session(
        cfg, run, claim, opts, snapshot, log, replica, {"total": total, "trainable": trainable}
    )
    first_step = state.step
    try:
        if world.main:  # rank 0 alone reports, as it alone writes metrics.jsonl
            session.trackers = _trackers(cfg, run, config_text, state.step)
        if saved is not None:
            with checkpoint.reading(saved.path):
                checkpoint.restore_rng(
                    saved, world.rank
                )  # last: nothing drawn while setting up changes the run
        return _train_and_finish(session, data, plan, state)
    except BaseException:
        if claim is not None:
            claim.failed(reached_first_step=state.step > first_step)
        raise
    finally:
        session.trackers.close()
        if claim is not None:
            claim.release()


def _gather(*checks: Callable[[], Any]) -> list[Any]:
    """Run independent checks (the model, the data, ...) and report every one's user errors
    together: a wrong model path and a missing data file are one error listing both."""
    results, problems = [], []
    for check in checks:
        try:
            results.append(check())
        except PtftError as e:
            results.append(None)
            problems.append(e)
    if len(problems) == 1:
        raise problems[0]
    if problems:  # one kind (all DataError, ...) keeps its type
        kind = type(problems[0]) if len({type(e) for e in problems}) == 1 else PtftError
        raise kind.many([p for e in problems for p in e.problems])
    return results


def _trackers(cfg: Config, run: RunDir, config_text: str, step: int) -> tracking.Trackers:
    """The run's experiment trackers (`logging.report_to`), opened after its directory is claimed."""
    if not cfg.logging.report_to:
        return tracking.Trackers()
    info = tracking.RunInfo(
        directory=run.path,
        name=cfg.logging.run_name or run.path.name,
        project=cfg.logging.project or tracking.DEFAULT_PROJECT,
        config=cfg.to_dict(),
        config_text=config_text,
        start_step=step,
    )
    return tracking.start(cfg.logging.report_to, info)


def _same_checkpoint(cfg: Config, world: Any, saved: checkpoint.Saved | None) -> None:
    """Every process must continue from the same checkpoint (they differ when nodes do not share the
    output directory)."""
    names = world.gather(str(saved.path) if saved is not None else None)
    if len(set(names)) > 1:
        shown = ", ".join(f"rank {r}: {n or 'none'}" for r, n in enumerate(names))
        raise RunDirError(
            f"the processes found different checkpoints to resume ({shown})",
            where=cfg.where("output_dir"),
            key="output_dir",
            hint="every node must see the same output_dir (a shared filesystem)",
        )


def _check_global_batch(cfg: Config, saved: checkpoint.Saved, plan: Any, world: Any) -> None:
    """A checkpoint continues with any split of the same global batch (batch_size × accumulation ×
    processes), so a 2-process run resumes on 1 process with accumulation 2."""
    before = saved.state.get("global_batch")
    if before is None or before == plan.global_batch:
        return
    t = cfg.training
    raise ConfigError(
        f"cannot resume from {saved.path.name}: its global batch was {before}, now it is {plan.global_batch} "
        f"({t.batch_size} per process × {t.gradient_accumulation_steps} accumulation × {world.size} processes)",
        where=cfg.where("training.batch_size"),
        key="training.batch_size",
        hint=f"keep batch_size × gradient_accumulation_steps × processes at {before}",
    )


@dataclass
class _Session:
    """A training run once its directory is claimed: where everything goes (`claim` and `log`
    only on rank 0, the process that writes)."""

    cfg: Config
    run: RunDir
    claim: checkpoint.Claim | None
    opts: RunOptions
    snapshot: checkpoint.Snapshot  # model, tokenizer and optimizer, as checkpoints save them
    log: MetricsLog | None
    replica: Any  # distributed.Replica: the model as this process trains it
    parameters: dict[str, int]  # total and trainable, for results.json
    trackers: tracking.Trackers = field(default_factory=tracking.Trackers)  # logging.report_to (rank 0)
    last_eval: dict[str, Any] = field(default_factory=dict)  # the latest full evaluation (confusion matrix)


def _train_and_finish(s: _Session, data: Any, plan: Any, state: Any) -> dict[str, Any]:
    """5. Train (the loop's records, checkpoints and progress go to the run); 6. the results."""
    from ptft_cli import distributed, loop, lora
    from ptft_cli.signals import StopOnSignal

    t, run, snap, world = s.cfg.training, s.run, s.snapshot, s.replica.world
    startup = time.perf_counter() - s.opts.started

    # Saving is collective (every process hands in its part), rank 0 writes, and a failure there
    # (a full disk) stops every process with the same line.
    def save_checkpoint(state: Any) -> None:
        tensors = distributed.training_tensors(s.replica, snap.opt.optimizer)
        with distributed.agreeing(world):
            if s.claim is not None:
                checkpoint.save_checkpoint(run, state, snap, tensors, keep=t.keep_checkpoints)
                s.claim.saved()

    def save_model() -> None:
        weights, plain = s.replica.full_state(), snap.model
        if lora.is_peft(snap.model):  # model/ is the merged model; adapter/ the adapters alone
            plain, weights = models.merged(snap.model)
        with distributed.agreeing(world):
            if world.main:
                checkpoint.save_pretrained(plain, snap.tokenizer, run.model_dir, weights)
                if plain is not snap.model:
                    checkpoint.save_pretrained(snap.model, None, run.adapter_dir)

    def log(record: dict[str, Any]) -> None:
        if s.log is not None:
            s.log.write(record)
            s.trackers.record(s.log.records[-1])  # as written: NaN and inf are null

    if s.trackers.trackers and data.evaluate is not None:  # keep the last confusion matrix for them
        evaluate = data.evaluate

        def remembered(model: Any) -> dict[str, Any]:
            s.last_eval = evaluate(model)
            return s.last_eval

        data.evaluate = remembered

    every = console.plain_every(plan.total_steps, t.log_every)
    with (
        console.TrainProgress(plan.total_steps, start=state.step, every=every) as bar,
        StopOnSignal(bar.note) as stop,
    ):
        callbacks = loop.Callbacks(
            log=log,
            progress=bar.advance,
            note=bar.note,
            save_checkpoint=save_checkpoint,
            save_model=save_model,
            stop_requested=stop,
        )
        try:
            state, clock = loop.train(s.replica, data, snap.opt, plan, state, callbacks)
        except loop.Diverged as e:
            raise _diverged(s.cfg, run, e) from None
        except loop.EmptyEpoch:
            raise DataError(
                "the training data yields no batch",
                where=s.cfg.where("data.train"),
                key="data.train",
                hint="a streamed corpus needs at least one block of tokenizer.max_length tokens; add text or "
                "lower tokenizer.max_length",
            ) from None
        except KeyboardInterrupt:
            raise _interrupted(run, s.opts, "aborted", 130) from None
    if state.interrupted:
        raise _interrupted(run, s.opts, f"stopped at step {state.step}", stop.exit_code)
    peaks = world.gather(_peak_memory_gb(s.replica.module))
    if not world.main:
        return {}
    results = _finish(s.cfg, run, s.log, state, (clock, startup, s.opts.started, peaks), s.parameters)
    _report_images(s)
    return results


def _report_images(s: _Session) -> None:
    """loss.png and the last evaluation's confusion matrix, to the trackers (the matrix is drawn in a
    temporary folder: the run directory's layout does not change with report_to)."""
    import tempfile

    from ptft_cli.metrics import plot_confusion

    if not s.trackers.trackers:
        return
    s.trackers.image("loss", s.run.loss_png)
    if "confusion_matrix" in s.last_eval and "labels" in s.last_eval:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "confusion_matrix.png"
            plot_confusion(
                s.last_eval["confusion_matrix"], s.last_eval["labels"], path, "validation: confusion"
            )
            s.trackers.image("eval/confusion_matrix", path)


def _peak_memory_gb(model: Any) -> float:
    """The most memory this process held: the GPU's allocator peak, else the process's peak RSS."""
    import resource

    import torch

    device = next(model.parameters()).device
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def resume_point(cfg: Config, run: RunDir, opts: RunOptions, files: list[Path]) -> checkpoint.Saved | None:
    """The checkpoint this run continues from (None: start at step 0), after checking that the
    output directory may be used and that nothing changed that would break the run."""
    where = cfg.where("resume")
    run.check_location(_protected(cfg, files), cfg.where("output_dir"))
    if cfg.resume is None:
        run.check_claimable(overwrite=opts.overwrite, where=cfg.where("output_dir"))
        return None
    if opts.overwrite:
        raise ConfigError(
            "--overwrite replaces the run that --resume continues",
            where=where,
            key="resume",
            hint="pass one of them",
        )
    if cfg.resume == "auto":
        folder = run.latest_checkpoint()
        if folder is None:  # nothing saved yet: start (over) in this directory
            if not run.holds_run():
                run.check_claimable(overwrite=False, where=cfg.where("output_dir"))
            return None
    else:
        folder = Path(cfg.resume)
        if not checkpoint.is_complete(folder):
            raise RunDirError(
                f"{folder} is not a complete ptft checkpoint"
                if folder.exists()
                else f"{folder}: no such checkpoint",
                where=where,
                key="resume",
                hint=f"use a folder from {run.checkpoints_dir}/, or --resume auto",
            )
        if folder.resolve().parent != run.checkpoints_dir.resolve():  # a checkpoint of another run: fork it
            run.check_claimable(overwrite=False, where=cfg.where("output_dir"))
    saved = checkpoint.read_checkpoint(folder)
    with checkpoint.reading(folder):
        changed = resume_changes(saved.config_yaml, cfg)
    if changed:
        shown = ", ".join(f"{k} ({_short(old)} → {_short(new)})" for k, old, new in changed[:6])
        raise ConfigError(
            f"cannot resume from {folder.name}: the config changed: {shown}",
            where=cfg.where(changed[0][0]),
            key=changed[0][0],
            hint="undo those changes, or start a new run (a new output_dir); the keys that may change on resume "
            "are listed in the README",
        )
    for path, size in _sizes(files).items():
        if saved.data_files.get(path, size) != size:
            raise ConfigError(
                f"cannot resume from {folder.name}: {path} changed since the checkpoint "
                f"({saved.data_files[path]:,} → {size:,} bytes)",
                where=cfg.where("data.train"),
                key="data.train",
                hint="restore the file, or start a new run on the new data",
            )
    return saved


def _protected(cfg: Config, files: list[Path]) -> dict[Path, str]:
    """What a run directory must never contain: the config and the data files."""
    protected = {cfg.source: "the config"} if cfg.source is not None else {}
    protected.update({p: "the data file" for p in files})
    return protected


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sizes(files: list[Path]) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in files if p.is_file()}


def _header(
    cfg: Config, command: str, rows: list[tuple[str, str]], seq_len: int | None, plan: Any, hw: Any
) -> None:
    """The run summary before step 0: `rows` (task, model, data), then device, batch, schedule, output."""
    from ptft_cli import optim

    t = cfg.training
    per_epoch = f"{plan.steps_per_epoch}/epoch" if plan.steps_per_epoch else "streaming"
    floor = f" to {t.min_learning_rate:g}" if t.min_learning_rate else ""
    blocks = f" blocks of {seq_len} tokens" if seq_len else ""
    resume = [r for r in rows if r[0] == "resume"]
    rows = [r for r in rows if r[0] != "resume"] + [
        ("device", f"{hw.device} · {hw.precision} ({hw.why}); evaluation {hw.eval_precision}"),
        *_processes(cfg, hw.world),
        *_speed(cfg),
        (
            "batch",
            f"{t.batch_size} per process × {t.gradient_accumulation_steps} accumulation × {hw.world.size} "
            f"process{'es' if hw.world.size > 1 else ''} = {plan.global_batch}{blocks} per step",
        ),
        (
            "schedule",
            f"{plan.total_steps} steps ({per_epoch}), lr {t.learning_rate:g} {t.lr_scheduler}{floor}, "
            f"warmup {optim.warmup_steps(t, plan.total_steps)}",
        ),
        ("output", str(cfg.output_dir)),
        *resume,
    ]
    console.key_values(f"ptft {command} · {cfg.source.name if cfg.source else cfg.name}", rows)


def _speed(cfg: Config) -> list[tuple[str, str]]:
    """The speed options in force (the first steps of a compiled run are slow: they compile)."""
    t, on = cfg.training, []
    if t.compile:
        on.append(f"torch.compile ({'each block' if t.compile_scope == 'blocks' else 'whole model'})")
    if t.gradient_checkpointing:
        on.append("gradient checkpointing")
    return [("speed", ", ".join(on))] if on else []


def _processes(cfg: Config, world: Any) -> list[tuple[str, str]]:
    if world.size == 1:
        return []
    backend = "nccl" if world.device.type == "cuda" else "gloo"
    return [("processes", f"{world.size} ({cfg.distributed.strategy.upper()}, {backend})")]


def _claim(cfg: Config, run: RunDir, opts: RunOptions, saved: Any, hw: Any, inputs: Any) -> tuple[checkpoint.Claim, list[dict[str, Any]]]:  # fmt: skip
    """The run's first writes: the directory (locked), config.yaml, env.json, split.json. Returns the
    claim and the metrics history the run continues (a resumed run's checkpoint history, or none)."""
    from ptft_cli.metrics import environment

    resumed_here = saved is not None and saved.path.resolve().parent == run.checkpoints_dir.resolve()
    # `--resume auto` on a run that never saved a checkpoint starts it over in place (its files are
    # rewritten; nothing else in the directory is touched)
    claim = run.claim(replace=opts.overwrite, where=cfg.where("output_dir"))
    if claim.aside is not None:
        console.info(
            f"replacing the run in {run.path}: the old one waits in {claim.aside} until the first checkpoint"
        )
    run.remove_temporaries()
    checkpoint.atomic_write_text(run.config_yaml, _resolved(cfg))
    env = environment(str(hw.device), hw.precision, hw.why, cfg.source.parent if cfg.source else None)
    checkpoint.atomic_write_json(run.env_json, env)
    if inputs.split is not None and not resumed_here:
        checkpoint.atomic_write_json(run.split_json, inputs.split)
    if saved is None:
        if run.metrics_jsonl.exists():
            run.metrics_jsonl.unlink()
        return claim, []
    with checkpoint.reading(saved.path):
        return claim, checkpoint.restore_metrics(run, saved)


def _resolved(cfg: Config) -> str:
    """config.yaml's text (and each checkpoint's copy)."""
    return f"# resolved by ptft from {cfg.name}\n{dump(cfg)}"


def _diverged(cfg: Config, run: RunDir, e: Any) -> PtftError:
    latest = run.latest_checkpoint()
    last = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
    return PtftError(
        f"the loss became {e.loss} at step {e.step}; {last}",
        where=cfg.where("training.learning_rate"),
        key="training.learning_rate",
        hint="lower the learning rate, add warmup, or use precision: fp32",
    )


def _interrupted(run: RunDir, opts: RunOptions, what: str, code: int) -> Interrupted:
    latest = run.latest_checkpoint()
    if latest is None:
        return Interrupted(f"{what}; no checkpoint was saved yet, so there is nothing to resume", code)
    command = opts.resume_command or f"ptft ... --resume {latest}"
    return Interrupted(f"{what}; checkpoint {latest} is complete. Continue with: {command}", code)


def _already_done(cfg: Config, run: RunDir, state: Any, plan: Any) -> dict[str, Any]:
    why = "stopped early" if state.stopped_early else f"reached {plan.total_steps} steps"
    console.info(
        f"nothing to do: the run in {run.path} {why} at step {state.step}; raise training.max_steps "
        "(or training.epochs) to train further",
        summary=True,
    )
    return json.loads(run.results_json.read_text(encoding="utf-8")) if run.results_json.is_file() else {}


def _finish(
    cfg: Config,
    run: RunDir,
    log: Any,
    state: Any,
    timing: tuple[Any, float, float, list[float]],
    parameters: dict[str, int],
) -> dict[str, Any]:
    """results.json, loss.png and the final table."""
    from ptft_cli.metrics import plot_losses

    clock, startup, started, peaks = timing
    t = cfg.training
    plot_losses(log.records, run.loss_png, f"{cfg.source.stem if cfg.source else cfg.name}: loss")
    session = time.perf_counter() - started
    train_seconds = session - startup - clock.side_seconds
    results = {
        "train_seconds": round(train_seconds, 2),
        "eval_and_save_seconds": round(clock.side_seconds, 2),
        "startup_seconds": round(startup, 2),  # from the command's start to the training loop's
        "total_seconds": round(session, 2),
        "steps": state.step,
        "examples_seen": state.examples,
        "stopped_early": state.stopped_early,
        "final": state.last_eval,
        "best": {"metric": t.best_metric, "value": state.best_value, "step": state.best_step}
        if t.best_metric
        else None,
        "model_dir": str(run.model_dir),
        "peak_memory_gb": peaks,  # per process, in rank order
        "parameters": parameters,
    }
    checkpoint.atomic_write_json(run.results_json, results)
    shown = {k[5:]: v for k, v in state.last_eval.items() if k.startswith("eval_")}
    shown.update({"steps": state.step, "train time": f"{train_seconds:.1f} s"})
    if t.best_metric and state.best_value is not None:
        shown[f"best {t.best_metric}"] = f"{state.best_value:.4f} at step {state.best_step}"
    console.metrics_table("results", shown)
    console.info(f"model saved to {run.model_dir}", summary=True)
    return results


# ---------------------------------------------------------------------------------------------
# evaluate / predict


def trained_model(cfg: Config, explicit: str | None, key: str) -> str:
    """The model `evaluate`/`predict` use: the one named in the config, else `<output_dir>/model`."""
    if explicit:
        ref = models.check_ref(explicit, key, cfg.where(key))
        models.check_files(ref, key, cfg.where(key), tokenizer=not cfg.tokenizer.name_or_path)
        models.fit_max_length(cfg, ref)
        return ref
    run = RunDir(cfg.output_dir)
    if not (run.model_dir / "config.json").is_file():
        trains = "finetune" if "finetune" in tasks.get(cfg).COMMANDS else "pretrain"
        raise RunDirError(
            f"no trained model at {run.model_dir}",
            where=cfg.where("output_dir"),
            key="output_dir",
            hint=f"run `ptft {trains} --config {cfg.name}` first, or set {key} to a model directory",
        )
    models.check_files(
        str(run.model_dir), "output_dir", cfg.where("output_dir"), tokenizer=not cfg.tokenizer.name_or_path
    )
    models.fit_max_length(cfg, str(run.model_dir))
    return str(run.model_dir)


def _load(cfg: Config, task: Any, ref: str, key: str, attn: str | None = None) -> tasks.Loaded:
    """The trained model and its tokenizer on the configured device (`attn`: an attention kernel
    that overrides the config's, e.g. eager to return attention weights)."""
    from ptft_cli import hardware

    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    models.quiet_transformers()
    tok_key = "tokenizer.name_or_path" if cfg.tokenizer.name_or_path else key
    tokenizer = models.load_tokenizer(
        cfg.tokenizer.name_or_path or ref, cfg.model, tok_key, cfg.where(tok_key)
    )
    attn = attn or hardware.attn_implementation(
        cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length
    )
    head = task.head(cfg, None)
    model = models.load_trained(cfg, head, ref, key, attn)
    _check_int8_device(cfg, model, hw)
    model = model.to(hw.device)
    if head.pads:
        models.ensure_pad_token(tokenizer, model)
    return tasks.Loaded(model, tokenizer, hw, ref)


def evaluate(cfg: Config) -> dict[str, Any]:
    """Metrics of a trained model on labelled data or text; written to eval/metrics.json. With
    `evaluate.compare`: the trade-off table of the model and those runs, in eval/compare.json."""
    task = tasks.get(cfg)
    key = "evaluate.model" if cfg.evaluate.model else "output_dir"
    ref = trained_model(cfg, cfg.evaluate.model, "evaluate.model")
    run = RunDir(cfg.output_dir)
    if cfg.evaluate.compare:
        entries = [(_entry_name(ref), ref, key)] + [
            (_entry_name(m), m, "evaluate.compare") for m in _compare_models(cfg)
        ]
        out_dir = Path(cfg.evaluate.output_dir or run.eval_dir)
        out_key = "evaluate.output_dir" if cfg.evaluate.output_dir else "output_dir"
        checkpoint.check_output_dir(out_dir, out_key, cfg.where(out_key))
        return {"compare": compare(cfg, task, entries, out_dir)}
    inputs = task.evaluation_inputs(cfg, run, ref)
    out_dir = Path(cfg.evaluate.output_dir or run.eval_dir)
    out_key = "evaluate.output_dir" if cfg.evaluate.output_dir else "output_dir"
    checkpoint.check_output_dir(out_dir, out_key, cfg.where(out_key))
    loaded = _load(cfg, task, ref, key)

    started = time.perf_counter()
    with console.counting_progress("evaluate") as advance:
        metrics = task.evaluate(cfg, inputs, loaded, advance)
    metrics.setdefault("data", ", ".join(v for _, v in inputs.summary))
    metrics.update(
        {"model": ref, "precision": loaded.hw.precision, "seconds": round(time.perf_counter() - started, 2)}
    )

    from ptft_cli.metrics import plot_confusion

    generations = metrics.pop("generations", None)  # per-example replies (sft)
    if generations is not None:
        checkpoint.write_predictions(out_dir / "generations.jsonl", generations)
    checkpoint.atomic_write_json(out_dir / "metrics.json", metrics)
    if "confusion_matrix" in metrics:
        title = f"{Path(str(metrics['data'])).name}: confusion"
        plot_confusion(
            metrics["confusion_matrix"], metrics["labels"], out_dir / "confusion_matrix.png", title
        )
    headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "seconds"}
    console.metrics_table(f"evaluate · {Path(str(metrics['data'])).name}", headline)
    if "per_class" in metrics:
        console.per_class_table(metrics["per_class"])
    if "per_group" in metrics:
        console.per_group_table(str(metrics["group_by"]), metrics["per_group"])
    console.info(f"metrics written to {out_dir / 'metrics.json'}", summary=True)
    return metrics


def predict(cfg: Config) -> Path:
    """Predictions for a file of texts (or one `--prompt`), written as .jsonl or .csv."""
    task = tasks.get(cfg)
    key = "predict.model" if cfg.predict.model else "output_dir"
    ref = trained_model(cfg, cfg.predict.model, "predict.model")
    inputs = task.prediction_inputs(cfg)
    out = Path(cfg.predict.output or RunDir(cfg.output_dir).predictions)
    out_key = "predict.output" if cfg.predict.output else "output_dir"
    protected = {cfg.predict.input or "": "also the input", str(cfg.source): "the config"}
    for value in (cfg.data.train, cfg.data.validation, cfg.evaluate.data):
        for pattern in [value] if isinstance(value, str) else value or []:
            for path in glob.glob(pattern, recursive=True) or [pattern]:
                protected[path] = "a data file of this config"
    checkpoint.check_output_file(out, out_key, cfg.where(out_key), protected)
    if out.suffix.lower() not in task.PREDICTION_FORMATS:
        raise ConfigError(
            f"cannot write {cfg.task} predictions as {out.suffix or '(no extension)'}",
            where=cfg.where("predict.output"),
            key="predict.output",
            hint=f"use a {' or '.join(task.PREDICTION_FORMATS)} file name",
        )
    loaded = _load(cfg, task, ref, key)

    # One --prompt on a terminal: generated text streams to stdout, so no live count on stderr beside it.
    stream = console.text_stream() if cfg.predict.prompt is not None else None
    counting = contextlib.nullcontext(lambda n: None) if stream else console.counting_progress("predict")
    started = time.perf_counter()
    with counting as advance:
        rows = task.predict(cfg, inputs, loaded, advance, stream)
    seconds = time.perf_counter() - started
    checkpoint.write_predictions(out, rows)
    if cfg.predict.prompt is not None and len(rows) == 1 and not (stream and stream.used):
        console.info(task.shown(rows[0]), summary=True)
    rate = len(rows) / max(seconds, 1e-9)
    console.info(
        f"{len(rows):,} predictions in {seconds:.1f}s ({rate:,.0f}/s, {loaded.hw.precision}) → {out}",
        summary=True,
    )
    return out


def explain(cfg: Config) -> Path:
    """Per-token attributions (Integrated Gradients, attention rollout) of a classifier's predictions,
    written as explanations.jsonl and a self-contained explanations.html beside it."""
    from ptft_cli import attribution, explain_page

    task = tasks.explainable(cfg)
    problems = attribution.check(cfg)
    if problems:
        raise ConfigError.many(problems)
    key = "explain.model" if cfg.explain.model else "output_dir"
    ref = trained_model(cfg, cfg.explain.model, "explain.model")
    inputs = task.explanation_inputs(cfg)  # type: ignore[attr-defined]
    out = Path(cfg.explain.output or RunDir(cfg.output_dir).explanations)
    out_key = "explain.output" if cfg.explain.output else "output_dir"
    if out.suffix.lower() != ".jsonl":
        raise ConfigError(
            f"explanations are written as .jsonl (and .html beside it), not {out.suffix or '(no extension)'}",
            where=cfg.where(out_key),
            key=out_key,
            hint="name a .jsonl file, e.g. explanations.jsonl",
        )
    page = out.with_suffix(".html")
    protected = {
        cfg.explain.input or cfg.predict.input or "": "also the input",
        str(cfg.source): "the config",
    }
    for value in (cfg.data.train, cfg.data.validation, cfg.evaluate.data):
        for pattern in [value] if isinstance(value, str) else value or []:
            for path in glob.glob(pattern, recursive=True) or [pattern]:
                protected[path] = "a data file of this config"
    checkpoint.check_output_file(out, out_key, cfg.where(out_key), protected)
    if page.exists() and not explain_page.is_ours(page):
        raise RunDirError(
            f"{page} exists and is not a page ptft explain wrote",
            where=cfg.where(out_key),
            key=out_key,
            hint="choose another output name; ptft replaces only its own explanation pages",
        )
    loaded = _load(cfg, task, ref, key, attn="eager")  # eager: the only kernel that returns attentions
    attribution.check_tokenizer(cfg, loaded.tokenizer)

    s = attribution.settings(cfg)
    started = time.perf_counter()
    with console.counting_progress("explain") as advance:
        rows = attribution.explain(loaded.model, loaded.tokenizer, inputs.data, s, advance)
    seconds = time.perf_counter() - started
    checkpoint.write_predictions(out, rows)
    title = f"ptft explain · {Path(ref).name} · {len(rows)} text{'s' if len(rows) != 1 else ''}"
    checkpoint.atomic_write_text(page, explain_page.page(rows, s.methods, title))
    summary = [("model", ref), *inputs.summary, ("methods", ", ".join(s.methods))]
    if attribution.IG in s.methods and rows:
        deltas = [abs(r["ig_convergence_delta"]) for r in rows]
        summary.append(
            (
                "IG convergence",
                f"|delta| mean {sum(deltas) / len(deltas):.2e}, max {max(deltas):.2e} "
                f"({s.steps} steps, {attribution.baseline_token(s.baseline, loaded.tokenizer)} baseline)",
            )
        )
    summary.append(("time", f"{seconds:.1f}s ({len(rows) / max(seconds, 1e-9):.1f} texts/s)"))
    console.key_values("explain", summary)
    console.info(f"explanations written to {out} and {page}")
    return out


# ---------------------------------------------------------------------------------------------
# compress and the trade-off table


def compress(cfg: Config) -> dict[str, Any]:
    """A smaller model from a trained one: prune → low-rank → (recovery fine-tune) → quantize, saved
    to `<compress.output_dir>/model`, then the table comparing it with the original."""
    import copy

    from ptft_cli import compression as comp
    from ptft_cli import hardware

    # 1. Every check before anything is written.
    task = tasks.get(cfg)
    c = cfg.compress
    key = "compress.model" if c.model else "output_dir"
    ref = trained_model(cfg, c.model, "compress.model")
    local = models.config_json(ref)  # None for a Hub id: checked again once loaded
    plan = comp.check_plan(cfg, local)
    out = Path(c.output_dir or Path(str(cfg.output_dir)) / "compressed")
    out_key = "compress.output_dir" if c.output_dir else "output_dir"
    if out.exists():
        raise RunDirError(
            f"{out} already exists; compress writes a new directory",
            where=cfg.where(out_key),
            key="compress.output_dir",
            hint="set compress.output_dir to a new folder, or remove that one",
        )
    checkpoint.check_output_dir(out, out_key, cfg.where(out_key))
    if c.recover:
        task.read_inputs(cfg, task.COMMANDS[0])  # the recovery run's data, checked now
    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    if plan.quantize == "int8" and hw.device.type != "cpu":
        raise _int8_not_here(cfg, hw)
    loaded = _load(cfg, task, ref, key)
    if local is None:
        comp.check_plan(cfg, loaded.model.config.to_dict())
    model = loaded.model.to("cpu").float()

    # 2. Structure (in memory): heads, then layers (heads are numbered before layers drop), then low-rank.
    record: dict[str, Any] = {}
    if (plan.low_rank or plan.quantize) and comp.conv1d_to_linear(model):
        record["conv1d_as_linear"] = True
    if plan.heads:
        comp.prune_heads(model, plan.heads)
        shift = {old: old - sum(d < old for d in plan.drop_layers) for old in plan.heads}
        record["pruned_heads"] = {str(shift[k]): v for k, v in plan.heads.items()}
    if plan.drop_layers:
        comp.drop_layers(model, plan.drop_layers)
    if plan.low_rank:
        names = comp.choose_modules(model, plan.modules, cfg.where("compress.low_rank.modules"))
        record["low_rank"] = comp.low_rank(model, plan, names)
        if not record["low_rank"]:
            console.warn(
                f"no layer of {len(names)} would shrink at energy {plan.energy}; none was factorised"
            )
    if record:
        setattr(model.config, comp.RECORD, dict(record))
    console.key_values(
        "compress",
        [("model", ref), ("plan", plan.summary()), ("output", str(out))],
    )
    entries = [("original", ref, key)]

    # 3. Recovery: the normal fine-tuning run, from the compressed model, inside the output folder.
    if c.recover:
        start = out / "before-recovery"
        checkpoint.save_pretrained(model, loaded.tokenizer, start)
        entries.append(("before recovery", str(start), "compress.output_dir"))
        rcfg = copy.deepcopy(cfg)
        rcfg.model.name_or_path, rcfg.model.architecture = str(start), None
        rcfg.output_dir, rcfg.resume = str(out / "recovery"), None
        train(rcfg, task.COMMANDS[0], RunOptions())
        attn = hardware.attn_implementation(
            cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length
        )
        recovered = str(out / "recovery" / "model")
        model = models.load_trained(rcfg, task.head(rcfg, None), recovered, key, attn).to("cpu")

    # 4. Quantize last (its weights are stored as int8), and save.
    if plan.quantize:
        record["quantize"] = plan.quantize
        setattr(model.config, comp.RECORD, dict(record))
        tensors = comp.quantized_state(model, plan.quantize)
        checkpoint.save_tensors_dir(model.config, tensors, loaded.tokenizer, out / "model")
    else:
        checkpoint.save_pretrained(model, loaded.tokenizer, out / "model")
    console.info(f"compressed model saved to {out / 'model'}")
    entries.append((out.name, str(out / "model"), "compress.output_dir"))
    del model, loaded
    return {"model": str(out / "model"), "compare": compare(cfg, task, entries, out)}


def _int8_not_here(cfg: Config, hw: Any) -> ConfigError:
    return ConfigError(
        f"dynamic int8 quantization runs on the CPU only, and the device is {hw.device}",
        where=cfg.where("device"),
        key="device",
        hint="set device: cpu (or use compress.quantize: int8_weight, which torchao runs on GPUs too)",
    )


def _check_int8_device(cfg: Config, model: Any, hw: Any) -> None:
    from ptft_cli import compression as comp

    if comp.record_of(model).get("quantize") == "int8" and hw.device.type != "cpu":
        raise _int8_not_here(cfg, hw)


def _compare_models(cfg: Config) -> list[str]:
    """evaluate.compare's entries as model directories: a run's model/, or a model directory itself."""
    found = []
    for entry in cfg.evaluate.compare:
        p = Path(entry)
        for candidate in (p / "model", p / "compressed" / "model", p):
            if (candidate / "config.json").is_file():
                models.check_files(
                    str(candidate), "evaluate.compare", cfg.where("evaluate.compare"), tokenizer=True
                )
                found.append(str(candidate))
                break
        else:
            raise RunDirError(
                f"{entry} holds no model (no config.json in it or in its model/)",
                where=cfg.where("evaluate.compare"),
                key="evaluate.compare",
                hint="name ptft run directories, compress output directories or model directories",
            )
    return found


def _entry_name(ref: str) -> str:
    p = Path(ref)
    return p.parent.name if p.name == "model" else p.name


def compare(
    cfg: Config, task: Any, entries: list[tuple[str, str, str]], out_dir: Path
) -> list[dict[str, Any]]:
    """The trade-off table of (name, model directory, config key) entries: parameters, size on disk,
    throughput and the task's metrics; printed, and written to compare.json / compare.png.

    Throughput is `predict` on predict.input when it is set (else evaluation on the validation data),
    timed compress.throughput_rounds times per model, the models interleaved so that a shared CPU's
    load falls on all of them alike; the fastest pass counts."""
    from ptft_cli import compression as comp
    from ptft_cli.metrics import plot_compare

    run = RunDir(cfg.output_dir)
    predicting = bool(cfg.predict.input)
    texts = task.prediction_inputs(cfg) if predicting else None
    rows, loaded = [], []
    for name, ref, key in entries:
        models.fit_max_length(cfg, ref)
        inputs = task.evaluation_inputs(cfg, run, ref)
        one = _load(cfg, task, ref, key)
        with console.counting_progress(f"evaluate {name}") as advance:
            metrics = task.evaluate(cfg, inputs, one, advance)
        loaded.append((one, inputs))
        rows.append(
            {
                "name": name,
                "model": ref,
                "parameters": comp.parameter_count(one.model),
                "size_mb": round(comp.weight_bytes(Path(ref)) / 1e6, 4),
                **{m: metrics[m] for m in task.METRICS if isinstance(metrics.get(m), (int, float))},
            }
        )
    rates, unit = _throughput(cfg, task, loaded, texts)
    for row, rate in zip(rows, rates):
        row["per_second"] = rate
        row["speedup"] = round(rate / max(rates[0], 1e-9), 2)
    base = rows[0]
    what = f"predict on {cfg.predict.input}" if predicting else "evaluation on the validation data"
    shown = [m for m in task.METRICS if m in base]
    checkpoint.atomic_write_json(out_dir / "compare.json", {"throughput": what, "unit": unit, "rows": rows})
    plot_compare(rows, shown, unit, out_dir / "compare.png")
    console.compare_table(rows, shown, f"{unit}/s, {what}")
    console.info(f"table written to {out_dir / 'compare.json'}")
    return rows


def _throughput(cfg: Config, task: Any, loaded: list[tuple[Any, Any]], texts: Any) -> tuple[list[float], str]:
    """Per model: `predict` on `texts` (examples/s), or else evaluation (examples/s, or tokens/s for
    language models), in compress.throughput_rounds rounds of every model in turn; the fastest pass counts."""
    best = [float("inf")] * len(loaded)
    counts = [0] * len(loaded)
    unit = "examples"
    for _ in range(cfg.compress.throughput_rounds):
        for i, (one, inputs) in enumerate(loaded):
            started = time.perf_counter()
            if texts is not None:
                counts[i] = len(task.predict(cfg, texts, one, lambda n: None))
            else:
                metrics = task.evaluate(cfg, inputs, one, lambda n: None)
                unit = "examples" if "examples" in metrics else "tokens"
                counts[i] = int(metrics.get(unit, 0))
            best[i] = min(best[i], time.perf_counter() - started)
    return [round(n / max(t, 1e-9), 1) for n, t in zip(counts, best)], unit


def chat(cfg: Config, ask: Any) -> int:
    """An interactive conversation with a trained causal LM through its chat template: `ask(prompt)`
    returns the user's next message (None at the end of input). Returns the number of replies."""
    from ptft_cli.data import sft as sft_data
    from ptft_cli.inference import generate
    from ptft_cli.tasks import lm

    task = tasks.get(cfg)
    key = "predict.model" if cfg.predict.model else "output_dir"
    ref = trained_model(cfg, cfg.predict.model, "predict.model")
    loaded = _load(cfg, task, ref, key)
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise ConfigError(
            f"{ref}'s tokenizer has no chat template, so it cannot hold a conversation",
            where=cfg.where(key),
            key=key,
            hint="chat with an instruction-tuned model (task sft), or use `ptft predict --prompt`",
        )
    settings = lm.generation_settings(cfg)
    options = sft_data.SftOptions(cfg.tokenizer.max_length)
    history = [{"role": "system", "content": cfg.sft.system}] if cfg.sft.system else []
    console.info(f"chatting with {ref} ({loaded.hw.device}); an empty line or Ctrl-D ends")
    replies = 0
    while (message := ask("you> ")) is not None and message.strip():
        history.append({"role": "user", "content": message})
        prompt = sft_data.generation_prompt(history, loaded.tokenizer, options)
        # the oldest turns go first when the conversation outgrows the model's context
        while len(loaded.tokenizer(prompt)["input_ids"]) + settings.max_new_tokens > cfg.tokenizer.max_length:
            if len(history) <= 1 + bool(cfg.sft.system):
                break
            del history[bool(cfg.sft.system) : bool(cfg.sft.system) + 2]
            prompt = sft_data.generation_prompt(history, loaded.tokenizer, options)
        stream = console.text_stream()  # a terminal sees the reply as it is generated
        (row,) = generate(loaded.model, loaded.tokenizer, [prompt], settings, None, stream)
        if stream is not None:
            stream("\n")
        else:
            console.console.print(row["completion"].strip(), markup=False, highlight=False)
        history.append({"role": "assistant", "content": row["completion"].strip()})
        replies += 1
    return replies


# ---------------------------------------------------------------------------------------------
# validate


def validate(cfg: Config, opts: RunOptions | None = None) -> dict[str, str]:
    """Check the config and data the way the commands would, without loading a model or torch.
    Returns what it printed (task, model, data, batch, ...)."""
    opts = opts or RunOptions()
    task = tasks.get(cfg)
    command = task.COMMANDS[0]
    tracking.check(cfg)
    hub = cfg.data.dataset  # reading a Hub dataset may need the network: training will check it
    predicts = cfg.predict.input or cfg.predict.prompt is not None
    _, _, inputs, predicted = _gather(
        lambda: models.check_refs(cfg, command),
        lambda: distill.check(cfg, task),
        lambda: None if hub else task.read_inputs(cfg, command),
        lambda: task.prediction_inputs(cfg) if predicts else None,
    )
    rows: list[tuple[str, str]] = [
        ("task", cfg.task),
        ("model", cfg.model.name_or_path or f"new {cfg.model.architecture}"),
    ]
    if hub:
        rows.append(("data", f"Hub dataset {cfg.data.dataset} (checked when training starts)"))
        files: list[Path] = []
    else:
        rows += inputs.summary
        files = inputs.files
    if predicted is not None:
        rows += predicted.summary
    if cfg.evaluate.data:
        rows.append(("evaluate.data", str(cfg.evaluate.data)))
    if any(k.split(".")[0] == "compress" for k in [*cfg.lines, *cfg.overridden]):
        from ptft_cli import compression as comp

        ref = cfg.compress.model or str(RunDir(cfg.output_dir).model_dir)
        rows.append(("compress", comp.check_plan(cfg, models.config_json(ref)).summary()))
    t, d = cfg.training, cfg.distributed
    processes = (d.nproc_per_node or 1) * d.nnodes
    rows.append(
        (
            "batch",
            f"{t.batch_size} per process × {t.gradient_accumulation_steps} accumulation × {processes} "
            f"process{'es' if processes > 1 else ''} = {t.batch_size * t.gradient_accumulation_steps * processes} per step"
            + (f" ({d.strategy.upper()})" if processes > 1 else ""),
        )
    )
    rows.append(("output_dir", str(cfg.output_dir)))
    run = RunDir(cfg.output_dir)
    run.check_location(_protected(cfg, files), cfg.where("output_dir"))  # an error: it could delete data
    console.key_values(f"{cfg.name}: valid", rows)
    try:
        resume_point(cfg, run, opts, files)
    except RunDirError as e:
        console.warn(f"training would refuse to start: {e.line()}")
        rows.append(("warning", f"training would refuse to start: {e.line()}"))
    return dict(rows)
