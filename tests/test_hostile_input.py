"""Trying to break ptft as a hostile user would: it must never lose data, never hang, and answer
bad input with one line and exit 2, writing nothing. Each case was reproduced on an earlier ptft."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_bad_input import append, both, edit, snapshot, write_file
from tests.test_pretrain_cli import clm_config

REPO = Path(__file__).resolve().parents[1]


def copy_model(tmp: Path, tiny_bert: Path) -> Path:
    shutil.copytree(tiny_bert, tmp / "model-copy")
    return tmp / "model-copy"


def damaged_model(damage):
    """A copy of the tiny BERT, damaged, used as model.name_or_path."""

    def setup(tmp: Path, cfg: Path) -> None:
        tiny = Path(cfg.read_text().split("name_or_path: ")[1].splitlines()[0])
        damage(copy_model(tmp, tiny))
        cfg.write_text(cfg.read_text().replace(str(tiny), str(tmp / "model-copy")))

    return setup


def truncate(name: str, keep: int):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep] if keep >= 0 else data[:keep])

    return damage


def remove(*names: str):
    def damage(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return damage


def bomb(levels: int) -> str:
    lines = ["a0: &a0 {x: 1, y: 1}"]
    lines += [f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def project_folder(tmp: Path, cfg: Path) -> None:
    """A user's project: the config (named config.yaml), its data/ and notes."""
    (tmp / "NOTES.md").write_text("two years of notes")


# (name, how to break things, extra command-line arguments, text the one error line must contain)
CASES = [
    # --- data that would be lost
    (
        "output_dir is the config's folder",
        both(project_folder, edit("output_dir: run", "output_dir: .")),
        ["--overwrite"],
        ["output_dir", "holds the config"],
    ),
    (
        "output_dir above a data file",
        edit("output_dir: run", "output_dir: data/.."),
        ["--overwrite"],
        ["output_dir", "holds"],
    ),
    (
        "a folder with a config.yaml is not a run",
        both(
            lambda tmp, cfg: (tmp / "run").mkdir(),
            lambda tmp, cfg: (tmp / "run" / "config.yaml").write_text("x: 1\n"),
        ),
        ["--overwrite"],
        ["output_dir", "is not empty and is not a ptft run"],
    ),
    # --- values that used to hang or crash
    ("alias bomb of mappings", append(bomb(40)), [], ["config.yaml", "nested more than 20 levels"]),
    (
        "alias bomb used as a value",
        append("b0: &b0 [x, x]\n" + "".join(f"b{i}: &b{i} [*b{i - 1}, *b{i - 1}]\n" for i in range(1, 18))),
        [],
        ["config.yaml", "expand to more than 100,000"],
    ),
    ("recursive alias", append("loop: &loop [*loop]\n"), [], ["config.yaml", "refers to itself"]),
    (
        "5,000-deep list",
        append("deep: " + "[" * 5000 + "]" * 5000 + "\n"),
        [],
        ["config.yaml", "nested more than"],
    ),
    ("seed beyond 64 bits", edit("seed: 0", "seed: 99999999999999999999999"), [], ["seed", "out of range"]),
    ("epochs .inf", edit("epochs: 8", "epochs: .inf"), [], ["training.epochs", "not a finite number"]),
    (
        "learning rate 1e30",
        edit("learning_rate: 1.0e-2", "learning_rate: 1.0e+30"),
        [],
        ["training.learning_rate", "out of range"],
    ),
    ("epochs 1e9", edit("epochs: 8", "epochs: 1.0e+9"), [], ["training.epochs", "out of range"]),
    (
        "max_steps 1e30",
        edit("  log_every: 2", "  log_every: 2\n  max_steps: 1.0e+30"),
        [],
        ["training.max_steps"],
    ),
    (
        "batch_size 1e23",
        edit("batch_size: 16", "batch_size: 1.0e+23"),
        [],
        ["training.batch_size", "out of range"],
    ),
    (
        "the same training file twice",
        edit("train: data/train.csv", "train: [data/train.csv, data/train.csv]"),
        [],
        ["data.train", "one file per split"],
    ),
    (
        "an invalid device echoed in full",
        edit("device: cpu", "device: " + "x" * 100_000),
        [],
        ["device", "is not a device"],
    ),
    (
        "a config that is not UTF-8",
        lambda tmp, cfg: cfg.write_bytes(cfg.read_bytes().replace(b"seed: 0", b"seed: 0 # caf\xe9")),
        [],
        ["config.yaml:3", "not UTF-8"],
    ),
    # --- model directories
    (
        "zero-byte weights",
        damaged_model(truncate("model.safetensors", 0)),
        [],
        ["model.safetensors is empty"],
    ),
    (
        "truncated weights",
        damaged_model(truncate("model.safetensors", -100)),
        [],
        ["model.safetensors is truncated"],
    ),
    ("missing weights", damaged_model(remove("model.safetensors")), [], ["has no model weights"]),
    (
        "no tokenizer files",
        damaged_model(remove("tokenizer.json", "vocab.txt", "tokenizer_config.json")),
        [],
        ["model.name_or_path", "has no tokenizer files"],
    ),
    (
        "max_length beyond the model's positions",
        append("tokenizer:\n  max_length: 512\n"),
        [],
        ["tokenizer.max_length", "more than the model's 64 positions"],
    ),
    # --- paths
    (
        "output_dir under /proc",
        edit("output_dir: run", "output_dir: /proc/ptft-run"),
        [],
        ["output_dir", "system folder"],
    ),
    (
        "output_dir under a file",
        both(write_file("afile", "x"), edit("output_dir: run", "output_dir: afile/run")),
        [],
        ["output_dir", "afile is a file"],
    ),
    ("output_dir is a file", both(write_file("run", "x"), lambda tmp, cfg: None), [], ["output_dir"]),
    # --- messages
    (
        "unclosed quote in the training file",
        write_file("data/train.csv", 'text,label\ngood film,positive\n"bad film,negative\nfine,positive\n'),
        [],
        ["train.csv:3", "quote opened here is never closed"],
    ),
    (
        "declared labels, one class in the rows",
        both(
            write_file("data/train.csv", "text,label\n" + "good film,positive\n" * 20),
            edit(
                "  validation: data/validation.csv\n",
                "  validation: data/validation.csv\n  labels: [negative, positive]\n",
            ),
        ),
        [],
        ["label", "every training row has the label 'positive' (20 rows)"],
    ),
]


# found by scripts/fuzz_inputs.py
FUZZ_CASES = [
    ("a control character in the config", append("note: bell\x07\n"), [], ["config.yaml", "invalid YAML"]),
    (
        "an integer too large for a number",
        edit("learning_rate: 1.0e-2", "learning_rate: 1" + "0" * 400),
        [],
        ["training.learning_rate", "out of range"],
    ),
    (
        "a FIFO as the training file",
        lambda tmp, cfg: (os.remove(tmp / "data" / "train.csv"), os.mkfifo(tmp / "data" / "train.csv")),
        [],
        ["data.train", "is not a regular file"],
    ),
    (
        "JSON nested 100,000 deep",
        both(
            write_file("data/deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n"),
            edit("train: data/train.csv", "train: data/deep.jsonl"),
        ),
        [],
        ["deep.jsonl:1", "nested too deeply"],
    ),
    (
        "config.json that is not JSON",
        damaged_model(lambda folder: (folder / "config.json").write_text('{"model_type": "bert",')),
        [],
        ["config.json is not valid JSON"],
    ),
    (
        "a pickle with code instead of safetensors",
        damaged_model(
            lambda folder: (
                (folder / "model.safetensors").unlink(),
                (folder / "pytorch_model.bin").write_bytes(
                    b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94."
                ),
            )
        ),
        [],
        ["model.name_or_path", "pickled code"],
    ),
]


ALL_CASES = CASES + FUZZ_CASES


@pytest.mark.parametrize(("name", "setup", "extra", "needles"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_hostile_input_exits_2_with_one_line_and_writes_nothing(
    cli, write_config, tmp_path: Path, name, setup, extra, needles
) -> None:
    cfg = write_config()
    setup(tmp_path, cfg)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    result = cli("finetune", "--config", cfg, *extra)
    assert time.perf_counter() - started < 20, "took too long"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert len(lines[0]) < 1000
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0][:300]!r}"
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Cases that need more than one command


def test_a_failed_replacement_leaves_the_old_run(cli, write_config, monkeypatch, tmp_path: Path) -> None:
    """--overwrite keeps the old run aside until the new one saves a checkpoint; a failure puts it back."""
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    before = snapshot(tmp_path / "run")
    from ptft_cli.tasks import classification

    original = classification.loss_sum
    calls = {"n": 0}

    def nan_at_step_2(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(classification, "loss_sum", nan_at_step_2)
    result = cli("finetune", "--config", config, "--overwrite")
    assert result.exit_code == 2 and "the loss became nan at step 2" in result.output
    assert snapshot(tmp_path / "run") == before
    assert [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name] == []
    monkeypatch.undo()
    result = cli("finetune", "--config", config, "--overwrite", "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 12
    assert [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name] == []  # the old run is gone


def test_a_run_that_fails_before_its_first_step_leaves_nothing(
    cli, write_config, monkeypatch, tmp_path: Path
) -> None:
    from ptft_cli import loop

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "input/output error")

    config = write_config()
    monkeypatch.setattr(loop, "_step", broken)
    result = cli("finetune", "--config", config)
    assert result.exit_code == 1  # a bug-like failure, with its traceback
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    result = cli("finetune", "--config", config, "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output  # not refused as "already holds a run"


def test_a_second_process_on_the_same_output_dir_is_refused(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    fd = os.open(tmp_path / "run" / ".ptft-lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running ptft holds it
    os.write(fd, b"4242")
    try:
        for flags in (["--resume", "auto", "--set", "training.epochs=2"], ["--overwrite"]):
            result = cli("finetune", "--config", config, *flags)
            assert result.exit_code == 2, result.output
            assert "being written by another ptft process" in result.output
    finally:
        os.close(fd)
    result = cli("finetune", "--config", config, "--resume", "auto", "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output


def test_predict_paths_are_taken_literally_and_never_overwrite_the_input(
    cli, write_config, tmp_path: Path
) -> None:
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    keep = tmp_path / "runs" / "keep.jsonl"
    keep.parent.mkdir()
    keep.write_text("precious\n")
    odd = tmp_path / "runs" / "keep.jsonl #v2.jsonl"
    assert cli("predict", "--config", config, "--output", odd).exit_code == 0
    assert keep.read_text() == "precious\n" and len(odd.read_text().splitlines()) == 20
    texts = tmp_path / "data" / "texts.jsonl"
    texts.write_text('{"text": "a good film"}\n')
    before = texts.read_bytes()
    result = cli("predict", "--config", config, "--input", texts, "--output", texts)
    assert result.exit_code == 2 and "is also the input" in result.output
    assert texts.read_bytes() == before
    result = cli("predict", "--config", config, "--output", tmp_path / "runs")
    assert result.exit_code == 2 and "is a folder" in result.output
    (tmp_path / "evalfile").write_text("x")
    result = cli("evaluate", "--config", config, "--set", f"evaluate.output_dir={tmp_path / 'evalfile'}")
    assert result.exit_code == 2 and "evalfile is a file" in result.output


def test_a_stream_shorter_than_one_block_ends_with_an_error(corpus_dir: Path, tmp_path: Path) -> None:
    (corpus_dir / "a.txt").write_text("Tiny.\n")
    (corpus_dir / "b.txt").write_text("Text.\n")
    config = clm_config(tmp_path)
    result = subprocess.run(  # a subprocess, so a hang is a failed test, not a stuck suite
        [
            sys.executable,
            "-m",
            "ptft_cli",
            "pretrain",
            "--config",
            str(config),
            "--set",
            "data.streaming=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the training data yields no batch" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_damaged_tokenization_cache_is_rebuilt(cli, corpus_dir: Path, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    assert cli("pretrain", "--config", config, "--set", "training.max_steps=2").exit_code == 0
    (entry,) = (tmp_path / "cache" / "tokenized").iterdir()
    train = entry / "train.npy"
    train.write_bytes(train.read_bytes()[:-50])
    result = cli("pretrain", "--config", config, "--set", "training.max_steps=2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output
    again = cli("pretrain", "--config", config, "--set", "training.max_steps=2", "--overwrite")
    assert "(cached)" in again.output


def test_files_respect_the_umask(cli, write_config, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert cli("finetune", "--config", write_config(), "--set", "training.epochs=1").exit_code == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    assert (run / "config.yaml").stat().st_mode & 0o777 == 0o644
    assert (run / "model").stat().st_mode & 0o777 == 0o755
    assert (run / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_hub_id_without_network_fails_fast(cli, write_config, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://ptft-test.invalid")  # unreachable, whatever the network
    config = write_config()
    tiny = config.read_text().split("name_or_path: ")[1].splitlines()[0]
    config.write_text(config.read_text().replace(tiny, "ptft-test/no-such-model"))
    started = time.perf_counter()
    result = cli("finetune", "--config", config)
    assert time.perf_counter() - started < 15
    assert result.exit_code == 2 and "cannot load 'ptft-test/no-such-model'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_long_csv_field_is_read(tmp_path: Path) -> None:
    from ptft_cli.data.files import read_table

    (tmp_path / "long.csv").write_text("text,label\n" + "x" * 200_000 + ",a\n")
    assert len(read_table(str(tmp_path / "long.csv")).rows[0]["text"]) == 200_000


def test_set_errors_are_blamed_on_the_command_line(cli, write_config, tmp_path: Path) -> None:
    result = cli("finetune", "--config", write_config(), "--set", "data.train=nowhere.csv")
    assert result.exit_code == 2 and result.output.startswith("error: --set: data.train: ")


def test_a_full_disk_reported_by_safetensors_is_one_line(
    cli, write_config, monkeypatch, tmp_path: Path
) -> None:
    """safetensors and torch report a full disk in their own exception types, not OSError."""
    import transformers.modeling_utils

    def full(*args, **kwargs):
        raise RuntimeError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    result = cli("finetune", "--config", write_config(), "--set", "training.epochs=1")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0]
    assert not [p for p in (tmp_path / "run").rglob(".tmp-*")]  # temporaries cleaned up


def test_validate_refuses_what_training_would_refuse(
    cli, write_config, tiny_bert: Path, tmp_path: Path
) -> None:
    config = write_config()
    damaged = copy_model(tmp_path, tiny_bert)
    (damaged / "model.safetensors").write_bytes(b"")
    result = cli("validate", "--config", config, "--set", f"model.name_or_path={damaged}")
    assert result.exit_code == 2 and "model.safetensors is empty" in result.output
    result = cli("validate", "--config", config, "--set", f"output_dir={tmp_path}")
    assert result.exit_code == 2 and "holds the config" in result.output
    result = cli("validate", "--config", config, "--set", "tokenizer.max_length=512")
    assert result.exit_code == 2 and "more than the model's 64 positions" in result.output


def test_model_dir_is_swapped_in_atomically(tmp_path: Path) -> None:
    from ptft_cli.checkpoint import atomic_save_dir

    dest = tmp_path / "model"
    atomic_save_dir(dest, lambda folder: (folder / "v").write_text("1"))
    atomic_save_dir(dest, lambda folder: (folder / "v").write_text("2"))
    assert (dest / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old version is gone, no temporaries


def test_make_test_fails_when_no_tests_are_collected() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in recipe and "-eq 5" not in recipe


# ---------------------------------------------------------------------------------------------
# Found by scripts/fuzz_inputs.py


def test_a_damaged_checkpoint_is_refused_before_the_run_is_touched(
    cli, corpus_dir: Path, tmp_path: Path
) -> None:
    config = clm_config(tmp_path)
    assert (
        cli(
            "pretrain",
            "--config",
            config,
            "--set",
            "training.max_steps=4",
            "--set",
            "training.save_every=2",
            "--set",
            "training.keep_checkpoints=5",
        ).exit_code
        == 0
    )
    step2 = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = json.loads((step2 / "state.json").read_text())
    state["rng_python"] = [1, 2]
    (step2 / "state.json").write_text(json.dumps(state))
    marker = json.loads((step2 / "checkpoint.json").read_text())
    marker["files"]["state.json"] = (step2 / "state.json").stat().st_size  # the size check passes
    (step2 / "checkpoint.json").write_text(json.dumps(marker))
    before = snapshot(tmp_path / "run")
    result = cli("pretrain", "--config", config, "--resume", step2, "--set", "training.max_steps=6")
    assert result.exit_code == 2 and "step-00000002 is damaged" in result.output
    assert snapshot(tmp_path / "run") == before


def test_predict_never_replaces_a_file_it_did_not_write(cli, write_config, tmp_path: Path) -> None:
    config = write_config()
    assert cli("finetune", "--config", config, "--set", "training.epochs=1").exit_code == 0
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"mine": 1}\n')
    result = cli("predict", "--config", config, "--output", notes)
    assert result.exit_code == 2 and "does not hold ptft predictions" in result.output
    assert notes.read_text() == '{"mine": 1}\n'
    result = cli("predict", "--config", config, "--output", tmp_path / "data" / "train.csv")
    assert result.exit_code == 2 and "a data file of this config" in result.output
    out = tmp_path / "preds.jsonl"
    assert cli("predict", "--config", config, "--output", out).exit_code == 0
    assert cli("predict", "--config", config, "--output", out).exit_code == 0  # its own file: replaced


def test_nothing_to_train_and_too_short_blocks_are_config_errors(
    cli, corpus_dir: Path, tmp_path: Path
) -> None:
    from tests.test_pretrain_cli import mlm_config

    result = cli("pretrain", "--config", mlm_config(tmp_path), "--set", "tokenizer.max_length=2")
    assert result.exit_code == 2 and "tokenizer.max_length: 2 tokens cannot hold" in result.output
    assert cli("pretrain", "--config", clm_config(tmp_path), "--set", "training.max_steps=2").exit_code == 0
    tuned = ["--set", "model.architecture=null", "--set", f"model.name_or_path={tmp_path / 'run' / 'model'}",
             "--set", "tokenizer.type=null", "--set", "model.train_top_k_layers=0", "--set", f"output_dir={tmp_path / 'ft'}"]  # fmt: skip
    result = cli("finetune", "--config", clm_config(tmp_path), *tuned)
    assert result.exit_code == 2 and "nothing to train" in result.output
    assert not (tmp_path / "ft").exists()
