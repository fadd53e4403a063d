"""metrics.jsonl, plots and the environment record of a run."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per line; each line is flushed so a killed run keeps its history."""

    def __init__(self, path: Path, history: list[dict[str, Any]] | None = None):
        self.path = path
        self.records: list[dict[str, Any]] = list(history or [])  # what the file already holds

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _json_number(v) for k, v in record.items()}
        self.records.append(clean)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")


def _json_number(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # JSON has no NaN/inf
    return v


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def plot_losses(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss (per logged step) and validation loss (per evaluation) against the step."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None and "eval_loss" not in r]
    val = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if not train and not val:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save_png(fig, path)
    plt.close(fig)


def plot_compare(rows: list[dict[str, Any]], metrics: list[str], unit: str, path: Path) -> None:
    """The compression trade-off as bars per model: size on disk, throughput and the first metric."""
    plt = _pyplot()
    panels = [("size_mb", "size on disk (MB)"), ("per_second", f"{unit} / s")]
    panels += [(m, m) for m in metrics[:1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.5 * len(rows) + 1.6))
    names = [r["name"] for r in rows]
    for ax, (key, label) in zip(axes, panels):
        values = [float(r.get(key) or 0.0) for r in rows]
        ax.barh(names, values, color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.3g}", va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle("compression trade-off")
    _save_png(fig, path)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Confusion matrix heat map: rows are true labels, columns predictions, cells are counts."""
    plt = _pyplot()
    k = len(labels)
    size = min(12.0, 2.5 + 0.6 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(matrix[i][j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i][j] > peak / 2 else "black",
                )
    _save_png(fig, path)
    plt.close(fig)


def environment(device: str, precision: str, precision_why: str, config_dir: Path | None) -> dict[str, Any]:
    import torch
    import transformers

    from ptft_cli import __version__

    return {
        "ptft": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else platform.processor(),
        "precision": precision,
        "precision_reason": precision_why,
        "threads": torch.get_num_threads(),
        "command": sys.argv,
        "git_sha": _git_sha(config_dir),
    }


def _git_sha(folder: Path | None) -> str | None:
    if folder is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
