"""The output directory: its layout, claiming it safely, and atomic saves of models and training state.

    <output_dir>/
      config.yaml        the resolved config (absolute paths, every default filled in)
      env.json           python / torch / transformers versions, device, precision, git sha
      metrics.jsonl      one JSON object per logged step or evaluation
      results.json       final and best metrics when training ends
      loss.png           training and validation loss by step
      model/             final model + tokenizer (the best one when training.best_metric is set)
      checkpoints/step-N/  model + optimizer + scheduler + loop state, for resuming

Every file is written to a temporary name and renamed into place, so a kill at any moment leaves
the previous version intact. A run never writes into a directory that holds another run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ptft_cli.errors import RunDirError

RUN_MARKERS = ("config.yaml", "env.json", "metrics.jsonl")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_yaml = property(lambda self: self.path / "config.yaml")
    env_json = property(lambda self: self.path / "env.json")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    results_json = property(lambda self: self.path / "results.json")
    loss_png = property(lambda self: self.path / "loss.png")
    model_dir = property(lambda self: self.path / "model")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")

    def check_claimable(self, *, overwrite: bool, where: str) -> None:
        """Refuse (before anything is written) if the directory holds another run or other files."""
        p = self.path
        if not p.exists():
            return
        if not p.is_dir():
            raise RunDirError("exists and is not a directory", where=where, key="output_dir", hint=f"{p}")
        entries = [e.name for e in p.iterdir()]
        if not entries:
            return
        is_run = any(m in entries for m in RUN_MARKERS)
        if overwrite and is_run:
            return
        if is_run:
            raise RunDirError(
                f"{p} already holds a run",
                where=where,
                key="output_dir",
                hint="choose a new output_dir, or pass --overwrite to replace that run",
            )
        raise RunDirError(
            f"{p} is not empty and is not a ptft run ({len(entries)} entries)",
            where=where,
            key="output_dir",
            hint="point output_dir at a new or empty directory",
        )

    def claim(self, *, overwrite: bool) -> None:
        """Create the directory; with overwrite, first remove the previous run (checked claimable)."""
        if overwrite and self.path.exists() and any(self.path.iterdir()):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:08d}"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (temporary `.tmp-*` folders from a killed save are ignored)."""
        if not self.checkpoints_dir.is_dir():
            return None
        done = sorted(p for p in self.checkpoints_dir.glob("step-*") if (p / "state.json").is_file())
        return done[-1] if done else None


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_dir(dest: Path, write: Any) -> None:
    """Fill a temporary sibling folder with `write(folder)`, then swap it in for `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
    try:
        write(tmp)
        _fsync_tree(tmp)
        if dest.exists():
            old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def save_pretrained(model: Any, tokenizer: Any, dest: Path) -> None:
    """`save_pretrained` of model and tokenizer (safetensors), atomically replacing `dest`."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    atomic_save_dir(dest, write)


def save_training_state(
    run: RunDir,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    state: dict,
    keep: int,
) -> Path:
    """A resumable checkpoint: a loadable model folder plus optimizer/scheduler/RNG state.

    `state.json` is written last inside the temporary folder, so a folder without it was never
    completed; the rename makes the whole checkpoint appear at once.
    """
    import torch

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            folder / "training_state.pt",
        )
        (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    dest = run.checkpoint(step)
    atomic_save_dir(dest, write)
    old = sorted(p for p in run.checkpoints_dir.glob("step-*") if p != dest)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return dest


def load_training_state(folder: Path) -> tuple[dict, dict]:
    """(loop state, tensors) of a checkpoint; tensors are loaded with weights_only=True (no pickled code)."""
    import torch

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    tensors = torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
    return state, tensors
