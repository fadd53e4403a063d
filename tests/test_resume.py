"""Exact resume: a run killed at any step and continued with `--resume auto` ends with the same
weights, bit for bit, and the same metrics.jsonl records as a run that was never interrupted.

The kill is simulated in-process by an exception nothing catches, raised from inside the optimizer
step or a backward pass (so after some micro-batches of an accumulated step), which leaves the disk
as a SIGKILL would: the last complete checkpoint, maybe a half-written one. One test kills a real
subprocess with SIGKILL. Timing fields of the records (samples/s, tokens/s, FLOP/s) are the only
ones allowed to differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_pretrain_cli import clm_config, mlm_config, write_corpus

TIMING = ("samples_per_s", "tokens_per_s", "flops_per_s")
REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands in for SIGKILL: no handler, no cleanup beyond what `finally` blocks do."""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    write_corpus(d / "a.txt", 150, seed=1)
    write_corpus(d / "b.txt", 150, seed=2)
    write_corpus(d / "valid.txt", 40, seed=3)
    return d


def kill_at(monkeypatch: pytest.MonkeyPatch, target: object, name: str, call: int) -> None:
    """Raise Killed on the `call`-th call of target.name."""
    original = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if k not in TIMING})
    return out


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert different == [], f"weights differ: {different[:5]}"
    assert records(a) == records(b)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert (ra["steps"], ra["final"], ra["best"]) == (rb["steps"], rb["final"], rb["best"])


def kill_and_resume(cli, monkeypatch, command: str, args: list[str], kill: tuple[object, str, int]) -> None:
    """Run `ptft command args...` with a kill at `kill`, then `--resume auto`."""
    with monkeypatch.context() as m:
        kill_at(m, *kill)
        with pytest.raises(Killed):
            cli(command, *args)
    result = cli(command, *args, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert "resume" in result.output


def backward() -> tuple[object, str]:
    return torch.Tensor, "backward"


def adamw_step() -> tuple[object, str]:
    return torch.optim.AdamW, "step"


# (name, extra --set arguments, where the kill happens)
CLASSIFICATION = [
    # 6 steps per epoch; checkpoints every 4 steps: killed in step 11, resumed from step 8 (mid-epoch)
    ("mid-epoch", ["training.save_every=4"], (*adamw_step(), 11)),
    # checkpoints at each evaluation (epoch ends): killed in step 14, resumed from step 12 (an epoch boundary)
    ("epoch boundary", [], (*adamw_step(), 14)),
    # 2 micro-batches per step: killed after the first micro-batch of step 8 (backward call 15)
    (
        "inside accumulation",
        ["training.batch_size=8", "training.gradient_accumulation_steps=2", "training.save_every=5"],
        (*backward(), 15),
    ),
    # best-model tracking and early stopping survive the kill
    (
        "best metric",
        ["training.best_metric=loss", "training.eval_every=3", "training.early_stopping_patience=4"],
        (*adamw_step(), 20),
    ),
]


@pytest.mark.parametrize(("name", "sets", "kill"), CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION])
def test_classification_resumes_exactly(
    cli, write_config, monkeypatch, tmp_path: Path, name, sets, kill
) -> None:
    config = write_config()
    common = ["--set", "model.dropout=0.1", "--set", "training.epochs=4"]  # dropout draws random numbers
    for s in sets:
        common += ["--set", s]
    result = cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert result.exit_code == 0, result.output
    kill_and_resume(cli, monkeypatch, "finetune", ["--config", str(config), *common], kill)
    assert_same_run(tmp_path / "whole", tmp_path / "run")


LANGUAGE_MODELS = [
    ("mlm", mlm_config, ["training.save_every=7"], (*adamw_step(), 17)),
    ("mlm+nsp", lambda tmp: mlm_config(tmp, task="mlm+nsp"), ["training.save_every=7"], (*adamw_step(), 17)),
    ("clm", clm_config, ["training.save_every=7"], (*adamw_step(), 24)),
    # a stream shorter than the run: the kill lands in the second pass over the corpus
    (
        "clm streaming",
        clm_config,
        ["data.streaming=true", "data.shuffle_buffer=32", "training.save_every=9", "training.max_steps=90"],
        (*adamw_step(), 70),
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "sets", "kill"), LANGUAGE_MODELS, ids=[c[0] for c in LANGUAGE_MODELS]
)
def test_language_models_resume_exactly(
    cli, corpus, monkeypatch, tmp_path: Path, name, make, sets, kill
) -> None:
    config = make(tmp_path)
    common = [
        "--set",
        "training.log_every=3",
        "--set",
        "training.eval_every=20",
        "--set",
        "data.cache_dir=null",
    ]
    for s in sets:
        common += ["--set", s]
    result = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert result.exit_code == 0, result.output
    kill_and_resume(cli, monkeypatch, "pretrain", ["--config", str(config), *common], kill)
    assert_same_run(tmp_path / "whole", tmp_path / "run")


def test_streaming_epoch_rolls_over_and_the_stream_position_is_saved(cli, corpus, tmp_path: Path) -> None:
    """The stream case above must really cross an epoch and resume mid-stream from saved state."""
    config = clm_config(tmp_path)
    sets = ["data.streaming=true", "data.shuffle_buffer=32", "training.max_steps=90", "training.save_every=9"]
    args = [a for s in sets for a in ("--set", s)]
    result = cli("pretrain", "--config", config, *args, "--set", "training.keep_checkpoints=20")
    assert result.exit_code == 0, result.output
    states = [
        json.loads((p / "state.json").read_text())["state"]
        for p in sorted((tmp_path / "run" / "checkpoints").iterdir())
    ]
    assert max(s["epoch"] for s in states) >= 1  # the stream was read more than once
    mid = [s for s in states if s["stream"] is not None]
    assert mid and all(s["stream"]["cursor"] is not None or s["stream"]["draining"] for s in mid)


def test_sigkill_of_a_real_process_resumes_exactly(cli, corpus, tmp_path: Path) -> None:
    """`kill -9` while the run trains and saves every 3 steps; `--resume auto` finishes it exactly."""
    config = clm_config(tmp_path)
    common = [
        "--set",
        "training.max_steps=150",
        "--set",
        "training.save_every=3",
        "--set",
        "training.eval_every=50",
    ]
    result = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert result.exit_code == 0, result.output

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptft_cli", "pretrain", "--config", str(config), *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere in the middle of the run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    results_before = (tmp_path / "run" / "results.json").exists()
    result = cli("pretrain", "--config", config, *common, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert not results_before, "the run finished before it was killed: kill it earlier"
    assert_same_run(tmp_path / "whole", tmp_path / "run")
