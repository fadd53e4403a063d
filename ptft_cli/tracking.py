"""Experiment trackers (`logging.report_to`): TensorBoard, Weights & Biases, MLflow behind one interface.

    check(cfg)                  before anything is written: every named library is installed
    start(cfg, run, step)       -> Trackers (imports the libraries; rank 0 only, the runner decides)
    trackers.record(record)     one metrics.jsonl record -> scalars `train/loss`, `eval/accuracy`, ...
    trackers.image(name, path)  loss.png, the confusion matrix
    trackers.close()

Each library is an optional extra, imported only when a run names it. The loop never sees this
module: the runner hands it the `record` callable next to metrics.jsonl's writer.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ptft_cli.errors import ConfigError

# name in report_to -> (module imported, pip requirement)
LIBRARIES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
DEFAULT_PROJECT = "ptft"


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (`wandb` alone takes seconds)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(cfg: Any) -> None:
    """Refuse a run whose trackers are not installed (all of them named at once), before any write."""
    problems = [
        ConfigError(
            f"{name} is not installed",
            where=cfg.where("logging.report_to"),
            key="logging.report_to",
            hint=f"pip install {pip} (or pip install 'ptft[{name}]'), or remove {name} from logging.report_to",
        )
        for name in dict.fromkeys(cfg.logging.report_to)
        for module, pip in [LIBRARIES[name]]
        if not installed(module)
    ]
    if problems:
        raise ConfigError.many(problems)


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars: an evaluation's `eval_accuracy` becomes
    `eval/accuracy`, a training record's `loss` `train/loss`; the step is the x axis, not a scalar;
    missing values (null) are left out."""
    evaluation = any(k.startswith("eval_") for k in record)
    prefix = "eval" if evaluation else "train"
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        name = key[5:] if key.startswith("eval_") else key
        out[f"{prefix}/{name}"] = float(value)
    return out


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """The resolved config as `section.key -> value` hyperparameters (lists and null as text)."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "special_tokens":
            out.update(flat_params(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[prefix + key] = value
        else:
            out[prefix + key] = "null" if value is None else str(value)
    return out


@dataclass
class RunInfo:
    """What a tracker needs to open its run."""

    directory: Path  # the run's output_dir: local tracker files go below it
    name: str
    project: str
    config: dict[str, Any]  # the resolved config (config.yaml's content)
    config_text: str  # config.yaml's text, shown as is where a tracker takes text
    start_step: int = 0  # a resumed run continues after this step


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def image(self, name: str, path: Path, step: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class Trackers:
    """Every tracker of the run; each call goes to all of them."""

    trackers: list[Tracker] = field(default_factory=list)
    step: int = 0  # the last step recorded (images are filed there)

    def record(self, record: dict[str, Any]) -> None:
        self.step = int(record.get("step", self.step))
        values = scalars(record)
        if values:
            for t in self.trackers:
                t.log(values, self.step)

    def image(self, name: str, path: Path) -> None:
        if path.is_file():
            for t in self.trackers:
                t.image(name, path, self.step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []


def start(names: list[str], info: RunInfo) -> Trackers:
    """Open each named tracker (importing its library now)."""
    openers = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
    return Trackers([openers[name](info) for name in dict.fromkeys(names)], info.start_step)


class TensorBoard:
    """Event files in `<output_dir>/tensorboard/`; a resumed run hides the events a killed one wrote
    after its checkpoint (`purge_step`), so no step appears twice."""

    def __init__(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        purge = info.start_step + 1 if info.start_step else None
        self.writer = SummaryWriter(log_dir=str(info.directory / "tensorboard"), purge_step=purge)
        if not info.start_step:
            self.writer.add_text("config", "```yaml\n" + info.config_text + "\n```", 0)
            # the HPARAMS tab, written into this run's own file (add_hparams would make a sub-run)
            for summary in hparams(flat_params(info.config), {}):
                self.writer.file_writer.add_summary(summary)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps what it logged, like metrics.jsonl

    def image(self, name: str, path: Path, step: int) -> None:
        from matplotlib import image as mpimg

        pixels = mpimg.imread(str(path))  # (H, W, 4) floats in [0, 1] for a PNG
        self.writer.add_image(name, pixels[..., :3], step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wandb_mode() -> str | None:
    """WANDB_MODE decides when set; without it and without credentials, offline (a run must never stop
    to ask for a login): `wandb sync` uploads later."""
    if os.environ.get("WANDB_MODE"):
        return None  # wandb reads it itself
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        logged_in = "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        logged_in = False
    return None if os.environ.get("WANDB_API_KEY") or logged_in else "offline"


class WandB:
    """A W&B run (files in `<output_dir>/wandb/`); a resumed run is a new W&B run."""

    def __init__(self, info: RunInfo) -> None:
        self.wandb = importlib.import_module("wandb")
        options: dict[str, Any] = {
            "project": os.environ.get("WANDB_PROJECT") or info.project,
            "name": info.name,
            "dir": str(info.directory),
            "config": info.config,
        }
        mode = _wandb_mode()
        if mode is not None:
            options["mode"] = mode
        self.run = self.wandb.init(**options)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    """An MLflow run: MLFLOW_TRACKING_URI when set, else a file store in `<output_dir>/mlruns`."""

    PARAMS_PER_CALL = 100  # MLflow's batch limit for parameters

    def __init__(self, info: RunInfo) -> None:
        self.mlflow = importlib.import_module("mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri((info.directory / "mlruns").resolve().as_uri())
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or info.project)
        self.run = self.mlflow.start_run(run_name=info.name)
        params = list(flat_params(info.config).items())
        for i in range(0, len(params), self.PARAMS_PER_CALL):
            self.mlflow.log_params(dict(params[i : i + self.PARAMS_PER_CALL]))
        config_yaml = info.directory / "config.yaml"
        if config_yaml.is_file():
            self.mlflow.log_artifact(str(config_yaml))

    def log(self, values: dict[str, float], step: int) -> None:
        # MLflow metric names allow letters, digits, `_-./ `: `train/loss` stays as it is
        self.mlflow.log_metrics(values, step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.mlflow.log_artifact(str(path))

    def close(self) -> None:
        self.mlflow.end_run()
