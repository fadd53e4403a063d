"""Distillation: a teacher's soft targets in the loss (classification and causal LM), the
every-other-layer student, exact resume with a teacher, and the teacher's bad inputs."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_pretrain_cli import clm_config
from tests.test_resume import adamw_step, assert_same_run, kill_and_resume


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "eval_loss" not in r]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert: Path) -> Path:
    """A tiny classifier fine-tuned by ptft (a run directory: the teacher of the tests below)."""
    from typer.testing import CliRunner

    from ptft_cli.cli import app
    from tests.conftest import classifier_yaml, make_sentences, write_csv

    tmp = tmp_path_factory.mktemp("teacher")
    (tmp / "data").mkdir()
    write_csv(tmp / "data" / "train.csv", make_sentences(96, seed=1))
    write_csv(tmp / "data" / "validation.csv", make_sentences(32, seed=2))
    config = tmp / "teacher.yaml"
    config.write_text(classifier_yaml(tiny_bert, predict=False))
    result = CliRunner().invoke(app, ["finetune", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp / "run" / "results.json").read_text())["final"]["eval_accuracy"] >= 0.9
    return tmp / "run"


def distil_extra(teacher: Path, **keys: object) -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in keys.items())
    return f"distillation:\n  teacher: {teacher}\n{lines}"


# ---------------------------------------------------------------------------------------------
# The loss


def test_kl_term_matches_a_hand_computed_value() -> None:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE, summed over the batch's rows,
    from `wrap` (the one place the term is added) against arithmetic written out here."""
    from types import SimpleNamespace

    from ptft_cli import distill
    from ptft_cli.config import DistillationConfig
    from ptft_cli.loop import TrainingData

    student = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    teacher_logits = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, -1.0]])
    labels = [2, 0]
    T, alpha = 2.0, 0.3

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for s, t in zip(student.tolist(), teacher_logits.tolist()):
        p, q = softmax(t), softmax(s)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    ce = sum(
        -math.log(math.exp(s[y]) / sum(math.exp(v) for v in s)) for s, y in zip(student.tolist(), labels)
    )
    expected = alpha * T * T * kl + (1 - alpha) * ce

    def hard(model, batch):
        out = model(input_ids=batch["input_ids"])
        return torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="sum")

    data = TrainingData(None, None, hard, lambda b: 2, None, frozenset())
    fixed = SimpleNamespace(logits=teacher_logits)
    settings = DistillationConfig(teacher="t", temperature=T, alpha=alpha)
    distill.wrap(data, distill.Teacher(lambda **kw: fixed, "t", settings, contextlib.nullcontext))
    leaf = student.clone().requires_grad_(True)
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor(labels)}
    got = data.loss_sum(lambda **kw: SimpleNamespace(logits=leaf), batch)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()  # the teacher's tensors are usable by autograd, the student gets gradients
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    # golden value of the same batch (regression guard for the formula's constants)
    assert expected == pytest.approx(4.90278, abs=1e-4)


def test_token_kl_counts_only_the_chosen_positions() -> None:
    from ptft_cli.distill import kl_sum

    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])
    per_position = [kl_sum(s[b, i : i + 1], t[b, i : i + 1], None, 1.5) for b in range(2) for i in range(4)]
    want = sum(v for v, m in zip(per_position, mask.flatten().tolist()) if m)
    assert kl_sum(s, t, mask, 1.5).item() == pytest.approx(float(want), rel=1e-5)
    assert kl_sum(t, t, None, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_sft_soft_mask_lines_up_with_the_reply_tokens_the_loss_scores() -> None:
    """sft labels are unshifted: logits position t predicts token t+1, and with `logits_to_keep` only
    the positions some row trains come back."""
    from ptft_cli.data.sft import IGNORE
    from ptft_cli.tasks.sft import soft_mask

    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE], [IGNORE, IGNORE, IGNORE, 7, 8]])
    full = soft_mask({"labels": labels}, torch.zeros(2, 5, 11))
    assert full.tolist() == [[False, True, True, False, False], [False, False, True, True, False]]
    kept = soft_mask({"labels": labels}, torch.zeros(2, 3, 11))  # positions 1, 2, 3 kept
    assert kept.tolist() == [[True, True, False], [False, True, True]]


# ---------------------------------------------------------------------------------------------
# The student


def test_every_other_layer_keeps_the_teacher_layers_0_2_4(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from ptft_cli import models

    torch.manual_seed(0)
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=6, num_attention_heads=2, intermediate_size=32
        )
    )
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    assert models.every_other_layer(bert) == [0, 2, 4]
    after = bert.state_dict()
    for new, old in enumerate([0, 2, 4]):
        prefix = f"bert.encoder.layer.{new}."
        keys = [k for k in after if k.startswith(prefix)]
        assert keys
        for k in keys:
            assert torch.equal(after[k], before[k.replace(prefix, f"bert.encoder.layer.{old}.")]), k
    rest = [k for k in after if ".layer." not in k]
    assert all(torch.equal(after[k], before[k]) for k in rest)  # embeddings, pooler, classifier
    assert bert.config.num_hidden_layers == 3 and not any(
        k.startswith("bert.encoder.layer.3.") for k in after
    )
    bert.save_pretrained(tmp_path / "student")
    again = BertForSequenceClassification.from_pretrained(tmp_path / "student")
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items())

    # a decoder: the blocks' KV-cache indices follow, so generation with a cache still works
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32
        )
    )
    assert models.every_other_layer(llama) == [0, 2]
    assert [layer.self_attn.layer_idx for layer in llama.model.layers] == [0, 1]
    out = llama.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_distilled_classifier_from_every_other_layer_learns(
    cli, write_config, teacher: Path, tmp_path: Path
) -> None:
    config = write_config(distil_extra(teacher, temperature=2.0, alpha=0.7, hidden="true"))
    result = cli(
        "finetune",
        "--config",
        config,
        "--set",
        f"model.name_or_path={teacher / 'model'}",
        "--set",
        "model.student_init=every_other_layer",
        "--set",
        "training.epochs=3",
    )
    assert result.exit_code == 0, result.output
    losses = train_losses(tmp_path / "run")
    assert losses[-1] < 0.95 * losses[0]  # it starts near the teacher: the teacher's layers 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["final"]["eval_accuracy"] >= 0.8
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 1  # the 2-layer teacher's layer 0
    assert cli("evaluate", "--config", config).exit_code == 0


@pytest.mark.parametrize(
    "augment", [[], ["--set", "data.augment.delete=0.2", "--set", "data.augment.swap=0.2"]]
)
def test_transfer_rows_take_only_the_soft_loss(
    cli, write_config, teacher: Path, tmp_path: Path, augment: list[str]
) -> None:
    """Unlabeled rows (a .txt file: one text per line) join the labelled training rows (augmented
    like them when data.augment is on)."""
    from tests.conftest import make_sentences

    (tmp_path / "data" / "transfer.txt").write_text(
        "\n".join(t for t, _ in make_sentences(40, seed=7)) + "\n"
    )
    config = write_config(distil_extra(teacher, alpha=0.5) + "  transfer_data: data/transfer.txt\n")
    result = cli("validate", "--config", config)
    assert result.exit_code == 0, result.output
    assert "40 unlabeled rows" in result.output.replace("\n", " ")
    result = cli("finetune", "--config", config, "--set", "training.epochs=1", *augment)
    assert result.exit_code == 0, result.output
    # 96 labelled + 40 unlabeled rows in batches of 16: 9 steps (6 without the transfer rows)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 9
    assert all(math.isfinite(v) for v in train_losses(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------
# Causal LM


def test_clm_distillation_pretrains_a_smaller_student(cli, corpus_dir, tmp_path: Path) -> None:
    config = clm_config(tmp_path)
    short = [
        "--set",
        "training.max_steps=20",
        "--set",
        "training.eval_every=20",
        "--set",
        "training.log_every=5",
    ]
    result = cli("pretrain", "--config", config, *short, "--set", f"output_dir={tmp_path / 'teacher'}")
    assert result.exit_code == 0, result.output
    teacher_run = tmp_path / "teacher"
    student = [
        "--set",
        "model.num_layers=1",
        "--set",
        f"tokenizer.name_or_path={teacher_run / 'model'}",
        "--set",
        "tokenizer.type=null",
        "--set",
        f"distillation.teacher={teacher_run}",
        "--set",
        "distillation.alpha=0.5",
    ]
    result = cli("pretrain", "--config", config, *short, *student)
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output
    losses = train_losses(tmp_path / "run")
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_distilled_run_resumes_exactly(cli, write_config, teacher: Path, monkeypatch, tmp_path: Path) -> None:
    config = write_config(distil_extra(teacher, alpha=0.5, temperature=3.0))
    common = ["--set", "model.dropout=0.1", "--set", "training.epochs=2", "--set", "training.save_every=4"]
    result = cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert result.exit_code == 0, result.output
    kill_and_resume(cli, monkeypatch, "finetune", ["--config", str(config), *common], (*adamw_step(), 7))
    assert_same_run(tmp_path / "whole", tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def other_labels(teacher: Path, tmp: Path) -> Path:
    other = tmp / "other-labels"
    shutil.copytree(teacher / "model", other)
    values = json.loads((other / "config.json").read_text())
    values["id2label"] = {"0": "neg", "1": "neu", "2": "pos"}
    values["label2id"] = {"neg": 0, "neu": 1, "pos": 2}
    (other / "config.json").write_text(json.dumps(values))
    return other


def other_vocabulary(teacher: Path, tmp: Path) -> Path:
    """A classifier with the same labels and a larger vocabulary."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(teacher / "model")
    model.resize_token_embeddings(model.config.vocab_size + 8)
    model.save_pretrained(tmp / "other-vocab")
    return tmp / "other-vocab"


def other_tokenizer(teacher: Path, tmp: Path) -> Path:
    """Same size, but the word list in another order: token ids mean other words."""
    from transformers import AutoTokenizer, BertTokenizerFast

    other = tmp / "other-tok"
    shutil.copytree(teacher / "model", other)
    vocab = AutoTokenizer.from_pretrained(other).get_vocab()
    words = sorted(vocab, key=vocab.get)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (other / name).unlink(missing_ok=True)
    (tmp / "reversed.txt").write_text("\n".join(words[:5] + words[5:][::-1]) + "\n")
    BertTokenizerFast(vocab_file=str(tmp / "reversed.txt")).save_pretrained(other)
    return other


BAD = [
    ("different labels", other_labels, {}, "has labels [neg, neu, pos]"),
    ("different vocabulary size", other_vocabulary, {}, "has a vocabulary of"),
    ("different tokenizer", other_tokenizer, {}, "has another tokenizer"),
    ("missing teacher", lambda t, tmp: tmp / "nowhere", {}, "no such directory"),
    ("temperature 0", None, {"temperature": 0}, "distillation.temperature"),
    ("temperature < 0", None, {"temperature": -1}, "distillation.temperature"),
    ("alpha > 1", None, {"alpha": 1.5}, "distillation.alpha"),
    ("alpha < 0", None, {"alpha": -0.1}, "distillation.alpha"),
]


@pytest.mark.parametrize(("name", "make", "keys", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_teacher_is_one_line_and_writes_nothing(
    cli, write_config, teacher: Path, tmp_path: Path, name, make, keys, message
) -> None:
    ref = make(teacher, tmp_path) if make else teacher
    config = write_config(distil_extra(ref, **keys))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("finetune", "--config", config)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert f"{config}:" in lines[0]  # the config file and line of the key
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory
