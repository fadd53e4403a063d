"""What the user sees: run header, progress, metric tables. Everything goes to stderr; data goes to files,
and text generated for one `--prompt` streams to stdout when that is a terminal.

Rich honours NO_COLOR and drops live bars when stderr is not a terminal; there the progress
falls back to one plain line per logged step so CI logs stay readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True, highlight=False)


def quiet(enabled: bool) -> None:
    """Silence this process (the other ranks of a distributed run: rank 0 speaks for all)."""
    console.quiet = enabled


def info(message: str) -> None:
    console.print(Text(message), soft_wrap=True)


def _prefixed(prefix: str, style: str, message: str) -> Text:
    # User text (paths, values like [0.9, 0.999]) must not be read as Rich markup.
    return Text.assemble((prefix, style), " ", message)


def warn(message: str) -> None:
    console.print(_prefixed("warning:", "yellow", message), soft_wrap=True)


def error(message: str, hint: str | None = None) -> None:
    """One line: where, what is wrong, and what is allowed or would fix it; never wrapped."""
    line = _prefixed("error:", "bold red", message)
    if hint:
        line.append("; ")
        line.append(hint, style="cyan")
    console.print(line, soft_wrap=True)


def key_values(title: str, rows: Iterable[tuple[str, Any]]) -> None:
    # The title is its own line: as a Table title it would wrap to the table's width.
    console.print(Text(title, style="bold underline"), soft_wrap=True)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long paths wrap instead of being cut with "…"
    for key, value in rows:
        table.add_row(key, Text(str(value)))
    console.print(table)


def metrics_table(title: str, metrics: dict[str, Any]) -> None:
    key_values(title, ((k, fmt(v)) for k, v in metrics.items() if not isinstance(v, (list, dict))))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def per_class_table(report: dict[str, dict[str, float]]) -> None:
    table = Table(title="per class", title_justify="left", min_width=50)
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, row in report.items():
        table.add_row(
            Text(label),
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            str(row["support"]),
        )
    console.print(table)


def count(n: int) -> str:
    """Human-readable count: 22.7M, 4,000."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n:,}"


class TrainProgress:
    """A progress bar over optimizer steps showing loss, samples/s and ETA."""

    def __init__(self, total: int, start: int = 0, description: str = "train"):
        self.live = console.is_terminal
        self.start_time = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not self.live,
        )
        self.task = self.progress.add_task(description, total=total, completed=start, loss="-", rate="")

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def advance(self, step: int, loss: float | None, rate: str) -> None:
        """Move the bar; without a terminal, a logging step (one with a rate) prints a plain line."""
        shown = "-" if loss is None else f"{loss:.4f}"
        self.progress.update(self.task, completed=step, loss=shown, rate=rate)
        if not self.live and rate:
            total = self.progress.tasks[0].total
            elapsed = time.perf_counter() - self.start_time
            console.print(
                Text(f"step {step}/{total:.0f}  loss {shown}  {rate}  {elapsed:,.0f}s"), soft_wrap=True
            )

    def note(self, message: str) -> None:
        """A line above the bar (or a plain log line when there is no live bar)."""
        self.progress.console.print(message)


@contextlib.contextmanager
def counting_progress(description: str) -> Iterator[Callable[[int], None]]:
    """A live count for inference loops (evaluate, predict); yields `advance(n)`."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,.0f} done"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task(description, total=None)
    with progress:
        yield lambda n: progress.advance(task, n)


class TextStream:
    """Generated text written to stdout piece by piece, flushed, so a terminal shows it as it comes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.used = False  # whether anything was written (then the text need not be shown again)

    def __call__(self, piece: str) -> None:
        self.used = True
        self.out.write(piece)
        self.out.flush()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def text_stream() -> TextStream | None:
    """A stream to stdout when it is a terminal; None when stdout is piped or a file, where the text
    is shown once finished (on stderr, with the other messages)."""
    return TextStream(sys.stdout) if stdout_is_terminal() else None


def compare_table(rows: list[dict[str, Any]], metrics: list[str], throughput: str) -> None:
    """The compression trade-off: one row per model, the first row the reference for the speed-up."""
    table = Table(title=f"compare (throughput: {throughput})", title_justify="left")
    metrics = metrics[:2]  # the task's headline metrics; compare.json holds them all
    table.add_column("model", overflow="fold")
    for name in ("params", "MB", "per s", "speed", *metrics):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"],
            count(r["parameters"]),
            f"{r['size_mb']:,.3g}",
            f"{r['per_second']:,.1f}",
            f"{r['speedup']:.2f}x",
            *(fmt(r.get(m)) for m in metrics),
        )
    console.print(table)
