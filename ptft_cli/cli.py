"""The `ptft` command line. Parses arguments, loads the config, calls the runner, maps errors to exit codes.

Exit codes: 0 success, 2 user error (config, data, paths: one line naming the place, no traceback),
1 a bug (traceback), 130 interrupted. torch and transformers are imported inside the commands, so
`ptft --help` and `ptft validate` return in well under half a second.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ptft_cli import __version__

STARTED = time.perf_counter()  # the command's start, for the time it takes to reach the first step

app = typer.Typer(
    name="ptft",
    help="Pretrain and fine-tune Transformer language models from one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config key: --set training.learning_rate=3e-5 (repeatable).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace an earlier run in output_dir (never a directory that is not a ptft run)."
    ),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        "-r",
        help="Continue a run: `auto` (its newest complete checkpoint in output_dir; starts if there is none) "
        "or a checkpoint folder. Sets `resume`.",
        show_default=False,
    ),
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        "--nproc",
        help="Processes on this machine, one per GPU (launched through torchrun; sets distributed.nproc_per_node).",
        show_default=False,
    ),
]
NnodesOpt = Annotated[
    int | None,
    typer.Option("--nnodes", help="Machines in the run (sets distributed.nnodes).", show_default=False),
]
RdzvOpt = Annotated[
    str | None,
    typer.Option(
        "--rdzv-endpoint",
        help="host:port where the machines meet (sets distributed.rdzv_endpoint).",
        show_default=False,
    ),
]


def _run(
    config: Path,
    overrides: list[str] | None,
    action: Callable[[Any], Any],
    values: dict[str, tuple[str, Any]] | None = None,
) -> None:
    """Load the config and run `action(cfg)`, turning user errors into exit code 2.

    `values` are typed command-line options (`--input PATH`, ...) set on the config as they are,
    never parsed as YAML."""
    from ptft_cli import console
    from ptft_cli.distributed import PeerFailed
    from ptft_cli.errors import PtftError
    from ptft_cli.signals import Interrupted

    try:
        from ptft_cli import config as config_mod

        cfg = config_mod.load(
            config, overrides or [], {k: v for k, v in (values or {}).items() if v[1] is not None}
        )
        action(cfg)
    except PtftError as e:
        for problem in e.problems:
            console.error(problem.line(), problem.hint)
        raise typer.Exit(2) from None
    except Interrupted as e:
        console.error(e.message)
        raise typer.Exit(e.exit_code) from None
    except PeerFailed as e:  # another process of a distributed run hit a bug and printed it
        console.error(str(e))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.error("interrupted")
        raise typer.Exit(130) from None


def _options(
    command: str,
    config: Path,
    overrides: list[str] | None,
    resume: str | None,
    overwrite: bool,
    launch: tuple[int | None, int | None, str | None] = (None, None, None),
) -> Any:
    """The runner's options: --overwrite, and the exact command line that resumes this run."""
    from ptft_cli.runner import RunOptions

    sets = [part for item in overrides or [] for part in ("--set", item)]
    flags = [
        part
        for name, value in zip(("--nproc", "--nnodes", "--rdzv-endpoint"), launch)
        if value is not None
        for part in (name, str(value))
    ]
    again = [
        "ptft",
        command,
        "--config",
        os.path.abspath(config.expanduser()),
        *sets,
        *flags,
        "--resume",
        "auto",
    ]
    return RunOptions(overwrite=overwrite, resume_command=shlex.join(again), started=STARTED)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ptft {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Pretrain and fine-tune Transformer language models from one YAML file."""


def _train(
    command: str, config: Path, set_: list[str] | None, flags: tuple[bool, str | None], launch: Any
) -> None:
    from ptft_cli import runner

    overwrite, resume = flags
    opts = _options(command, config, set_, resume, overwrite, launch)
    values = {"resume": ("--resume", _resume_value(resume)), **_launch_values(*launch)}

    def action(cfg: Any) -> None:
        if _launches(cfg):  # this process starts the workers, which run the command itself
            raise typer.Exit(_launch(cfg))
        getattr(runner, command)(cfg, opts)

    _run(config, set_, action, values)


def _launch_values(nproc: int | None, nnodes: int | None, rdzv: str | None) -> dict[str, tuple[str, Any]]:
    return {
        "distributed.nproc_per_node": ("--nproc", nproc),
        "distributed.nnodes": ("--nnodes", nnodes),
        "distributed.rdzv_endpoint": ("--rdzv-endpoint", rdzv),
    }


def _launches(cfg: Any) -> bool:
    """True when this command should start torchrun's workers (and is not one of them)."""
    from ptft_cli import distributed

    d = cfg.distributed
    return not distributed.launched() and ((d.nproc_per_node or 1) > 1 or d.nnodes > 1)


def _launch(cfg: Any) -> int:
    from ptft_cli import distributed
    from ptft_cli.errors import ConfigError

    d = cfg.distributed
    if d.nnodes > 1 and not d.rdzv_endpoint:
        raise ConfigError(
            f"{d.nnodes} machines need a meeting point",
            where=cfg.where("distributed.rdzv_endpoint"),
            key="distributed.rdzv_endpoint",
            hint="set --rdzv-endpoint host:port (a machine of the run all can reach; the same on every machine)",
        )
    launch = distributed.Launch(d.nproc_per_node or 1, str(d.nnodes), d.rdzv_endpoint)
    return distributed.run_workers(launch, sys.argv[1:])


def _resume_value(resume: str | None) -> str | None:
    """`auto` stays a word; anything else is a checkpoint path, taken relative to the working directory."""
    if resume is None or resume == "auto":
        return resume
    return os.path.abspath(Path(resume).expanduser())


@app.command()
def pretrain(
    config: ConfigOpt,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = None,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Masked-LM or causal-LM pretraining, from scratch or continued from a checkpoint."""
    _train("pretrain", config, set_, (overwrite, resume), (nproc, nnodes, rdzv_endpoint))


@app.command()
def finetune(
    config: ConfigOpt,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = None,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Fine-tune a pretrained model: sequence classification, or continued causal-LM training."""
    _train("finetune", config, set_, (overwrite, resume), (nproc, nnodes, rdzv_endpoint))


@app.command()
def evaluate(
    config: ConfigOpt,
    set_: SetOpt = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            help="A run or model directory to compare with the model: size, throughput, metric "
            "(repeatable; sets evaluate.compare).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Metrics of a trained model: accuracy, F1, confusion matrix; loss, perplexity, bits per character."""
    from ptft_cli import runner

    paths = [os.path.abspath(p.expanduser()) for p in compare] if compare else None
    _run(config, set_, runner.evaluate, {"evaluate.compare": ("--compare", paths)})


@app.command()
def compress(config: ConfigOpt, set_: SetOpt = None) -> None:
    """A smaller, faster model from a trained one (quantize, low-rank, prune), with the trade-off table."""
    from ptft_cli import runner

    _run(config, set_, runner.compress)


@app.command()
def predict(
    config: ConfigOpt,
    set_: SetOpt = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Texts to label (sets predict.input).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write predictions (sets predict.output).")
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", "-p", help="Language models: one prompt or masked text (sets predict.prompt)."
        ),
    ] = None,
) -> None:
    """Labels and probabilities for a file of texts; text generation or fill-mask for language models."""
    from ptft_cli import runner

    values = {
        "predict.prompt": ("--prompt", prompt),
        "predict.input": ("--input", os.path.abspath(input.expanduser()) if input else None),
        "predict.output": ("--output", os.path.abspath(output.expanduser()) if output else None),
    }
    _run(config, set_, runner.predict, values)


@app.command()
def chat(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Talk to a trained chat model (task sft, or any model with a chat template) in the terminal."""
    from ptft_cli import runner

    def ask(prompt: str) -> str | None:
        try:
            return input(prompt)
        except EOFError:
            return None

    _run(config, set_, lambda cfg: runner.chat(cfg, ask))


@app.command()
def validate(
    config: ConfigOpt,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = None,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Check a config and its data (schema, paths, columns, labels, split sizes) without training.

    Takes the training commands' options, to check what that run would do (and print its global batch)."""
    from ptft_cli import runner

    opts = _options("validate", config, set_, resume, overwrite)
    values = {"resume": ("--resume", _resume_value(resume)), **_launch_values(nproc, nnodes, rdzv_endpoint)}
    _run(config, set_, lambda cfg: runner.validate(cfg, opts), values)


def main() -> None:
    app(prog_name="ptft")


if __name__ == "__main__":
    sys.exit(main())
