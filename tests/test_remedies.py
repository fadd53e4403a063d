"""Overfitting remedies: the L1 penalty (`training.l1`) and text augmentation (`data.augment`)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptft_cli.config import AugmentConfig
from ptft_cli.data.augment import Augmenter, Rates, augment_words
from tests.test_resume import adamw_step, assert_same_run, kill_and_resume

# ---------------------------------------------------------------------------------------------
# L1: the gradient of the penalty, once per optimizer step


class RecordingSGD(torch.optim.SGD):
    """lr 0 (weights stay put); keeps a copy of every gradient it is asked to apply."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.grads: list[dict[int, torch.Tensor]] = []

    def step(self, closure=None):
        self.grads.append({id(p): p.grad.clone() for g in self.param_groups for p in g["params"]})
        return super().step(closure)


def _step_grads(model, batch: dict[str, torch.Tensor], parts: int, l1: float) -> dict[int, torch.Tensor]:
    """The gradient one loop step applies, the batch cut into `parts` accumulated micro-batches."""
    import torch.nn.functional as F

    from ptft_cli import loop, optim
    from ptft_cli.distributed import Replica

    def loss_sum(forward, b):
        logits = forward(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        return F.cross_entropy(logits, b["labels"], reduction="sum")

    data = loop.TrainingData(
        batches=None,  # type: ignore[arg-type]  # _step takes its micro-batches directly
        collate=lambda spec: spec,
        loss_sum=loss_sum,
        count=lambda b: int(b["labels"].shape[0]),
        evaluate=None,
        lower_is_better=frozenset(),
    )
    n = batch["labels"].shape[0]
    bounds = [k * n // parts for k in range(parts + 1)]
    micro = [({k: v[bounds[i] : bounds[i + 1]] for k, v in batch.items()}, True) for i in range(parts)]
    sgd = RecordingSGD([p for p in model.parameters() if p.requires_grad])
    opt = loop.Optimization(sgd, torch.optim.lr_scheduler.LambdaLR(sgd, lambda s: 1.0))
    if l1:
        opt.l1, opt.l1_params = l1, optim.decay_split(model)[0]
    state = loop.TrainState()
    loop._step(Replica(forward=model, module=model), micro, opt, data, state)
    assert state.step == 1
    return sgd.grads[0]


def test_l1_gradient_is_the_task_gradient_plus_l1_sign_on_decayed_weights_only(tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from ptft_cli import optim

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(5, 30, (8, 7), generator=g),
        "attention_mask": torch.ones(8, 7, dtype=torch.long),
        "labels": torch.randint(0, 2, (8,), generator=g),
    }
    plain = _step_grads(model, batch, parts=1, l1=0.0)
    # with l1, over 4 accumulated micro-batches: the penalty comes in once, not once per micro-batch
    l1 = 0.05
    penalised = _step_grads(model, batch, parts=4, l1=l1)
    decayed, excluded = optim.decay_split(model)
    assert decayed and excluded  # matrices and embeddings / biases and norm weights
    for p in decayed:
        expected = plain[id(p)] + l1 * torch.sign(p.detach())
        torch.testing.assert_close(penalised[id(p)], expected, rtol=1e-4, atol=1e-6)
    for p in excluded:
        torch.testing.assert_close(penalised[id(p)], plain[id(p)], rtol=1e-4, atol=1e-6)
    # and the penalty really moved some gradients (sign(w) is not zero)
    assert any(not torch.allclose(penalised[id(p)], plain[id(p)]) for p in decayed)


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r and "eval_loss" not in r]


def _decayed_l1_norm(run: Path) -> float:
    weights = load_file(run / "model" / "model.safetensors")
    return float(sum(w.abs().sum() for w in weights.values() if w.ndim >= 2))


def test_l1_is_logged_apart_from_the_task_loss_and_shrinks_the_weights(cli, write_config, tmp_path) -> None:
    common = [
        "--set",
        "training.max_steps=6",
        "--set",
        "training.log_every=1",
        "--set",
        "training.warmup_ratio=0",
    ]
    cfg = write_config()
    plain = cli("finetune", "--config", cfg, *common, "--set", f"output_dir={tmp_path / 'plain'}")
    assert plain.exit_code == 0, plain.output
    l1 = cli(
        "finetune",
        "--config",
        cfg,
        *common,
        "--set",
        "training.l1=0.05",
        "--set",
        f"output_dir={tmp_path / 'l1'}",
    )
    assert l1.exit_code == 0, l1.output
    a, b = _records(tmp_path / "plain"), _records(tmp_path / "l1")
    # step 1 starts from the same weights: the logged loss is the task loss, without the penalty
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-6)
    assert "l1_penalty" not in a[0]
    penalties = [r["l1_penalty"] for r in b]
    assert all(p > 0 for p in penalties) and penalties[-1] < penalties[0]
    # the logged value is l1 × sum |w| of the decayed weights (the final model is the step-6 weights)
    assert penalties[-1] == pytest.approx(0.05 * _decayed_l1_norm(tmp_path / "l1"), rel=1e-4)
    assert _decayed_l1_norm(tmp_path / "l1") < _decayed_l1_norm(tmp_path / "plain")


# ---------------------------------------------------------------------------------------------
# Augmentation: the operations, determinism, resume


WORDS = ["the", "film", "was", "really", "good", "and", "the", "acting", "was", "great"]


def test_each_operation_does_what_it_says() -> None:
    rng = random.Random(0)
    assert augment_words(WORDS, Rates(), rng) == WORDS
    kept = augment_words(WORDS, Rates(delete=0.5), random.Random(1))
    assert 0 < len(kept) < len(WORDS) and all(w in WORDS for w in kept)
    it = iter(WORDS)
    assert all(w in it for w in kept)  # deletion keeps the order
    assert augment_words(WORDS, Rates(delete=1.0), rng) in [[w] for w in WORDS]  # never empty
    swapped = augment_words(WORDS, Rates(swap=0.5), random.Random(2))
    assert Counter(swapped) == Counter(WORDS) and swapped != WORDS
    grown = augment_words(WORDS, Rates(insert=0.5), random.Random(3))
    assert len(grown) > len(WORDS) and set(grown) <= set(WORDS)  # copies of its own words only
    assert not Counter(WORDS) - Counter(grown)  # every original word is still there
    assert augment_words(["one"], Rates(delete=1.0, swap=1.0), rng) == ["one"]


def test_views_depend_only_on_seed_epoch_and_row() -> None:
    cfg = AugmentConfig(delete=0.2, swap=0.2, insert=0.2)
    text = " ".join(WORDS)
    a, b = Augmenter(cfg, seed=7), Augmenter(cfg, seed=7)
    views = [a.view(text, row) for row in range(20)]
    assert views == [b.view(text, row) for row in range(20)]  # a fresh augmenter: the same views
    assert len(set(views)) > 10  # rows differ
    b.observe(epoch=1, evals_without_improvement=0)
    assert [b.view(text, row) for row in range(20)] != views  # a new epoch, new views
    assert Augmenter(cfg, seed=8).view(text, 0) != a.view(text, 0) or Augmenter(cfg, seed=8).view(
        text, 1
    ) != a.view(text, 1)


def test_backoff_scales_the_rates_per_evaluation_without_a_new_best() -> None:
    aug = Augmenter(AugmentConfig(delete=0.4, swap=0.2, insert=0.0, backoff=0.5), seed=0)
    assert aug.current() == Rates(0.4, 0.2, 0.0)
    aug.observe(epoch=3, evals_without_improvement=2)
    assert aug.current() == Rates(0.1, 0.05, 0.0)
    off = Augmenter(AugmentConfig(delete=0.4, backoff=0.0), seed=0)
    off.observe(epoch=1, evals_without_improvement=1)
    assert off.view("a b c d e f", 0) == "a b c d e f"  # backoff 0: off until the metric improves


def test_augmented_training_resumes_exactly(cli, write_config, monkeypatch, tmp_path: Path) -> None:
    """Killed mid-epoch in the second epoch, with back-off in play: the same views, the same run."""
    config = write_config()
    plain = [
        *("--set", "training.epochs=2", "--set", "training.save_every=4"),
        *("--set", "training.best_metric=accuracy", "--set", "training.eval_every=3"),
    ]
    common = [
        *plain,
        *("--set", "data.augment.delete=0.2", "--set", "data.augment.swap=0.2"),
        *("--set", "data.augment.insert=0.2", "--set", "data.augment.backoff=0.5"),
    ]
    whole = cli("finetune", "--config", config, *common, "--set", f"output_dir={tmp_path / 'whole'}")
    assert whole.exit_code == 0, whole.output
    assert "augmented (delete 0.2, swap 0.2, insert 0.2" in whole.output
    # 6 steps per epoch, checkpoints every 4: killed in step 11, resumed from step 8
    kill_and_resume(cli, monkeypatch, "finetune", ["--config", str(config), *common], (*adamw_step(), 11))
    assert_same_run(tmp_path / "whole", tmp_path / "run")
    # augmentation changed what was trained on: without it the first steps' loss differs
    off = cli(
        "finetune",
        "--config",
        config,
        *plain,
        "--set",
        "training.max_steps=2",
        "--set",
        f"output_dir={tmp_path / 'off'}",
    )
    assert off.exit_code == 0, off.output
    assert _records(tmp_path / "off")[0]["loss"] != _records(tmp_path / "run")[0]["loss"]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written

BAD = [
    (["training.l1=-0.1"], ["training.l1", "must be >= 0"]),
    (["data.augment.delete=1.5"], ["data.augment.delete", "must be <= 1"]),
    (["data.augment.swap=-0.2"], ["data.augment.swap"]),
    (["data.augment.insert=often"], ["data.augment.insert"]),
    (
        ["data.augment.backoff=0.5", "data.augment.delete=0.1"],
        ["data.augment.backoff", "training.best_metric"],
    ),
    (["data.augment.backoff=1.5"], ["data.augment.backoff"]),
    (["data.augment.copies=2"], ["data.augment.copies", "unknown key"]),
    (["data.augment=0.1"], ["data.augment", "section"]),
]


@pytest.mark.parametrize(("sets", "needles"), BAD, ids=[b[0][0] for b in BAD])
def test_bad_remedy_values_are_one_line(cli, write_config, tmp_path: Path, sets, needles) -> None:
    args = [a for s in sets for a in ("--set", s)]
    result = cli("finetune", "--config", write_config(), *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_augmentation_on_a_language_model_is_refused_with_its_line(cli, tmp_path: Path) -> None:
    from tests.test_pretrain_cli import mlm_config

    config = mlm_config(tmp_path)
    text = config.read_text()
    config.write_text(text.replace("\ndata:\n", "\ndata:\n  augment: {delete: 0.1}\n", 1))
    result = cli("pretrain", "--config", config)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "mlm.yaml:" in line and "data.augment" in line and "classification" in line


def test_a_checkpoint_from_before_these_keys_resumes_when_they_keep_their_defaults(write_config) -> None:
    import yaml

    from ptft_cli import config as ptft_config

    cfg = ptft_config.load(write_config())
    old = yaml.safe_load(ptft_config.dump(cfg))
    del old["training"]["l1"], old["data"]["augment"]  # a config.yaml written before they existed
    assert ptft_config.resume_changes(yaml.safe_dump(old), cfg) == []
    cfg.training.l1 = 0.1
    assert ptft_config.resume_changes(yaml.safe_dump(old), cfg) == [("training.l1", 0.0, 0.1)]
