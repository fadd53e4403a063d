"""The `ptft` command line. Parses arguments, then loads the config and runs the command through the
Python API (`api.load_config`, `api.run`: what `ptft.finetune(...)` calls too), and maps errors to exit codes.

Exit codes: 0 success, 2 user error (config, data, paths: one line naming the place, no traceback),
1 a bug (traceback), 130 interrupted. torch and transformers are imported inside the commands, so
`ptft --help` and `ptft validate` return in well under half a second.
"""

from __future__ import annotations

import json
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
    add_completion=True,  # --install-completion / --show-completion; completing imports no torch
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
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print only errors and the final summary (no header, progress or step lines)."
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


def _load(config: Path, overrides: list[str] | None, values: dict[str, tuple[str, Any]] | None = None) -> Any:
    """The checked config (`api.load_config`, as the Python API loads it). `values` are typed
    command-line options (`--input PATH`, ...) set on the config as they are, never parsed as YAML."""
    from ptft_cli import api

    return api.load_config(
        config, overrides or [], {k: v for k, v in (values or {}).items() if v[1] is not None}
    )


def _run(action: Callable[[], Any], quiet: bool = False) -> None:
    """Run `action()` (which loads the config and calls the API), turning user errors into exit code 2.
    `quiet`: only errors and the final summary are printed."""
    from ptft_cli import console
    from ptft_cli.distributed import PeerFailed
    from ptft_cli.errors import PtftError
    from ptft_cli.signals import Interrupted

    was_quiet = console.brief(quiet)
    try:
        action()
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
    finally:
        console.brief(was_quiet)  # in-process callers (tests, notebooks) get the setting back


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
    command: str, config: Path, set_: list[str] | None, flags: tuple[bool, str | None, bool], launch: Any
) -> None:
    from ptft_cli import api

    overwrite, resume, quiet = flags
    opts = _options(command, config, set_, resume, overwrite, launch)
    values = {"resume": ("--resume", api.resume_value(resume)), **_launch_values(*launch)}

    def action() -> None:
        cfg = _load(config, set_, values)
        if api.needs_launch(cfg):  # this process starts the workers, which run the command itself
            raise typer.Exit(_launch(cfg))
        api.run(command, cfg, opts)

    _run(action, quiet)


def _launch_values(nproc: int | None, nnodes: int | None, rdzv: str | None) -> dict[str, tuple[str, Any]]:
    return {
        "distributed.nproc_per_node": ("--nproc", nproc),
        "distributed.nnodes": ("--nnodes", nnodes),
        "distributed.rdzv_endpoint": ("--rdzv-endpoint", rdzv),
    }


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


@app.command()
def pretrain(
    config: ConfigOpt,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = None,
    rdzv_endpoint: RdzvOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Masked-LM or causal-LM pretraining, from scratch or continued from a checkpoint."""
    _train("pretrain", config, set_, (overwrite, resume, quiet), (nproc, nnodes, rdzv_endpoint))


@app.command()
def finetune(
    config: ConfigOpt,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = None,
    rdzv_endpoint: RdzvOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a pretrained model: sequence classification, or continued causal-LM training."""
    _train("finetune", config, set_, (overwrite, resume, quiet), (nproc, nnodes, rdzv_endpoint))


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
    quiet: QuietOpt = False,
) -> None:
    """Metrics of a trained model: accuracy, F1, confusion matrix; loss, perplexity, bits per character."""
    from ptft_cli import api

    paths = [os.path.abspath(p.expanduser()) for p in compare] if compare else None
    _run(lambda: api.run("evaluate", _load(config, set_, {"evaluate.compare": ("--compare", paths)})), quiet)


@app.command()
def compress(config: ConfigOpt, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """A smaller, faster model from a trained one (quantize, low-rank, prune), with the trade-off table."""
    from ptft_cli import api

    _run(lambda: api.run("compress", _load(config, set_)), quiet)


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
    quiet: QuietOpt = False,
) -> None:
    """Labels and probabilities for a file of texts; text generation or fill-mask for language models."""
    from ptft_cli import api

    values = {
        "predict.prompt": ("--prompt", prompt),
        "predict.input": ("--input", os.path.abspath(input.expanduser()) if input else None),
        "predict.output": ("--output", os.path.abspath(output.expanduser()) if output else None),
    }
    _run(lambda: api.run("predict", _load(config, set_, values)), quiet)


@app.command()
def explain(
    config: ConfigOpt,
    set_: SetOpt = None,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Texts to explain (sets explain.input; default predict.input)."),
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="One text to explain (sets explain.text).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The explanations .jsonl; the .html goes beside it."),
    ] = None,
) -> None:
    """Why a classifier chose its labels: per-token Integrated Gradients and attention rollout (jsonl, html)."""
    from ptft_cli import api

    values = {
        "explain.text": ("--text", text),
        "explain.input": ("--input", os.path.abspath(input.expanduser()) if input else None),
        "explain.output": ("--output", os.path.abspath(output.expanduser()) if output else None),
    }
    _run(lambda: api.run("explain", _load(config, set_, values)))


@app.command()
def chat(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Talk to a trained chat model (task sft, or any model with a chat template) in the terminal."""
    from ptft_cli import runner

    def ask(prompt: str) -> str | None:
        try:
            return input(prompt)
        except EOFError:
            return None

    _run(lambda: runner.chat(_load(config, set_), ask))


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
    from ptft_cli import api

    opts = _options("validate", config, set_, resume, overwrite)
    values = {
        "resume": ("--resume", api.resume_value(resume)),
        **_launch_values(nproc, nnodes, rdzv_endpoint),
    }
    _run(lambda: api.run("validate", _load(config, set_, values), opts))


@app.command()
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")] = False,
) -> None:
    """Versions, optional extras, the device and precision `auto` picks, threads and GPUs (for bug reports)."""
    from ptft_cli import api

    def action() -> None:
        info = api.env()
        typer.echo(json.dumps(info, indent=2) if as_json else _env_text(info))

    _run(action)


def _env_text(info: dict[str, Any]) -> str:
    extras = info["extras"]
    rows = [
        *((k, info[k]) for k in ("ptft", "python", "platform", "torch", "transformers", "peft")),
        ("extras", ", ".join(f"{k} {v}" for k, v in extras.items() if v) or "none"),
        ("not installed", ", ".join(k for k, v in extras.items() if not v) or "none"),
        ("cuda", f"{info['cuda'] or 'not built'}; available: {'yes' if info['cuda_available'] else 'no'}"),
        ("gpus", ", ".join(info["gpus"]) or "none"),
        ("mps", "available" if info["mps_available"] else "not available"),
        ("device (auto)", f"{info['device']} ({info['device_name'] or 'unnamed'})"),
        (
            "precision (auto)",
            f"{info['precision']} ({info['precision_reason']}); evaluate/predict {info['eval_precision']}",
        ),
        ("threads", f"{info['threads']} (of {info['cpus']} CPUs)"),
    ]
    return "\n".join(f"{key:<17} {value}" for key, value in rows)


def main() -> None:
    app(prog_name="ptft")


if __name__ == "__main__":
    sys.exit(main())
