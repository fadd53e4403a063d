"""Experiment tracking (logging.report_to), plain step lines without a terminal, --quiet, and the
train-vs-validation loss curve.

TensorBoard is real (installed here): its event files are read back with TensorBoard's own reader.
W&B and MLflow are not installed: fake modules in sys.modules record the calls their documented
APIs receive, and a blocked import checks the one-line error for a missing library.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ptft_cli import console, metrics, tracking

SHORT = ["--set", "training.epochs=2"]  # 12 steps of 16 examples, evaluated at steps 6 and 12


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class FakeWandb(types.ModuleType):
    """wandb's documented surface: init(...) -> run; run.log(dict, step=); run.finish(); Image(path)."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.calls: list[tuple[str, Any]] = []
        fake = self

        class Image:
            def __init__(self, path: str) -> None:
                self.path = path

        class Run:
            def log(self, values: dict[str, Any], step: int) -> None:
                fake.calls.append(("log", (dict(values), step)))

            def finish(self) -> None:
                fake.calls.append(("finish", None))

        self.Image, self._Run = Image, Run

    def init(self, **options: Any) -> Any:
        self.calls.append(("init", options))
        return self._Run()


class FakeMlflow(types.ModuleType):
    """mlflow's fluent API: set_tracking_uri, set_experiment, start_run, log_params, log_metrics,
    log_artifact, end_run."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple[str, Any]] = []
        for name in ("set_tracking_uri", "set_experiment", "log_params", "log_artifact", "end_run"):
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, (args, kwargs)))

    def start_run(self, **kwargs: Any) -> object:
        self.calls.append(("start_run", kwargs))
        return object()

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.calls.append(("log_metrics", (dict(values), step)))


def expected_scalars(records: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """tag -> {step: value} for every scalar of metrics.jsonl, as the trackers must receive them."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        kind = "eval" if any(k.startswith("eval_") for k in r) else "train"
        for key, value in r.items():
            if key == "step" or value is None:
                continue
            out.setdefault(f"{kind}/{key.removeprefix('eval_')}", {})[r["step"]] = value
    return out


def assert_tensorboard_holds(folder: Path, records: list[dict[str, Any]]) -> set[str]:
    """TensorBoard's own reader finds exactly the scalars of `records`, each at its step once;
    returns the image tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = expected_scalars(records)
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["scalars"]) == set(expected)
    for tag, points in expected.items():
        events = acc.Scalars(tag)
        logged = {e.step: e.value for e in events}
        assert len(events) == len(logged) and logged.keys() == points.keys(), (tag, [e.step for e in events])
        for step, value in points.items():
            assert math.isclose(logged[step], value, rel_tol=1e-6, abs_tol=1e-9), (tag, step)
    assert "config/text_summary" in tags["tensors"]  # the resolved config, as text
    return set(tags["images"])


def test_every_record_reaches_tensorboard_wandb_and_mlflow(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    config = write_config("logging:\n  report_to: [tensorboard, wandb, mlflow]\n  project: demo\n")
    result = cli("finetune", "--config", config, *SHORT, "--set", "training.keep_checkpoints=2")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    records = read_jsonl(run / "metrics.jsonl")
    expected = expected_scalars(records)
    assert {"train/loss", "train/lr", "train/samples_per_s", "eval/loss", "eval/accuracy"} <= set(expected)
    assert len(records) == 6 + 2  # log_every 2 over 12 steps, and 2 evaluations

    # TensorBoard: its own reader finds every scalar of metrics.jsonl at its step, and the images
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert {"loss", "eval/confusion_matrix"} <= assert_tensorboard_holds(run / "tensorboard", records)

    # W&B: one offline run (no credentials here) with the resolved config; the same scalars
    (name, init), *rest = wandb.calls
    assert name == "init" and init["mode"] == "offline" and init["project"] == "demo"
    assert init["name"] == "run" and init["dir"] == str(run)
    assert (
        init["config"]["training"]["learning_rate"] == 1e-2 and init["config"]["logging"]["project"] == "demo"
    )
    logged = [args for kind, args in rest if kind == "log"]
    scalars_logged = [
        (values, step) for values, step in logged if all(isinstance(v, float) for v in values.values())
    ]
    assert len(scalars_logged) == len(records)
    for (values, step), record in zip(scalars_logged, records):
        assert step == record["step"] and values == tracking.scalars(record)
    images = {k: v.path for values, _ in logged for k, v in values.items() if isinstance(v, wandb.Image)}
    assert images == {"loss": str(run / "loss.png"), "eval/confusion_matrix": images["eval/confusion_matrix"]}
    assert rest[-1] == ("finish", None)

    # MLflow: a file store in the run directory, params flattened, the same metrics, the images
    kinds = [kind for kind, _ in mlflow.calls]
    assert kinds[:3] == ["set_tracking_uri", "set_experiment", "start_run"] and kinds[-1] == "end_run"
    assert mlflow.calls[0][1][0] == ((run / "mlruns").resolve().as_uri(),)
    assert mlflow.calls[1][1][0] == ("demo",)
    params = {k: v for kind, call in mlflow.calls if kind == "log_params" for k, v in call[0][0].items()}
    assert params["training.learning_rate"] == 1e-2 and params["model.dropout"] == 0.0
    assert params["data.max_train_samples"] == "null" and params["training.adam_betas"] == "[0.9, 0.999]"
    metric_calls = [args for kind, args in mlflow.calls if kind == "log_metrics"]
    assert [(v, s) for v, s in metric_calls] == [(tracking.scalars(r), r["step"]) for r in records]
    artifacts = [call[0][0] for kind, call in mlflow.calls if kind == "log_artifact"]
    assert artifacts[0] == str(run / "config.yaml") and str(run / "loss.png") in artifacts
    assert any(a.endswith("confusion_matrix.png") for a in artifacts)

    # Resumed from the step-6 checkpoint, the run rewrites steps 8-12: TensorBoard shows each step
    # once, with the values of the new metrics.jsonl
    first_steps = [r["step"] for r in records]
    result = cli(
        "finetune", "--config", config, *SHORT, "--set", "logging.report_to=[tensorboard]",
        "--resume", run / "checkpoints" / "step-00000006",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == first_steps == [2, 4, 6, 6, 8, 10, 12, 12]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert_tensorboard_holds(run / "tensorboard", records)


def test_missing_tracker_is_one_line_naming_pip_and_nothing_is_written(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = write_config("logging:\n  report_to: [wandb, mlflow]\n")
    for command in ("finetune", "validate"):
        result = cli(command, "--config", config)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 2 and "Traceback" not in result.output
        line = re.compile(
            rf"error: {re.escape(str(config))}:\d+: logging.report_to: (\w+) is not installed; pip install \1 "
        )
        assert [line.match(x).group(1) for x in lines] == ["wandb", "mlflow"], lines
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (
            "report_to: [tensorbord]",
            "logging.report_to: 'tensorbord' is not one of tensorboard, wandb, mlflow (did you mean 'tensorboard'?)",
        ),
        (
            "report_to: tensorboard",
            "logging.report_to: expected a list of tensorboard | wandb | mlflow, got 'tensorboard'",
        ),
        ('project: ""', "logging.project: must not be empty"),
        ("run_name: [a]", "logging.run_name: expected a string, got ['a']"),
        ("reportto: [wandb]", "logging.reportto: unknown key; did you mean `logging.report_to`?"),
    ],
)
def test_bad_logging_values_are_one_line_config_errors(cli, write_config, yaml: str, message: str) -> None:
    config = write_config(f"logging:\n  {yaml}\n")
    result = cli("finetune", "--config", config)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {config}:") and message in line, line


STEP_LINE = re.compile(
    r"^step (\d+)/(\d+) \(\d+%\)  loss (\S+)  lr (\S+)  ([\d,.]+) samples/s  elapsed (\d+:\d\d)  eta (\S+)$"
)


def test_plain_step_lines_come_at_least_every_tenth_of_the_run(cli, write_config) -> None:
    # log_every far above the run's length: the plain lines still come every 10%
    result = cli("finetune", "--config", write_config(), "--set", "training.log_every=1000", *SHORT)
    assert result.exit_code == 0, result.output
    matches = [STEP_LINE.match(line) for line in result.output.splitlines() if line.startswith("step ")]
    steps = [int(m.group(1)) for m in matches if m]
    assert steps, result.output
    total = int(next(m for m in matches if m).group(2))
    assert total == 12 and steps[-1] == total
    gaps = [b - a for a, b in zip([0, *steps], steps)]
    assert max(gaps) <= total / 10 + 1e-9, steps
    for m in filter(None, matches):
        assert float(m.group(3)) > 0 and float(m.group(4)) >= 0 and float(m.group(5).replace(",", "")) > 0
    assert "\x1b[" not in result.output  # no colour or cursor codes in a log file


def test_quiet_prints_only_the_summary(cli, write_config) -> None:
    config = write_config()
    result = cli("finetune", "--config", config, "--quiet", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert not any(line.startswith("step ") for line in out.splitlines()), out
    assert "ptft finetune" not in out and "schedule" not in out  # no header
    assert out.splitlines()[0] == "results" and "accuracy" in out and "model saved to" in out
    result = cli("evaluate", "--config", config, "-q")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "metrics written to" in result.output
    # errors still show under --quiet
    result = cli("finetune", "--config", config, "--quiet", "--set", "training.epochs=0")
    assert result.exit_code == 2 and "training.epochs" in result.output


def test_plain_interval_is_log_every_or_a_tenth_of_the_run() -> None:
    assert console.plain_every(1000, 10) == 10
    assert console.plain_every(1000, 500) == 100
    assert console.plain_every(12, 1000) == 1
    assert console.plain_every(5, 3) == 1


def test_scalars_are_keyed_by_kind_and_skip_missing_values() -> None:
    train = {"step": 4, "epoch": 0.5, "lr": 1e-3, "grad_norm": None, "loss": 0.7, "samples_per_s": 12.0}
    assert tracking.scalars(train) == {
        "train/epoch": 0.5,
        "train/lr": 1e-3,
        "train/loss": 0.7,
        "train/samples_per_s": 12.0,
    }
    evaluation = {"step": 6, "epoch": 1, "eval_loss": 0.5, "eval_accuracy": 0.75}
    assert tracking.scalars(evaluation) == {"eval/epoch": 1.0, "eval/loss": 0.5, "eval/accuracy": 0.75}


def overfitting_records() -> list[dict[str, Any]]:
    """Training loss falls throughout; validation loss falls, then rises after step 8 (overfitting)."""
    records: list[dict[str, Any]] = []
    validation = {4: 0.9, 8: 0.7, 12: 0.8, 16: 1.0}
    for step in range(2, 17, 2):
        records.append({"step": step, "epoch": step / 4, "lr": 1e-3, "loss": 1.0 - 0.05 * step})
        if step in validation:
            records.append(
                {"step": step, "epoch": step / 4, "eval_loss": validation[step], "eval_accuracy": 0.5}
            )
    return records


def test_loss_curves_pair_training_and_validation_loss_at_each_evaluation() -> None:
    curves = metrics.loss_curves(overfitting_records())
    assert [s for s, _ in curves.train] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert curves.validation == [(4, 0.9), (8, 0.7), (12, 0.8), (16, 1.0)]
    # the mean training loss over the steps since the previous evaluation
    expected = [(4, (0.9 + 0.8) / 2), (8, (0.7 + 0.6) / 2), (12, (0.5 + 0.4) / 2), (16, (0.3 + 0.2) / 2)]
    assert [s for s, _ in curves.train_at_eval] == [s for s, _ in expected]
    assert all(math.isclose(a, b) for (_, a), (_, b) in zip(curves.train_at_eval, expected))
    assert curves.lowest_validation() == (8, 0.7)


def test_loss_png_draws_both_curves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: dict[str, tuple[list[float], list[float]]] = {}
    save = metrics._save_png

    def capture(fig: Any, path: Path) -> None:
        for line in fig.axes[0].get_lines():
            drawn[line.get_label()] = (list(line.get_xdata()), list(line.get_ydata()))
        save(fig, path)

    monkeypatch.setattr(metrics, "_save_png", capture)
    path = tmp_path / "loss.png"
    metrics.plot_losses(overfitting_records(), path, "loss")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["validation loss"] == ([4, 8, 12, 16], [0.9, 0.7, 0.8, 1.0])
    assert drawn["train loss (per evaluation)"][0] == [4, 8, 12, 16]
    assert drawn["train loss (per log)"][0] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert drawn["lowest validation loss (step 8)"][0] == [8, 8]
