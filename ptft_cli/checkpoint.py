"""The run directory: its whole layout, claiming it, atomic writes, and resumable checkpoints.

    <output_dir>/
      config.yaml          the resolved config (absolute paths, every default filled in)
      env.json             python / torch / transformers versions, device, precision, git sha
      split.json           the validation rows held out of the training file (when a fraction was held out)
      metrics.jsonl        one JSON object per logged step or evaluation
      results.json         final and best metrics when training ends
      loss.png             training loss by step, training and validation loss at each evaluation
      tensorboard/ wandb/ mlruns/   experiment trackers' own files (logging.report_to)
      model/               final model + tokenizer (the best one when training.best_metric is set)
      checkpoints/step-N/  a resumable checkpoint (see `save_checkpoint`)
      eval/                `ptft evaluate`: metrics.json, confusion_matrix.png
      predictions.jsonl    `ptft predict` (unless --output says otherwise)
      explanations.jsonl   `ptft explain`: per-token attributions (unless --output says otherwise)
      explanations.html    the same as a self-contained page (beside the .jsonl)

Every file is written to a temporary name and renamed into place, so a kill at any moment leaves
the previous version intact. A checkpoint becomes visible only once complete (its `checkpoint.json`
lists every file and its size, and is written last); a partial one is never picked up. A run never
writes into a directory that holds another run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptft_cli.errors import PtftError, RunDirError

RUN_MARKER = ".ptft-run"  # written first by every run: only a folder holding it is a run ptft may replace
LOCK = ".ptft-lock"  # held (flock) by the process writing the run
LEGACY_HEADER = "# resolved by ptft from"  # the first line of config.yaml in runs written before the marker
CHECKPOINT_MARKER = "checkpoint.json"
CHECKPOINT_FORMAT = 1
SYSTEM_DIRS = ("/proc", "/sys", "/dev")


class SaveError(PtftError):
    """A file could not be written (disk full, no permission); the previous version survives."""


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    marker = property(lambda self: self.path / RUN_MARKER)
    config_yaml = property(lambda self: self.path / "config.yaml")
    env_json = property(lambda self: self.path / "env.json")
    split_json = property(lambda self: self.path / "split.json")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    results_json = property(lambda self: self.path / "results.json")
    loss_png = property(lambda self: self.path / "loss.png")
    model_dir = property(lambda self: self.path / "model")
    adapter_dir = property(lambda self: self.path / "adapter")  # LoRA runs: the adapters alone (peft)
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    eval_dir = property(lambda self: self.path / "eval")
    predictions = property(lambda self: self.path / "predictions.jsonl")
    explanations = property(lambda self: self.path / "explanations.jsonl")

    def holds_run(self) -> bool:
        """A ptft run: the marker only ptft writes (or, for older runs, a config.yaml ptft wrote)."""
        if self.marker.is_file():
            return True
        try:
            with open(self.config_yaml, encoding="utf-8") as f:
                return f.readline().startswith(LEGACY_HEADER)
        except (OSError, UnicodeDecodeError):
            return False

    def check_location(self, protected: dict[Path, str], where: str) -> None:
        """output_dir may not hold the config or a data file (`protected`: path -> what it is), at any
        depth: replacing the run there would delete them. Nor a system folder, a file, or inside a file."""
        check_output_dir(self.path, "output_dir", where)  # first: it refuses paths the system cannot use
        try:
            p = self.path.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise RunDirError(f"{self.path} is not a usable path", where=where, key="output_dir") from None
        for q, what in protected.items():
            if p in q.resolve().parents:
                raise RunDirError(
                    f"{p} holds {what} {q}",
                    where=where,
                    key="output_dir",
                    hint="use a folder of its own for the run, e.g. runs/NAME next to the config",
                )

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
        is_run = self.holds_run()
        if is_run:
            _check_unlocked(p, where)
        if overwrite and is_run:
            return
        if is_run:
            raise RunDirError(
                f"{p} already holds a run",
                where=where,
                key="output_dir",
                hint="choose a new output_dir, pass --resume auto to continue it, or --overwrite to replace it",
            )
        raise RunDirError(
            f"{p} is not empty and is not a ptft run ({len(entries)} entries)",
            where=where,
            key="output_dir",
            hint="point output_dir at a new or empty directory; ptft never deletes files it did not write",
        )

    def claim(self, *, replace: bool, where: str) -> Claim:
        """Take the directory for this run: lock it, and with `replace` move the previous run aside
        (it is deleted once this run saves its first checkpoint, and put back if this run fails first)."""
        aside = None
        if replace and self.holds_run():
            aside = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, aside)
        existed = self.path.is_dir()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if aside is not None:
                os.replace(aside, self.path)
            raise _disk_error(self.path, e) from None
        fd = _lock(self.path, where)
        if not self.marker.exists():
            atomic_write_json(self.marker, {"ptft_run": True, "pid": os.getpid()})
        return Claim(self, fd, aside, fresh=not existed or aside is not None)

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary folders of a killed save are ignored)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step-*") if is_complete(p))

    def latest_checkpoint(self) -> Path | None:
        done = self.checkpoints()
        return done[-1] if done else None

    def remove_temporaries(self) -> None:
        """Folders left by a save or a deletion that was killed halfway."""
        for folder in (self.path, self.checkpoints_dir):
            if folder.is_dir():
                for p in folder.glob(".tmp-*"):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                for p in folder.glob(".trash-*"):
                    shutil.rmtree(p, ignore_errors=True)


def _short(p: Path) -> str:
    text = str(p)
    return text if len(text) <= 120 else text[:60] + "..." + text[-50:]


def check_output_file(path: Path, key: str, where: str, protected: dict[str, str]) -> None:
    """A file `predict` will write: not a folder, not one of the `protected` files (path -> what it
    is: the input, a data file, the config), in a writable folder."""
    check_output_dir(path.parent, key, where)
    p = Path(os.path.abspath(path))
    if p.is_dir():
        raise RunDirError(
            f"{p} is a folder", where=where, key=key, hint="name a file, e.g. predictions.jsonl"
        )
    for other, what in protected.items():
        if other and p.resolve() == Path(other).resolve():
            raise RunDirError(
                f"{p} is {what}", where=where, key=key, hint="write the predictions to another file"
            )
    if p.is_file() and not _written_by_predict(p):
        raise RunDirError(
            f"{p} exists and does not hold ptft predictions",
            where=where,
            key=key,
            hint="choose another file name; ptft replaces only its own prediction files",
        )


def _written_by_predict(path: Path) -> bool:
    """An earlier `ptft predict` output (its first line: a JSON record or a CSV header with an id)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if not first.strip():
        return path.stat().st_size == 0
    if first.startswith("id,"):
        return True
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "id" in record


def check_output_dir(path: Path, key: str, where: str) -> None:
    """A folder ptft will create or write into: not a file, nothing above it a file, writable."""
    p = Path(os.path.abspath(path))
    if any(str(p) == d or str(p).startswith(d + "/") for d in SYSTEM_DIRS):
        raise RunDirError(f"{p} is a system folder", where=where, key=key, hint="use a folder of your own")
    try:
        existing = next((a for a in (p, *p.parents) if a.exists()), None)
        too_long = len(os.fsencode(p)) >= os.pathconf("/", "PC_PATH_MAX") or any(
            len(os.fsencode(part)) > os.pathconf("/", "PC_NAME_MAX") for part in p.parts
        )
    except (OSError, ValueError) as e:
        raise RunDirError(f"{_short(p)} is not a usable path ({e})", where=where, key=key) from None
    if too_long:
        raise RunDirError(f"{_short(p)} is longer than the file system allows", where=where, key=key)
    if existing is not None and not existing.is_dir():
        raise RunDirError(
            f"{existing} is a file" + ("" if existing == p else f", so {p} cannot be created"),
            where=where,
            key=key,
            hint="point it at a folder",
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"{existing} is not writable", where=where, key=key)


@dataclass
class Claim:
    """A run directory this process writes: its lock, and the run it replaces (kept aside)."""

    run: RunDir
    lock_fd: int | None
    aside: Path | None  # the replaced run, until this one saves a checkpoint
    fresh: bool  # the directory was created (or emptied) for this run

    def saved(self) -> None:
        """This run has a checkpoint: the run it replaced can go."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def failed(self, reached_first_step: bool) -> None:
        """The run stopped on an error before saving anything: a replaced run comes back; a new run
        that never took a step leaves nothing behind (it is not a run)."""
        if self.aside is not None:
            shutil.rmtree(self.run.path, ignore_errors=True)
            os.replace(self.aside, self.run.path)
            self.aside = None
        elif self.fresh and not reached_first_step:
            shutil.rmtree(self.run.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor releases the flock
            self.lock_fd = None


def _lock(folder: Path, where: str) -> int | None:
    """An exclusive lock on `folder`, held until the process ends; another live holder is refused.
    (flock locks die with their process, so a killed run never leaves a stale one.)"""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return None
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        error = _locked(folder, fd, where)
        os.close(fd)
        raise error from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _locked(folder: Path, fd: int, where: str) -> RunDirError:
    holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
    return RunDirError(
        f"{folder} is being written by another ptft process (pid {holder})",
        where=where,
        key="output_dir",
        hint="wait for it to finish, or use another output_dir",
    )


def _check_unlocked(folder: Path, where: str) -> None:
    """Refuse a run directory another live process is writing (touching nothing)."""
    try:
        import fcntl

        fd = os.open(folder / LOCK, os.O_RDONLY)
    except (ImportError, OSError):
        return  # no lock file: nobody writes it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _locked(folder, fd, where) from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _disk_error(path: Path, e: BaseException, needed: int | None = None) -> SaveError:
    code = e.errno if isinstance(e, OSError) else errno.ENOSPC  # libraries' own "no space" errors
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
    }.get(code or 0, getattr(e, "strerror", None) or str(e).splitlines()[0][:200])
    if needed:
        reason += f" (needs about {needed / 1e6:,.1f} MB, {_free(path) / 1e6:,.1f} MB free)"
    return SaveError(
        f"cannot write {path}: {reason}",
        where=str(path.parent),
        hint="free space or fix permissions, then continue with --resume auto; earlier files are intact",
    )


def _free(path: Path) -> int:
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def _out_of_space(e: BaseException, path: Path) -> bool:
    """safetensors and torch.save report a full disk in their own exception types."""
    text = str(e)
    return "No space left" in text or "unexpected pos" in text or _free(path) < (1 << 20)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode open() would
    except OSError as e:
        raise _disk_error(path, e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _disk_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_dir(dest: Path, write: Callable[[Path], None], needed: int | None = None) -> None:
    """Fill a temporary sibling folder with `write(folder)`, fsync it, then swap it in for `dest`
    (with one atomic exchange where the system has it, so `dest` is never missing). `needed`:
    the bytes it will take, checked against the free space first."""
    if needed and _free(dest.parent) < needed:
        raise _disk_error(dest, OSError(errno.ENOSPC, "no space"), needed)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as e:
        raise _disk_error(dest, e) from None
    try:
        write(tmp)
        _apply_umask(tmp)
        _fsync_tree(tmp)
        if dest.exists():
            if not _exchange(tmp, dest):
                old = dest.with_name(f".trash-{dest.name}-{os.getpid()}")
                os.replace(dest, old)
                os.replace(tmp, dest)
                tmp = old
            shutil.rmtree(tmp, ignore_errors=True)  # the previous version, now under the temporary name
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) or (isinstance(e, Exception) and _out_of_space(e, dest)):
            raise _disk_error(dest, e, needed) from None
        raise


def _apply_umask(folder: Path) -> None:
    """Libraries write some files 0600 (safetensors does): give every file and folder the mode a
    plain open()/mkdir() would under the user's umask."""
    mask = _umask()
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_pretrained(model: Any, tokenizer: Any, dest: Path, weights: dict[str, Any] | None = None) -> None:
    """`save_pretrained` of model and tokenizer (safetensors), atomically replacing `dest`.
    `weights`: the state dict to save instead of the model's own (FSDP's gathered shards, LoRA's
    merged weights)."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True, **({"state_dict": weights} if weights else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    atomic_save_dir(dest, write, needed=_weight_bytes(model))


def save_tensors_dir(config: Any, tensors: dict[str, Any], tokenizer: Any, dest: Path) -> None:
    """A model directory from a config and the exact tensors to store (a compressed model's int8
    weights and scales, which `save_pretrained` cannot write), atomically replacing `dest`."""
    from safetensors.torch import save_file

    def write(folder: Path) -> None:
        config.save_pretrained(folder)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    atomic_save_dir(dest, write, needed=sum(t.numel() * t.element_size() for t in tensors.values()))


def _weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Snapshot:
    """What a checkpoint holds besides the loop state; `opt` is a `loop.Optimization`."""

    model: Any
    tokenizer: Any
    opt: Any
    config_yaml: str  # the resolved config, to refuse a resume whose config changed
    data_files: dict[str, int]  # training/validation files and their sizes, to notice edited data


def save_checkpoint(run: RunDir, state: Any, snap: Snapshot, tensors: dict[str, Any], *, keep: int) -> Path:
    """A resumable checkpoint of `state` (a `loop.TrainState`) in `checkpoints/step-N/`, with the
    weights, optimizer state and random generators `distributed.training_tensors` gathered:

        model.safetensors, config.json, tokenizer files   the weights, loadable by transformers
        training_state.pt    optimizer (by parameter name), scheduler, grad scaler, torch/CUDA RNG of
                             every process (torch.load weights_only); nothing depends on the number
                             of processes, so a run resumes on more or fewer
        data_position.npz    a stream's buffered tokens (streaming runs only)
        state.json           counters, data position, best-so-far, early stopping, python/numpy RNG
        metrics.jsonl        the metrics history up to this step
        config.yaml          the run's resolved config
        checkpoint.json      every file above with its size; written last, so it marks a complete checkpoint

    Then prunes old ones: the newest `keep` stay, and the one at the best step.
    """
    import torch

    dest = run.checkpoint(state.step)

    def write(folder: Path) -> None:
        weights = tensors["weights"]
        snap.model.save_pretrained(
            folder, safe_serialization=True, **({"state_dict": weights} if weights else {})
        )
        if snap.tokenizer is not None:
            snap.tokenizer.save_pretrained(folder)
        opt = snap.opt
        torch.save(
            {
                "optimizer": tensors["optimizer"],
                "scheduler": opt.scheduler.state_dict(),
                "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
                "rng_torch": [r["torch"] for r in tensors["rng"]],
                "rng_cuda": [r["cuda"] for r in tensors["rng"]],
            },
            folder / "training_state.pt",
        )
        if state.stream is not None:
            np.savez(folder / "data_position.npz", **state.stream["arrays"])
        if run.metrics_jsonl.is_file():
            shutil.copyfile(run.metrics_jsonl, folder / "metrics.jsonl")
        else:
            (folder / "metrics.jsonl").write_text("", encoding="utf-8")
        (folder / "config.yaml").write_text(snap.config_yaml, encoding="utf-8")
        extras = {"rng_python": _python_rng(), "rng_numpy": _numpy_rng(), "data_files": snap.data_files}
        (folder / "state.json").write_text(
            json.dumps({"state": state.to_dict(), **extras}, indent=1) + "\n", encoding="utf-8"
        )
        _fsync_tree(folder)  # everything is on disk before the marker says so
        files = {
            str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()
        }
        marker = {"format": CHECKPOINT_FORMAT, "step": state.step, "files": files}
        (folder / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")

    # weights, and AdamW's two moments per trainable weight (fp32)
    needed = _weight_bytes(snap.model) + sum(
        8 * p.numel() for p in snap.model.parameters() if p.requires_grad
    )
    atomic_save_dir(dest, write, needed=needed)
    _prune(run, keep=keep, best_step=state.best_step, newest=dest)
    return dest


def _prune(run: RunDir, *, keep: int, best_step: int | None, newest: Path) -> None:
    """Delete all but the newest `keep` checkpoints and the best one (renamed first, so a kill
    halfway through a deletion never leaves a half-deleted folder that looks like a checkpoint)."""
    done = [p for p in run.checkpoints() if p != newest] + [newest]
    done.sort()
    best = run.checkpoint(best_step) if best_step is not None else None
    for stale in done[: max(0, len(done) - keep)]:
        if stale == best:
            continue
        trash = stale.with_name(f".trash-{stale.name}")
        try:
            os.replace(stale, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


def is_complete(folder: Path) -> bool:
    """True when the marker exists and every file it lists is there with its size."""
    try:
        marker = json.loads((folder / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@dataclass
class Saved:
    """A checkpoint read back: the loop state, its saved config and data fingerprint."""

    path: Path
    state: dict[str, Any]  # loop.TrainState.to_dict() with the stream's arrays put back
    config_yaml: str
    data_files: dict[str, int]
    rng_python: Any
    rng_numpy: Any
    history: list[dict[str, Any]]  # metrics.jsonl up to the checkpoint


class DamagedCheckpoint(RunDirError):
    """A checkpoint marked complete whose files do not read back."""


def read_checkpoint(folder: Path) -> Saved:
    """The plain parts of a checkpoint (no torch): state, config, RNG of python and numpy."""
    try:
        saved = _read(folder)
        marker = json.loads((folder / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
        step = saved.state["step"]
        if not (isinstance(step, int) and step == marker["step"] and folder.name == f"step-{step:08d}"):
            raise ValueError(f"its state says step {step!r}")
        return saved
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise damaged(folder, e) from None


def damaged(folder: Path, e: BaseException) -> DamagedCheckpoint:
    reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return DamagedCheckpoint(
        f"checkpoint {folder} is damaged: {reason}",
        key="resume",
        hint="resume from an earlier checkpoint (--resume PATH), or start a new run",
    )


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Errors while restoring from a checkpoint's files mean the files are damaged."""
    try:
        yield
    except PtftError:
        raise
    except Exception as e:  # unreadable tensors, unpickling refused, wrong shapes, bad values
        raise damaged(folder, e) from None


def _read(folder: Path) -> Saved:
    """Everything but the tensors, checked as far as it can be without torch, so a damaged
    checkpoint is refused before the run's directory is touched."""
    meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    state = meta["state"]
    if state.get("stream") is not None:
        with np.load(folder / "data_position.npz", allow_pickle=False) as arrays:
            state["stream"]["arrays"] = {k: arrays[k] for k in arrays.files}
    metrics = (folder / "metrics.jsonl").read_text(encoding="utf-8")
    history = [json.loads(line) for line in metrics.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in history):
        raise ValueError("metrics.jsonl holds something other than records")
    saved = Saved(
        folder,
        state,
        (folder / "config.yaml").read_text(encoding="utf-8"),
        meta.get("data_files", {}),
        meta["rng_python"],
        meta["rng_numpy"],
        history,
    )
    _rng_states(saved)  # raises if they are not what getstate() gave
    return saved


def restore_training(saved: Saved, opt: Any, module: Any) -> None:
    """Optimizer, scheduler and scaler state from a checkpoint (`opt`: a `loop.Optimization` over
    `module`'s parameters, whole or sharded)."""
    import torch

    from ptft_cli.distributed import load_optimizer_state

    tensors = torch.load(saved.path / "training_state.pt", map_location="cpu", weights_only=True)
    load_optimizer_state(module, opt.optimizer, tensors["optimizer"])
    opt.scheduler.load_state_dict(tensors["scheduler"])
    if opt.scaler is not None and tensors["scaler"] is not None:
        opt.scaler.load_state_dict(tensors["scaler"])


def restore_rng(saved: Saved, rank: int) -> None:
    """Python, numpy, torch and CUDA random states as they were when the checkpoint was saved (this
    process's, by rank; a rank the saving run did not have starts a fresh generator seeded by the
    step and rank). Done last before the loop, after everything that draws random numbers."""
    import torch

    tensors = torch.load(saved.path / "training_state.pt", map_location="cpu", weights_only=True)
    if rank < len(tensors["rng_torch"]):
        torch.set_rng_state(tensors["rng_torch"][rank])
        if torch.cuda.is_available() and tensors["rng_cuda"][rank]:
            torch.cuda.set_rng_state_all(tensors["rng_cuda"][rank])
    else:
        torch.manual_seed(1_000_003 * saved.state["step"] + rank)
    python, numpy = _rng_states(saved)
    random.setstate(python)
    np.random.set_state(numpy)


def _rng_states(saved: Saved) -> tuple[Any, Any]:
    """The python and numpy generator states a checkpoint holds, in the form their setters take."""
    version, values, gauss = saved.rng_python
    python = (int(version), tuple(int(v) for v in values), gauss)
    name, keys, pos, has_gauss, cached = saved.rng_numpy
    numpy = (str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
    if len(python[1]) != 625 or numpy[1].shape != (624,):
        raise ValueError("its random generator states are malformed")
    return python, numpy


def _python_rng() -> list[Any]:
    version, values, gauss = random.getstate()
    return [version, list(values), gauss]


def _numpy_rng() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def restore_metrics(run: RunDir, saved: Saved) -> list[dict[str, Any]]:
    """The run's metrics.jsonl becomes the checkpoint's history (later records are dropped)."""
    atomic_write_text(run.metrics_jsonl, (saved.path / "metrics.jsonl").read_text(encoding="utf-8"))
    return saved.history


# ---------------------------------------------------------------------------------------------
# Results of evaluate and predict


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """.jsonl: one object per row. .csv: one column per field; a mapping field such as
    `probabilities` becomes one column per entry (`p_<label>`)."""
    if path.suffix.lower() == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    import csv
    import io

    def flat(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, dict):
                prefix = "p_" if key == "probabilities" else f"{key}_"
                out.update({f"{prefix}{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    flat_rows = [flat(r) for r in rows]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = list(flat_rows[0]) if flat_rows else []
    writer.writerow(header)
    for r in flat_rows:
        writer.writerow([r.get(k) for k in header])
    atomic_write_text(path, buf.getvalue())
