"""Several processes, one run: torchrun's environment, the few collectives the loop needs, DDP and
FSDP2 wrapping, full-state saving, and the launcher behind `ptft ... --nproc N`.

Every process reads the same config and data and builds the same batches; each optimizer step's
global batch is split across processes (and micro-batches), so N processes with batch b train on
exactly what 1 process with batch N·b does, and a checkpoint holds nothing that depends on N.
Only rank 0 prints and writes; every decision that could differ between ranks (an error, a stop
request, a non-finite loss) is agreed through a collective before anyone acts on it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ptft_cli.errors import PtftError

# Set by torchrun (and by `ptft --nproc`) in every worker process.
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """True inside a process that torchrun started."""
    return all(k in os.environ for k in _ENV)


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    lockstep: bool = False  # FSDP: every forward is a collective, so every rank runs as many
    device: Any = None  # where collectives' tensors live (the GPU for nccl, else the CPU)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks, in float64 (counts stay exact)."""
        if self.size == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (small, picklable values only)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def map_shards(self, items: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
        """`[fn(x) for x in items]`, item i computed by rank i mod N and gathered in item order, so the
        results (and sums over them, taken in order) equal one process's. Under FSDP a rank with fewer
        items runs `fn` on a filler and drops the result: no rank waits in a forward the others skip."""
        mine = list(items[self.rank :: self.size])
        rounds = -(-len(items) // self.size) if self.lockstep else len(mine)
        results = [fn(x) for x in mine]
        for _ in range(rounds - len(mine)):
            fn(items[0])
        if self.size == 1:
            return results
        shards = self.gather(results)
        return [shards[i % self.size][i // self.size] for i in range(len(items))]


SINGLE = World()


class AgreedError(PtftError):
    """Another rank's user error, re-raised here so every rank stops with the same line."""

    def __init__(self, line: str, hint: str | None):
        super().__init__(line, hint=hint)


class PeerFailed(Exception):
    """Another rank failed with a bug (its traceback is in its own output)."""


@contextlib.contextmanager
def agreeing(world: World) -> Iterator[None]:
    """Every rank leaves the block the same way: if any rank raised, all raise (the lowest failing
    rank's user error, word for word), and none is left waiting in a collective for the others."""
    error: BaseException | None = None
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - re-raised below, on every rank
        if world.size == 1:
            raise
        error = e
    if world.size == 1:
        return
    what = None
    if isinstance(error, PtftError):
        what = ("user", [(p.line(), p.hint) for p in error.problems])
    elif error is not None:
        what = ("bug", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    reports = world.gather(what)
    failed = [(r, w) for r, w in enumerate(reports) if w is not None]
    if not failed:
        return
    rank, (kind, detail) = failed[0]
    if kind == "user":
        agreed = [AgreedError(line, hint) for line, hint in detail]
        err = AgreedError.many(agreed) if len(agreed) > 1 else agreed[0]
        err.problems = agreed
        raise err from None
    if error is not None:
        raise error
    raise PeerFailed(f"rank {rank} failed ({detail}); its traceback is above") from None


# ---------------------------------------------------------------------------------------------
# Joining and leaving the process group


def join(device_choice: str, timeout_minutes: int, strategy: str) -> World:
    """The process group of a torchrun launch (nccl on CUDA, gloo on the CPU); SINGLE without one."""
    if not launched():
        return SINGLE
    import torch
    import torch.distributed as dist

    rank, size, local = (int(os.environ[k]) for k in _ENV)
    cuda = torch.cuda.is_available() and not device_choice.startswith(("cpu", "mps"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=torch.device("cuda", local) if cuda else None,
        )
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    return World(rank, size, local, lockstep=strategy == "fsdp" and size > 1, device=device)


def leave(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The model as this process trains it


@dataclass
class Replica:
    """The model as one process trains it. `forward` is what training calls (wrapped by DDP, sharded
    by FSDP2, compiled); `module` is the transformers model itself (evaluation, saving, counting)."""

    forward: Any
    module: Any
    world: World = SINGLE
    strategy: str = "single"  # single | ddp | fsdp

    def sync_gradients(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Gradient accumulation communicates only at the step's last micro-batch."""
        if self.strategy == "ddp" and not enabled:
            return self.forward.no_sync()
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    def full_state(self) -> dict[str, Any] | None:
        """The full weights on rank 0 (None elsewhere); a collective under FSDP."""
        if self.strategy != "fsdp":
            return None  # the module holds them whole: save it directly
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(
            self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        # a tied weight (LM head = embeddings) is saved once, under the name a plain save uses
        names = {n for n, _ in self.module.named_parameters()} | {n for n, _ in self.module.named_buffers()}
        return {k: v for k, v in full.items() if k in names}


def training_tensors(replica: Replica, optimizer: Any) -> dict[str, Any]:
    """What a checkpoint needs beyond the module, gathered from every process (a collective):
    the full weights under FSDP (else None: the module holds them), the optimizer state keyed by
    parameter name (the same for any number of processes) and every rank's random generators."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return {
        "weights": replica.full_state(),
        "optimizer": get_optimizer_state_dict(replica.module, optimizer, options=full),
        "rng": replica.world.gather(rng),
    }


def load_optimizer_state(module: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """The optimizer state `training_tensors` saved, into this process's (possibly sharded) optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def wrap(model: Any, world: World, strategy: str, precision: str) -> Replica:
    """DDP, or FSDP2 with each transformer block its own shard unit, for a multi-process run."""
    if world.size == 1:
        return Replica(model, model)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [world.local_rank] if world.device.type == "cuda" else None
        return Replica(DDP(model, device_ids=ids), model, world, "ddp")
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Parameters stay fp32 (the optimizer's copy); the forward casts them per block, as autocast would.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    from ptft_cli.models import layer_list

    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in layer_list(model) or []:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return Replica(model, model, world, "fsdp")


# ---------------------------------------------------------------------------------------------
# The launcher: `ptft finetune --config F --nproc N` runs torchrun's agent in this process


@dataclass(frozen=True)
class Launch:
    nproc_per_node: int
    nnodes: str = "1"  # a number, or MIN:MAX for elastic launches
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (multi-node)
    rdzv_id: str = "ptft"


def run_workers(launch: Launch, argv: list[str]) -> int:
    """Start `python -m ptft_cli <argv>` in `nproc_per_node` processes on this node through
    torch.distributed's launcher; returns the exit code of the first process that failed (0 if none).
    Workers print their own errors; the launcher adds no report of its own."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import config_from_args, get_args_parser

    # Workers get time to finish their step and save a checkpoint after a SIGTERM (torchrun: 30 s).
    args = [
        "--nproc-per-node",
        str(launch.nproc_per_node),
        "--nnodes",
        launch.nnodes,
        "--shutdown-timeout",
        "600",
    ]
    if launch.rdzv_endpoint:
        args += [
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            launch.rdzv_endpoint,
            "--rdzv-id",
            launch.rdzv_id,
        ]
    else:  # one machine: a private rendezvous on a free local port (what torchrun --standalone does)
        args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", uuid.uuid4().hex]
    # Threads per worker: the node's cores shared out, not torchrun's blanket 1.
    cores = os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // launch.nproc_per_node)))
    parsed = get_args_parser().parse_args([*args, "--module", "ptft_cli"])
    config, cmd, cmd_args = config_from_args(parsed)
    cmd_args = [*cmd_args, *argv]  # not parsed above: torchrun's parser would take `--nproc` as its own
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed"):  # the agent's notes on a normal stop are not news
            logging.getLogger(name).setLevel(logging.ERROR)
    from torch.distributed.launcher.api import elastic_launch

    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as e:  # the launcher was signalled; the workers saved and stopped
        return 128 + int(e.sigval)
    return 0
