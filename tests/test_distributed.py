"""Distributed training on this CPU: 2 processes through torchrun and gloo, against 1 process.

N processes with batch b train on exactly the examples 1 process with batch N·b does (each step's
global batch is split, the loss is normalised by the global item count), so their losses agree up
to float rounding, and validation (sharded, gathered in batch order) gives the same metrics. A
checkpoint holds nothing that depends on the number of processes, so it resumes on more or fewer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptft_cli.data.sampler import micro_batches
from tests.test_pretrain_cli import clm_config
from tests.test_resume import Killed, assert_same_run, kill_at, records

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-5


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The in-process run uses one thread, as each torchrun worker here does, so that the same batch
    gives the same bits in both (matmul results can depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ptft(*args: object, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`ptft ARGS...` in a new process, as a user types it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ptft_cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run) if "loss" in r]


def evals(run: Path) -> list[dict]:
    return [r for r in records(run) if "eval_loss" in r]


def assert_close_runs(a: Path, b: Path, after: int = 0) -> None:
    la, lb = [x for x in losses(a) if x[0] > after], [x for x in losses(b) if x[0] > after]
    assert [s for s, _ in la] == [s for s, _ in lb]
    assert [v for _, v in la] == pytest.approx([v for _, v in lb], rel=RTOL)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=RTOL, atol=RTOL)


def assert_close_evals(a: list[dict], b: list[dict]) -> None:
    """Validation records of two runs whose weights differ by float rounding (the same weights give
    the same metrics exactly: test_sharded_validation_equals_one_process)."""
    assert [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
        assert ra == pytest.approx(rb, rel=1e-6)


def test_each_process_takes_its_share_of_every_step() -> None:
    step = list(range(13))  # a short last step: 13 examples for 2 processes × 2 micro-batches of 4
    shares = [micro_batches(step, rank, 2, 2) for rank in range(2)]
    assert shares[0] == [([0, 1, 2], True), ([3, 4, 5], True)]
    assert shares[1] == [([6, 7, 8], True), ([9, 10, 11, 12], True)]
    full = [micro_batches(list(range(16)), rank, 2, 2) for rank in range(2)]
    assert [len(spec) for share in full for spec, _ in share] == [4, 4, 4, 4]
    # fewer examples than micro-batches: every process still runs 2 passes, fillers weighted 0
    tiny = [micro_batches([7, 8, 9], rank, 2, 2) for rank in range(2)]
    assert tiny[0] == [([7], False), ([7], True)]
    assert tiny[1] == [([8], True), ([9], True)]
    assert micro_batches([7], 0, 1, 4) == [([7], True)]  # one process: no fillers


def test_two_processes_train_and_validate_as_one_classification(
    cli, write_config, tmp_path: Path, one_thread
) -> None:
    config = write_config()
    common = [
        "--set",
        "training.epochs=2",
        "--set",
        "training.eval_every=3",
        "--set",
        "training.eval_batch_size=7",
    ]
    one = cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'one'}")
    assert one.exit_code == 0, one.output
    two = ptft(
        "finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'two'}", "--set",
        "training.batch_size=8", "--nproc", "2", "--set", "logging.report_to=[tensorboard]", cwd=tmp_path,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "8 per process × 1 accumulation × 2 processes = 16 per step" in two.stderr
    assert two.stderr.count("results") == 1  # rank 0 alone prints
    assert two.stderr.count("step 12/12 (100%)") == 1  # and its plain step lines (stderr is no terminal)
    assert len(list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 reports
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    assert_close_evals(evals(tmp_path / "one"), evals(tmp_path / "two"))
    assert len(evals(tmp_path / "two")) == 4


def test_two_processes_train_and_validate_as_one_clm(corpus_dir, tmp_path: Path, cli, one_thread) -> None:
    config = clm_config(tmp_path)
    common = ["--set", "training.max_steps=20", "--set", "training.eval_every=10"]
    one = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'one'}")
    assert one.exit_code == 0, one.output
    two = ptft(
        "pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'two'}",
        "--set", "training.batch_size=4", "--set", "training.gradient_accumulation_steps=2", "--nproc", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    assert_close_evals(evals(tmp_path / "one"), evals(tmp_path / "two"))
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 and r["flops_per_s"] > 0 for r in metrics if "loss" in r)
    peaks = json.loads((tmp_path / "two" / "results.json").read_text())["peak_memory_gb"]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)


def test_a_checkpoint_resumes_on_another_number_of_processes(
    corpus_dir, tmp_path: Path, cli, monkeypatch, one_thread
) -> None:
    config = clm_config(tmp_path)
    common = [
        "--set",
        "training.max_steps=12",
        "--set",
        "training.save_every=6",
        "--set",
        "training.eval_every=6",
    ]
    common += ["--set", "training.keep_checkpoints=2"]
    # 2 processes → 1: from the 2-process run's step-6 checkpoint, once straight through and once
    # killed at step 11 and resumed; both end bit-identical, and close to the 2-process run's end
    two = ptft(
        "pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'two'}", "--set", "training.batch_size=8",
        "--nproc", "2", cwd=tmp_path,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    step6 = tmp_path / "two" / "checkpoints" / "step-00000006"
    forked = ["--resume", step6, "--set", "training.batch_size=16", "--set", "training.save_every=3"]
    straight = cli(
        "pretrain", "--config", config, *common, *forked, "--set", f"output_dir={tmp_path / 'straight'}"
    )
    assert straight.exit_code == 0, straight.output
    with monkeypatch.context() as m:
        kill_at(m, torch.optim.AdamW, "step", 5)  # step 11, after the fork's first checkpoint (step 9)
        with pytest.raises(Killed):
            cli(
                "pretrain", "--config", config, *common, *forked, "--set", f"output_dir={tmp_path / 'killed'}"
            )
    again = cli(
        "pretrain", "--config", config, *common, *forked[2:], "--set", f"output_dir={tmp_path / 'killed'}",
        "--resume", "auto",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert_same_run(tmp_path / "straight", tmp_path / "killed")
    assert_close_runs(tmp_path / "two", tmp_path / "straight", after=6)

    # 1 process → 2: the 1-process run's step-6 checkpoint continued by 2 processes of batch 8
    one = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'one'}")
    assert one.exit_code == 0, one.output
    grown = ptft(
        "pretrain", "--config", config, *common, "--resume", tmp_path / "one" / "checkpoints" / "step-00000006",
        "--set", f"output_dir={tmp_path / 'grown'}", "--set", "training.batch_size=8", "--nproc", "2", cwd=tmp_path,
    )  # fmt: skip
    assert grown.returncode == 0, grown.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "grown", after=6)

    # another global batch is refused, naming the split that would fit
    shrunk = cli(
        "pretrain", "--config", config, *common, *forked[:2], "--set", "training.batch_size=8",
        "--set", f"output_dir={tmp_path / 'shrunk'}",
    )  # fmt: skip
    assert shrunk.exit_code == 2
    assert "global batch was 16, now it is 8" in shrunk.output
    assert not (tmp_path / "shrunk").exists()


def fsdp_llama_config(tmp_path: Path) -> Path:
    """The small CLM config of test_pretrain_cli with a LLaMA (FSDP2 shards its decoder layers)."""
    config = clm_config(tmp_path, "distributed:\n  strategy: fsdp\n")
    config.write_text(config.read_text().replace("architecture: gpt2", "architecture: llama"))
    return config


def test_fsdp_trains_a_llama_whose_model_loads_with_from_pretrained(
    corpus_dir, tmp_path: Path, cli, one_thread
) -> None:
    config = fsdp_llama_config(tmp_path)
    common = ["--set", "training.max_steps=10", "--set", "training.eval_every=10"]
    one = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'one'}")
    assert one.exit_code == 0, one.output
    two = ptft(
        "pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'two'}", "--set", "training.batch_size=8",
        "--nproc", "2", cwd=tmp_path,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "2 (FSDP, gloo)" in two.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "model")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "model")
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_compiled_blocks_under_fsdp_and_ddp_train_as_eager_on_one_process(
    corpus_dir, tmp_path: Path, cli, one_thread
) -> None:
    """training.compile compiles each block's forward; FSDP2's and DDP's hooks stay outside it."""
    config = fsdp_llama_config(tmp_path)
    common = ["--set", "training.max_steps=6", "--set", "training.eval_every=6"]
    one = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'one'}")
    assert one.exit_code == 0, one.output
    for strategy in ("fsdp", "ddp"):
        two = ptft(
            "pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / strategy}",
            "--set", "training.batch_size=8", "--set", "training.compile=true",
            "--set", f"distributed.strategy={strategy}", "--nproc", "2", cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert two.returncode == 0, two.stderr
        assert "torch.compile (each block)" in two.stderr
        assert_close_runs(tmp_path / "one", tmp_path / strategy)


def test_a_bad_row_seen_by_one_process_stops_all_with_the_same_line(write_config, tmp_path: Path) -> None:
    """Rank 1 reads a data file with a bad label (as a machine with its own copy of the data
    would); both processes exit 2 within seconds, rank 0 prints the line, nothing is written."""
    bad = tmp_path / "data" / "bad.csv"
    lines = (tmp_path / "data" / "train.csv").read_text().splitlines()
    lines[5] = "a fine sentence,maybe"
    bad.write_text("\n".join(lines) + "\n")
    labels = "  labels: [negative, positive]\n"
    write_config(name="config_0.yaml")
    text = (tmp_path / "config_0.yaml").read_text().replace("data:\n", "data:\n" + labels)
    (tmp_path / "config_0.yaml").write_text(text)
    (tmp_path / "config_1.yaml").write_text(text.replace("data/train.csv", "data/bad.csv"))
    exits, logs = tmp_path / "exits", tmp_path / "logs"
    exits.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PTFT_EXIT_DIR": str(exits)}
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
            "--log-dir", logs, "--redirects", "3", REPO / "tests" / "rank_argv.py",
            "finetune", "--config", "config_{rank}.yaml",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert [(exits / f"rank-{r}").read_text() for r in range(2)] == ["2", "2"]
    outputs = [next(logs.rglob(f"{r}/stderr.log")).read_text() for r in range(2)]
    assert "Traceback" not in outputs[0] + outputs[1]
    errors = [line for line in outputs[0].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.csv:6: label" in errors[0], outputs[0]
    assert outputs[1].strip() == ""  # rank 1 says nothing: rank 0 speaks for all
    assert not (tmp_path / "run").exists()


def test_ptft_nproc_reports_a_config_error_once_without_a_traceback(write_config, tmp_path: Path) -> None:
    config = write_config("distributed:\n  strategy: zero3\n")
    result = ptft("finetune", "--config", config, "--nproc", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and "distributed.strategy" in result.stderr
    assert "Traceback" not in result.stderr
    write_config(name="ok.yaml")
    missing = ptft(
        "finetune", "--config", tmp_path / "ok.yaml", "--set", "data.train=data/none.csv", "--nproc", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.count("error:") == 1 and "none.csv" in missing.stderr
    assert "Traceback" not in missing.stderr and "ChildFailedError" not in missing.stderr


def test_the_gpu_server_scripts_run_here_on_the_cpu(write_config, tmp_path: Path) -> None:
    """scripts/train_one_node.sh, train_multi_node.sh and train.sbatch (under stand-ins for srun and
    scontrol) as documented, with 2 processes: each validates first and prints the global batch."""
    config = write_config()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PTFT": f"{sys.executable} -m ptft_cli",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "NNODES": "1",
        "RDZV": f"127.0.0.1:{port}",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NNODES": "1",
        "SLURM_GPUS_ON_NODE": "2",
        "PTFT_RDZV_PORT": str(port),
    }
    scripts = {
        "one": ["scripts/train_one_node.sh", "finetune", config, "2"],
        "multi": ["scripts/train_multi_node.sh", "finetune", config, "2"],
        "slurm": ["scripts/train.sbatch", "finetune", config],
    }
    for name, argv in scripts.items():
        out = tmp_path / name
        result = subprocess.run(
            [*map(str, argv), "--set", f"output_dir={out}", "--set", "training.epochs=1", "--set", "training.batch_size=8"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, (name, result.stderr[-3000:])
        validated = result.stderr.index("valid")
        assert result.stderr.index("8 per process × 1 accumulation × 2 processes = 16 per step") > validated
        assert (out / "model" / "model.safetensors").is_file(), name


def _shard_scores(rank: int, size: int, store: str, model_dir: str, out: str) -> None:
    """One process of test_sharded_validation_equals_one_process: classification metrics (DDP-style
    sharding) and CLM scores (FSDP-style lockstep, with fillers) of the same weights."""
    import numpy as np
    import torch.distributed as dist

    from ptft_cli.data.corpus import TokenStream
    from ptft_cli.distributed import World
    from ptft_cli.hardware import Hardware
    from ptft_cli.tasks import classification, clm

    torch.set_num_threads(1)
    if size > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    cpu = torch.device("cpu")
    results = {}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [f"the food was {'good ' * (i % 5)}and the service slow" for i in range(23)]
    enc = classification.encode(tokenizer, texts, None, [i % 3 for i in range(23)], 32)
    hw = Hardware(cpu, "fp32", "test", world=World(rank, size, device=cpu))
    results["classification"] = classification.evaluate_examples(model, enc, ["a", "b", "c"], 4, hw)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_head=2, n_embd=16, n_positions=32)).eval()
    stream = TokenStream(np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint32), 1000, 1000)
    hw = Hardware(cpu, "fp32", "test", world=World(rank, size, lockstep=True, device=cpu))
    results["clm"] = clm.score_stream(lm, stream, 16, 5, hw)
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    if size > 1:
        dist.destroy_process_group()


def test_sharded_validation_equals_one_process(tiny_bert: Path, tmp_path: Path, one_thread) -> None:
    """The same weights scored by 1 process and by 2 (uneven batch counts: 6 classification batches,
    13 CLM jobs with a tail) give identical metrics, to the last bit."""
    import torch.multiprocessing as mp

    _shard_scores(0, 1, "", str(tiny_bert), str(tmp_path / "one.json"))
    mp.spawn(
        _shard_scores, args=(2, str(tmp_path / "store"), str(tiny_bert), str(tmp_path / "two.json")), nprocs=2
    )
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one == two
    assert one["classification"]["per_class"] and one["clm"]["loss"] > 0
