"""What the user sees: run header, progress, metric tables. Everything goes to stderr; data goes to files,
and text generated for one `--prompt` streams to stdout when that is a terminal.

Rich honours NO_COLOR and drops live bars when stderr is not a terminal; there the progress
falls back to plain step lines (at least every 10% of the run) so CI and `nohup` logs stay readable.
`--quiet` (`brief`) keeps only errors, warnings and the final summary.
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


_brief = False  # --quiet: only errors, warnings and the final summary


def brief(enabled: bool) -> bool:
    """Turn `--quiet` on or off; returns the previous setting (the CLI restores it)."""
    global _brief
    before, _brief = _brief, enabled
    return before


def info(message: str, *, summary: bool = False) -> None:
    """A line for the user; `summary` lines (the final results) are printed even under --quiet."""
    if _brief and not summary:
        return
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


def key_values(title: str, rows: Iterable[tuple[str, Any]], *, summary: bool = False) -> None:
    if _brief and not summary:
        return
    # The title is its own line: as a Table title it would wrap to the table's width.
    console.print(Text(title, style="bold underline"), soft_wrap=True)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long paths wrap instead of being cut with "…"
    for key, value in rows:
        table.add_row(key, Text(str(value)))
    console.print(table)


def metrics_table(title: str, metrics: dict[str, Any]) -> None:
    key_values(
        title, ((k, fmt(v)) for k, v in metrics.items() if not isinstance(v, (list, dict))), summary=True
    )


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


def per_group_table(column: str, report: dict[str, dict[str, Any]]) -> None:
    table = Table(title=f"per group ({column})", title_justify="left", min_width=50)
    for col in ("group", "accuracy", "macro_f1", "support"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, row in report.items():
        table.add_row(Text(group), f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}", str(row["support"]))
    console.print(table)


def count(n: int) -> str:
    """Human-readable count: 22.7M, 4,000."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n:,}"


def plain_every(total_steps: int, log_every: int) -> int:
    """Steps between plain progress lines: training.log_every, or denser so that a line comes at
    least every 10% of the run (a 4-minute run logging every 500 steps must not stay silent)."""
    return max(1, min(log_every, total_steps // 10))


def rate_text(stats: dict[str, Any]) -> str:
    """Throughput: tokens/s (with FLOP/s and MFU when known) for language models, else samples/s."""
    if stats.get("tokens_per_s"):
        text = f"{stats['tokens_per_s']:,.0f} tok/s"
        if stats.get("flops_per_s"):
            text += f" {stats['flops_per_s'] / 1e9:,.1f} GFLOP/s"
        if stats.get("mfu"):
            text += f" MFU {stats['mfu']:.0%}"
        return text
    return f"{stats.get('samples_per_s') or 0:,.1f} samples/s"


def clock(seconds: float) -> str:
    """1:02:03 or 2:03."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TrainProgress:
    """A progress bar over optimizer steps showing loss, throughput and ETA on a terminal; without one,
    a plain line every `every` steps (and at the last): step/total, loss, lr, throughput, elapsed, ETA.
    Nothing under --quiet."""

    def __init__(self, total: int, start: int = 0, description: str = "train", every: int = 1):
        self.live = console.is_terminal and not _brief
        self.plain = not console.is_terminal and not _brief
        self.total, self.start, self.every = total, start, max(1, every)
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

    def advance(self, stats: dict[str, Any]) -> None:
        """Move the bar to `stats["step"]`; without a terminal, print a plain line every `every` steps."""
        step, loss = int(stats["step"]), stats.get("loss")
        shown = "-" if loss is None else f"{loss:.4f}"
        rate = rate_text(stats)
        self.progress.update(self.task, completed=step, loss=shown, rate=rate)
        if self.plain and (step % self.every == 0 or step == self.total):
            console.print(Text(self.line(step, shown, stats.get("lr"), rate)), soft_wrap=True)

    def line(self, step: int, loss: str, lr: float | None, rate: str) -> str:
        elapsed = time.perf_counter() - self.start_time
        done = step - self.start
        eta = elapsed / done * (self.total - step) if done > 0 else None
        return (
            f"step {step}/{self.total} ({step / max(self.total, 1):.0%})  loss {loss}  "
            f"lr {'-' if lr is None else f'{lr:.3g}'}  {rate}  elapsed {clock(elapsed)}  "
            f"eta {'-' if eta is None else clock(eta)}"
        )

    def note(self, message: str) -> None:
        """A line above the bar (or a plain log line when there is no live bar); none under --quiet."""
        if not _brief:
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
        disable=not console.is_terminal or _brief,
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
