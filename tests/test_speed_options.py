"""Speed options change how a step is computed, not what it computes: gradient checkpointing and
torch.compile give the losses of the plain run (compile: up to float rounding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_distributed import losses
from tests.test_pretrain_cli import clm_config


@pytest.mark.parametrize("option", ["training.gradient_checkpointing=true", "training.compile=true"])
def test_a_speed_option_trains_the_same_model(cli, corpus_dir, tmp_path: Path, option: str) -> None:
    config = clm_config(tmp_path)
    config.write_text(config.read_text().replace("architecture: gpt2", "architecture: llama"))
    common = ["--set", "training.max_steps=20", "--set", "training.log_every=5"]
    plain = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'plain'}")
    assert plain.exit_code == 0, plain.output
    fast = cli(
        "pretrain", "--config", config, *common, "--set", option, "--set", f"output_dir={tmp_path / 'fast'}"
    )
    assert fast.exit_code == 0, fast.output
    a, b = losses(tmp_path / "plain"), losses(tmp_path / "fast")
    assert [s for s, _ in a] == [s for s, _ in b] == [5, 10, 15, 20]
    assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-5)
