"""Golden values: the exact training and validation losses of short fp32 runs on tiny models.

A refactor of the training side must leave these numbers alone (batch order, masking, loss
normalisation, schedule, initialisation): any change in numerics fails here, not silently in a
benchmark weeks later. The values were recorded on the landed code before the training side was
reshaped, and did not change with it. Tolerance as torchtune's recipe tests (rtol 1e-4).

To record new values after an intended change: `PTFT_GOLDEN_PRINT=1 pytest tests/test_golden.py -s`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_pretrain_cli import clm_config, mlm_config

# task -> (training loss at steps 5, 10, 15, 20; validation loss at step 20)
GOLDEN: dict[str, tuple[list[float], float]] = {
    "classification": ([0.7023988366127014, 0.7037021517753601, 0.6901700496673584, 0.6937123537063599], 0.7021027207374573),
    "mlm": ([4.800994968695626, 4.478423834538114, 4.132753614584605, 3.9512319985131725], 3.9088184497974536),
    "mlm+nsp": ([5.465885850165388, 5.146820390590628, 4.862624556801536, 4.718252692523942], 3.971675549523305),
    "clm": ([3.41540846824646, 3.1807899951934813, 3.0154834747314454, 2.960221862792969], 2.9285897429720813),
    "mlm-unpacked": ([4.780655843093682, 4.457442686716716, 4.128827713757026, 3.9516886411569057], 3.948233127593994),
}  # fmt: skip

STEPS = ["--set", "training.max_steps=20", "--set", "training.log_every=5", "--set", "training.eval_every=20"]


def losses(run: Path) -> tuple[list[float], float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if "loss" in r and "eval_loss" not in r]
    (final,) = [r["eval_loss"] for r in records if "eval_loss" in r]
    return train, final


def check(name: str, run: Path) -> None:
    train, final = losses(run)
    if os.environ.get("PTFT_GOLDEN_PRINT"):
        print(f'\n    "{name}": ({train!r}, {final!r}),')
        return
    expected_train, expected_final = GOLDEN[name]
    assert train == pytest.approx(expected_train, rel=1e-4)
    assert final == pytest.approx(expected_final, rel=1e-4)


def test_classification_golden(cli, write_config, tmp_path: Path) -> None:
    result = cli(
        "finetune",
        "--config",
        write_config(),
        *STEPS,
        "--set",
        "training.batch_size=8",
        "--set",
        "model.dropout=0.1",
    )
    assert result.exit_code == 0, result.output
    check("classification", tmp_path / "run")


@pytest.mark.parametrize("task", ["mlm", "mlm+nsp", "clm", "mlm-unpacked"])
def test_language_model_golden(cli, corpus_dir: Path, tmp_path: Path, task: str) -> None:
    if task == "clm":
        config, extra = clm_config(tmp_path), []
    elif task == "mlm-unpacked":
        config, extra = mlm_config(tmp_path), ["--set", "data.packing=false"]
    else:
        config, extra = mlm_config(tmp_path, task=task), []
    result = cli("pretrain", "--config", config, *STEPS, *extra, "--set", "data.cache_dir=null")
    assert result.exit_code == 0, result.output
    check(task, tmp_path / "run")
