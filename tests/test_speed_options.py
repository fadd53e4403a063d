"""Speed options change how a step is computed, not what it computes: gradient checkpointing and
torch.compile give the losses of the plain run (compile: up to float rounding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_distributed import losses
from tests.test_pretrain_cli import clm_config


@pytest.mark.parametrize(
    "options",
    [
        ["training.gradient_checkpointing=true"],
        ["training.compile=true"],  # each block compiled (compile_scope: blocks)
        ["training.compile=true", "training.compile_scope=model"],
    ],
)
def test_a_speed_option_trains_the_same_model(cli, corpus_dir, tmp_path: Path, options: list[str]) -> None:
    config = clm_config(tmp_path)
    config.write_text(config.read_text().replace("architecture: gpt2", "architecture: llama"))
    common = ["--set", "training.max_steps=20", "--set", "training.log_every=5"]
    plain = cli("pretrain", "--config", config, *common, "--set", f"output_dir={tmp_path / 'plain'}")
    assert plain.exit_code == 0, plain.output
    chosen = [arg for option in options for arg in ("--set", option)]
    fast = cli("pretrain", "--config", config, *common, *chosen, "--set", f"output_dir={tmp_path / 'fast'}")
    assert fast.exit_code == 0, fast.output
    a, b = losses(tmp_path / "plain"), losses(tmp_path / "fast")
    assert [s for s, _ in a] == [s for s, _ in b] == [5, 10, 15, 20]
    assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-5)


def test_regional_compilation_compiles_every_block_once() -> None:
    """compile_scope: blocks compiles each block's forward; blocks of one shape share one graph."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ptft_cli import models

    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2
    )
    model = LlamaForCausalLM(config)
    torch._dynamo.reset()
    assert models.compile_blocks(model)
    assert all(hasattr(block.forward, "_torchdynamo_orig_callable") for block in model.model.layers)
    ids = torch.randint(0, 32, (2, 8))
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second graph per block would fail here
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    assert models.compile_blocks(torch.nn.Linear(2, 2)) is False
