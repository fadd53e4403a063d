"""metrics.jsonl, plots and the environment record of a run."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass
class LossCurves:
    """What loss.png draws, as (step, loss) points."""

    train: list[tuple[int, float]]  # each training record (the mean over its log_every steps)
    train_at_eval: list[tuple[int, float]]  # mean training loss since the previous evaluation
    validation: list[tuple[int, float]]  # validation loss at each evaluation

    def lowest_validation(self) -> tuple[int, float] | None:
        return min(self.validation, key=lambda p: p[1]) if self.validation else None


def loss_curves(records: list[dict[str, Any]]) -> LossCurves:
    """Training and validation loss from metrics.jsonl's records. The training loss is also averaged
    over each stretch between two evaluations (each record weighted by the steps it covers), so the
    two curves share their points: a widening gap where validation rises is overfitting."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None and "eval_loss" not in r]
    validation = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    at_eval: list[tuple[int, float]] = []
    i, previous_step, previous_eval = 0, 0, 0
    for eval_step, _ in validation:
        total = weight = 0.0
        while i < len(train) and train[i][0] <= eval_step:
            step, loss = train[i]
            if step > previous_eval:
                total += loss * (step - previous_step)
                weight += step - previous_step
            previous_step, i = step, i + 1
        if weight:
            at_eval.append((eval_step, total / weight))
        previous_eval = eval_step
    return LossCurves(train, at_eval, validation)


def plot_losses(records: list[dict[str, Any]], path: Path, title: str) -> LossCurves | None:
    """loss.png: training loss per logged step (thin), training and validation loss at each evaluation
    (markers), and the step of the lowest validation loss. Returns what was drawn (None: nothing)."""
    curves = loss_curves(records)
    if not curves.train and not curves.validation:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if curves.train:
        ax.plot(*zip(*curves.train), label="train loss (per log)", linewidth=1.0, alpha=0.45)
    if curves.train_at_eval:
        ax.plot(*zip(*curves.train_at_eval), "s-", label="train loss (per evaluation)", linewidth=1.5)
    if curves.validation:
        ax.plot(*zip(*curves.validation), "o-", label="validation loss", linewidth=1.5)
    best = curves.lowest_validation()
    if best is not None and len(curves.validation) > 1:
        ax.axvline(best[0], color="grey", linestyle=":", label=f"lowest validation loss (step {best[0]})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save_png(fig, path)
    plt.close(fig)
    return curves


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


# Optional packages ptft uses when a config asks (pip name -> what needs it); none is imported here.
OPTIONAL = {
    "gguf": "model.gguf_file",
    "bitsandbytes": "lora.quantize_base: nf4 (CUDA)",
    "flash-attn": "model.attn_implementation: flash_attention_2",
    "tensorboard": "TensorBoard logging",
    "wandb": "Weights & Biases logging",
    "mlflow": "MLflow logging",
    "captum": "attributions (ptft explain)",
    "torchao": "compress.quantize: int8_weight",
    "accelerate": "the Trainer reference of scripts/bench_finetune_sst2.py",
}


def environment(device: str, precision: str, precision_why: str, config_dir: Path | None) -> dict[str, Any]:
    """The machine and software a run ran on (`env.json`; `ptft env` prints it)."""
    import torch
    import transformers

    from ptft_cli import __version__

    return {
        "ptft": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": _version("peft"),
        "extras": {name: _version(name) for name in OPTIONAL},  # null: not installed
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else _cpu_name(),
        "precision": precision,
        "precision_reason": precision_why,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "command": sys.argv,
        "git_sha": _git_sha(config_dir),
    }


def machine() -> dict[str, Any]:
    """`ptft env`: `environment` for what `device: auto` and `precision: auto` pick when training
    here (and the precision evaluate/predict use)."""
    from ptft_cli import hardware

    hw = hardware.resolve("auto", "auto", training=True, where="ptft env")
    env = environment(str(hw.device), hw.precision, hw.why, None)
    del env["command"], env["git_sha"]  # of a run, not of the machine
    env["eval_precision"] = hw.eval_precision
    return env


def _cpu_name() -> str:
    """The CPU's model name (`platform.processor()` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(dist: str) -> str | None:
    """An installed distribution's version, read from its metadata (the package is not imported)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


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
