"""The `ptft` command line. Parses arguments, loads the config, calls the runner, maps errors to exit codes.

Exit codes: 0 success, 2 user error (config, data, paths: one line naming the place, no traceback),
1 a bug (traceback), 130 interrupted. torch and transformers are imported inside the commands, so
`ptft --help` and `ptft validate` return in well under half a second.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ptft_cli import __version__

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


def _run(config: Path, overrides: list[str] | None, action: Callable[[Any], Any]) -> None:
    """Load the config and run `action(cfg)`, turning user errors into exit code 2."""
    from ptft_cli import console
    from ptft_cli.errors import PtftError

    try:
        from ptft_cli import config as config_mod

        cfg = config_mod.load(config, overrides or [])
        action(cfg)
    except PtftError as e:
        for problem in e.problems:
            console.error(problem.line(), problem.hint)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.error("interrupted; the last checkpoint in output_dir/checkpoints is complete and loadable")
        raise typer.Exit(130) from None


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


@app.command()
def pretrain(config: ConfigOpt, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Masked-LM or causal-LM pretraining, from scratch or continued from a checkpoint."""
    from ptft_cli import runner

    _run(config, set_, lambda cfg: runner.pretrain(cfg, overwrite=overwrite))


@app.command()
def finetune(config: ConfigOpt, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Fine-tune a pretrained model: sequence classification, or continued causal-LM training."""
    from ptft_cli import runner

    _run(config, set_, lambda cfg: runner.finetune(cfg, overwrite=overwrite))


@app.command()
def evaluate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Metrics of a trained model: accuracy, F1, confusion matrix; loss, perplexity, bits per character."""
    from ptft_cli import runner

    _run(config, set_, runner.evaluate)


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

    extra = list(set_ or [])
    if prompt is not None:
        extra.append("predict.prompt=" + json.dumps(prompt))  # JSON is YAML: the text stays a string
    if input is not None:
        extra.append(f"predict.input={Path(input).expanduser().resolve()}")
    if output is not None:
        extra.append(f"predict.output={Path(output).expanduser().resolve()}")
    _run(config, extra, runner.predict)


@app.command()
def validate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Check a config and its data (schema, paths, columns, labels, split sizes) without training."""
    from ptft_cli import runner

    _run(config, set_, runner.validate)


def main() -> None:
    app(prog_name="ptft")


if __name__ == "__main__":
    sys.exit(main())
