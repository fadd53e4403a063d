"""Optional checks on real models and data: skipped cleanly when the offline MiniLM package or
../shared/data is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_minilm_learns_the_demo_sentiment_set(cli, minilm: str, tmp_path: Path) -> None:
    result = cli(
        "finetune", "--config", REPO / "configs" / "demo" / "sentiment.yaml",
        "--set", f"model.name_or_path={minilm}", "--set", f"output_dir={tmp_path / 'run'}",
        "--set", "training.max_steps=50", "--set", "training.eval_every=50", "--set", "training.early_stopping_patience=null",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["final"]["eval_accuracy"] >= 0.8  # 2 epochs of a real pretrained encoder (chance: 0.5)
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["precision"] in ("bf16", "fp32")


SHIPPED_WITH_SHARED_DATA = [
    "configs/examples/sst2_minilm.yaml",
    "configs/pretrain/shakespeare_char.yaml",
    "configs/pretrain/wikitext2_bert_mlm.yaml",
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("config", SHIPPED_WITH_SHARED_DATA)
def test_configs_on_shared_data_validate(cli, config: str) -> None:
    result = cli("validate", "--config", REPO / config)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_demo_configs_validate(cli) -> None:
    for config in ("configs/demo/sentiment.yaml", "configs/demo/pretrain_mlm.yaml"):
        result = cli("validate", "--config", REPO / config)
        assert result.exit_code == 0, result.output
