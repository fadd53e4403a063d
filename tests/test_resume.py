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

from tests.test_pretrain_cli import clm_config, mlm_config

TIMING = ("samples_per_s", "tokens_per_s", "flops_per_s")
REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands in for SIGKILL: no handler, no cleanup beyond what `finally` blocks do."""


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
    # bf16 autocast (what `precision: auto` picks on CPUs with native bf16) resumes exactly too
    ("bf16", ["precision=bf16", "training.save_every=4"], (*adamw_step(), 11)),
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
    cli, corpus_dir, monkeypatch, tmp_path: Path, name, make, sets, kill
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


def test_streaming_epoch_rolls_over_and_the_stream_position_is_saved(cli, corpus_dir, tmp_path: Path) -> None:
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


def sigkill_mid_run(argv: list[str], run: Path, pause: float) -> None:
    """Start `ptft ARGV...` in a new process and `kill -9` it `pause` seconds after its first
    checkpoint appears in `run` (somewhere in the middle of the run)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptft_cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = run / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        time.sleep(0.02)
    time.sleep(pause)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_of_a_real_process_resumes_exactly(cli, corpus_dir, tmp_path: Path) -> None:
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

    sigkill_mid_run(["pretrain", "--config", str(config), *common], tmp_path / "run", pause=0.3)
    results_before = (tmp_path / "run" / "results.json").exists()
    result = cli("pretrain", "--config", config, *common, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert not results_before, "the run finished before it was killed: kill it earlier"
    assert_same_run(tmp_path / "whole", tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Signals, faults, and what a resume accepts


def signal_at(monkeypatch: pytest.MonkeyPatch, step: int, *signals: int) -> None:
    """Send `signals` to this process from inside the optimizer step `step` (as Ctrl-C would)."""
    original = torch.optim.AdamW.step
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            for sig in signals:
                os.kill(os.getpid(), sig)
                time.sleep(0.01)  # let the handler run before the next one arrives
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", wrapper)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_and_prints_the_resume_command(
    cli, write_config, monkeypatch, tmp_path: Path, sig, code
) -> None:
    config = write_config()
    common = ["--set", "model.dropout=0.1", "--set", "training.epochs=3"]
    assert (
        cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}").exit_code
        == 0
    )
    with monkeypatch.context() as m:
        signal_at(m, 10, sig)
        result = cli("finetune", "--config", config, *common)
    assert result.exit_code == code, result.output
    assert (tmp_path / "run" / "checkpoints" / "step-00000010" / "checkpoint.json").is_file()
    expected = (
        f"ptft finetune --config {config} --set model.dropout=0.1 --set training.epochs=3 --resume auto"
    )
    assert expected in " ".join(result.output.split()), result.output
    assert signal.getsignal(sig) is not None  # handlers are restored after training
    result = cli("finetune", "--config", config, *common, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "whole", tmp_path / "run")


def test_a_second_ctrl_c_aborts_at_once(cli, write_config, monkeypatch, tmp_path: Path) -> None:
    config = write_config()
    with monkeypatch.context() as m:
        signal_at(m, 10, signal.SIGINT, signal.SIGINT)
        result = cli("finetune", "--config", config, "--set", "training.epochs=3")
    assert result.exit_code == 130, result.output
    assert "aborted" in result.output and "step-00000006" in result.output  # the last complete checkpoint
    assert not (tmp_path / "run" / "checkpoints" / "step-00000010").exists()


def test_a_diverging_loss_names_the_step_and_the_last_good_checkpoint(
    cli, corpus_dir, monkeypatch, tmp_path: Path
) -> None:
    from ptft_cli.tasks import clm

    original = clm.loss_sum
    calls = {"n": 0}

    def nan_at_step_9(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 9 else loss

    monkeypatch.setattr(clm, "loss_sum", nan_at_step_9)
    config = clm_config(tmp_path)
    result = cli("pretrain", "--config", config, "--set", "training.save_every=4")
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    lr_line = config.read_text().splitlines().index("  learning_rate: 3.0e-3") + 1
    assert f"{config}:{lr_line}: training.learning_rate: the loss became nan at step 9" in line
    assert "the last good checkpoint is " + str(tmp_path / "run" / "checkpoints" / "step-00000008") in line


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(
    cli, corpus_dir, monkeypatch, tmp_path: Path
) -> None:
    import errno

    original = torch.save
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    config = clm_config(tmp_path)
    result = cli("pretrain", "--config", config, "--set", "training.save_every=4")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no space left on the device" in lines[0], result.output
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000004"]  # no temporary left behind
    monkeypatch.undo()
    result = cli("pretrain", "--config", config, "--set", "training.save_every=4", "--resume", "auto")
    assert result.exit_code == 0, result.output


def test_resume_refuses_a_changed_config_and_accepts_allowed_changes(cli, corpus_dir, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    assert cli("pretrain", "--config", config).exit_code == 0
    result = cli("pretrain", "--config", config, "--resume", "auto", "--set", "training.learning_rate=1e-3")
    assert result.exit_code == 2
    assert "training.learning_rate: cannot resume from step-00000060: the config changed" in result.output
    assert "(0.003 → 0.001)" in result.output
    result = cli("pretrain", "--config", config, "--resume", "auto")
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = cli("pretrain", "--config", config, "--resume", "auto", "--set", "training.max_steps=70")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 70


def test_resume_refuses_edited_training_data(cli, corpus_dir, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    assert cli("pretrain", "--config", config, "--set", "training.max_steps=10").exit_code == 0
    with open(corpus_dir / "a.txt", "a") as f:
        f.write("More text.\n")
    result = cli("pretrain", "--config", config, "--resume", "auto", "--set", "training.max_steps=20")
    assert result.exit_code == 2 and "a.txt changed since the checkpoint" in result.output


def test_checkpoints_kept_are_the_newest_and_the_best(cli, write_config, tmp_path: Path) -> None:
    sets = {
        "training.epochs": 30, "training.eval_every": 3, "training.best_metric": "loss",
        "training.early_stopping_patience": 3, "training.lr_scheduler": "constant", "training.learning_rate": 0.05,
        "training.keep_checkpoints": 2,
    }  # fmt: skip
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = cli("finetune", "--config", write_config(), *args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    best, last = results["best"]["step"], results["steps"]
    kept = sorted(int(p.name[5:]) for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == sorted({best, last - 3, last}), (best, last, kept)


def test_partial_checkpoints_are_never_used_and_leftovers_are_removed(
    cli, corpus_dir, tmp_path: Path
) -> None:
    config = clm_config(tmp_path)
    assert cli("pretrain", "--config", config, "--set", "training.max_steps=20").exit_code == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    fake = checkpoints / "step-00000050"  # newer, but its marker lists a file that is not there
    fake.mkdir()
    (fake / "checkpoint.json").write_text(
        json.dumps({"format": 1, "step": 50, "files": {"model.safetensors": 9}})
    )
    (checkpoints / ".tmp-step-00000030-abc").mkdir()
    result = cli("pretrain", "--config", config, "--resume", "auto", "--set", "training.max_steps=30")
    assert result.exit_code == 0, result.output
    assert "(step 20, epoch 0)" in " ".join(result.output.split())  # the header's resume row
    assert not (checkpoints / ".tmp-step-00000030-abc").exists()


def test_resume_from_a_given_checkpoint_and_fork_a_run(cli, corpus_dir, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    sets = ["--set", "training.save_every=10", "--set", "training.keep_checkpoints=10"]
    assert (
        cli("pretrain", "--config", config, *sets, "--set", f"output_dir={tmp_path / 'whole'}").exit_code == 0
    )
    assert cli("pretrain", "--config", config, *sets).exit_code == 0
    # continue the run from an older checkpoint: what came after it is replaced, exactly as before
    result = cli(
        "pretrain", "--config", config, *sets, "--resume", tmp_path / "run" / "checkpoints" / "step-00000030"
    )
    assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "whole", tmp_path / "run")
    # a checkpoint of another run starts a new run directory from it
    step30 = tmp_path / "whole" / "checkpoints" / "step-00000030"
    fork = ["--set", f"output_dir={tmp_path / 'fork'}", "--resume", step30]
    result = cli("pretrain", "--config", config, *sets, *fork)
    assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "whole", tmp_path / "fork")
    result = cli("pretrain", "--config", config, "--resume", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such checkpoint" in result.output


def test_resume_auto_starts_a_run_that_has_no_checkpoint_yet(
    cli, write_config, monkeypatch, tmp_path: Path
) -> None:
    """The same command line starts a preemptible job and restarts it, even if it died before saving."""
    config = write_config()
    common = ["--set", "training.epochs=2"]
    assert (
        cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}").exit_code
        == 0
    )
    with monkeypatch.context() as m:
        kill_at(m, *adamw_step(), 3)  # before the first checkpoint (at the end of epoch 1, step 6)
        with pytest.raises(Killed):
            cli("finetune", "--config", config, *common, "--resume", "auto")
    assert (tmp_path / "run" / "config.yaml").is_file() and not (tmp_path / "run" / "checkpoints").exists()
    result = cli("finetune", "--config", config, *common, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "whole", tmp_path / "run")
