"""Causal LM (next-token prediction): packed blocks, shifted targets, scoring the whole validation
text, and generation.

A block is T+1 consecutive tokens: the model reads the first T and predicts the last T, so every
token of the stream is a target exactly once per epoch (as in nanoGPT), unlike the HF convention
of T-token blocks with T-1 targets. Blocks start every T tokens from a random per-epoch offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ptft_cli.config import DECODERS, Config
from ptft_cli.data import corpus
from ptft_cli.errors import ConfigError, DataError
from ptft_cli.models import Head
from ptft_cli.tasks import Inputs, Loaded, lm
from ptft_cli.tasks.lm import METRICS, PREDICTION_FORMATS, evaluation_inputs, prediction_inputs

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData

__all__ = ["METRICS", "PREDICTION_FORMATS", "evaluation_inputs", "prediction_inputs"]

NAME = "clm"
TITLE = "causal LM (next token)"
COMMANDS = ("pretrain", "finetune")
DISTILLATION = ("teacher",)  # distillation keys this task reads (token-level KL at every target)


def check_config(cfg: Config) -> list[ConfigError]:
    return lm.check_architecture(
        cfg, DECODERS, "{arch} is an encoder; causal LM needs a decoder", f"allowed: {', '.join(DECODERS)}"
    ) + lm.check_packing(cfg)


def read_inputs(cfg: Config, command: str) -> Inputs:
    family = lm.pretrained_family(cfg)
    if family and family[0] == "encoder":
        raise lm.refuse_pretrained(
            cfg,
            f"{cfg.model.name_or_path} is a {family[1]} encoder; causal LM needs a decoder",
            "use task: mlm, or a decoder such as gpt2",
        )
    return lm.read_inputs(cfg, command)


def head(cfg: Config, inputs: Inputs | None) -> Head:
    return Head("AutoModelForCausalLM", "a causal LM")


def training_data(cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
    from ptft_cli.data import cache, sampler
    from ptft_cli.loop import TrainingData

    c: lm.Corpus = inputs.data
    t, T = cfg.training, cfg.tokenizer.max_length
    step = sampler.global_batch(t, hw.world.size)
    sep = lm.separator_id(tokenizer, causal=True)
    if cfg.data.streaming:
        val = lm.stream_validation(cfg, c.files, tokenizer, sep)
        batches: sampler.BatchSource = lm.stream_batches(
            cfg, c.files, tokenizer, sep, (T + 1, T), hw.world.size
        )
        collate = lambda blocks: collate_blocks(blocks, hw.device)
        train_size = lm.describe_stream(cfg, c.files)
    else:
        assert c.texts is not None
        train, val, cached = cache.token_streams(cfg, c.files, c.texts, tokenizer, sep)
        ids = train.ids
        lm.check_enough(cfg, len(ids), T + 1)
        batches = sampler.EpochBatches(
            lambda epoch: sampler.block_batches(len(ids), T, T + 1, step, seed=cfg.seed, epoch=epoch)
        )
        collate = lambda starts: collate_blocks(gather(ids, starts, T + 1), hw.device)
        train_size = lm.describe_tokens(train, cached)

    def evaluate(m: Any) -> dict[str, Any]:
        assert val is not None
        return score_stream(m, val, T, t.eval_batch_size, hw, cfg.data.max_eval_samples)

    return TrainingData(
        batches=batches,
        collate=collate,
        loss_sum=lambda m, b: loss_sum(m, b, hw.autocast),
        count=lambda b: b["labels"].numel(),
        evaluate=evaluate if val is not None else None,
        lower_is_better=lm.LOWER_IS_BETTER,
        tokens=lm.tokens_in,
        seq_len=T,
        summary=[("task", TITLE), ("train", train_size), ("validation", lm.describe_tokens(val))],
    )


def evaluate(cfg: Config, inputs: Inputs, loaded: Loaded, progress: Callable[[int], None]) -> dict[str, Any]:
    paths, pieces, key = inputs.data
    stream = corpus.tokenize_stream(pieces, loaded.tokenizer, lm.separator_id(loaded.tokenizer, causal=True))
    T = cfg.tokenizer.max_length
    return score_stream(
        loaded.model, stream, T, cfg.training.eval_batch_size, loaded.hw, cfg.data.max_eval_samples
    )


def predict(
    cfg: Config,
    inputs: Inputs,
    loaded: Loaded,
    progress: Callable[[int], None],
    stream: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Continue each prompt; with `stream` and one prompt, write the prompt, then the completion as it
    is generated, then a newline (what `shown` would print once done)."""
    from ptft_cli.inference import generate

    prompts, ids = inputs.data
    one = stream if len(prompts) == 1 else None
    settings = lm.generation_settings(cfg)
    if one is not None:
        one(prompts[0])
    try:
        rows = generate(loaded.model, loaded.tokenizer, prompts, settings, progress, one)
    except ValueError as e:
        raise DataError(str(e), where=cfg.predict.input or "--prompt", key="predict") from None
    finally:
        if one is not None:
            one("\n")  # ends the line even when generation fails, so an error starts on its own
    return [{"id": i, **row} for i, row in zip(ids, rows)]


def shown(row: dict[str, Any]) -> str:
    return row["prompt"] + row["completion"]


# ---------------------------------------------------------------------------------------------
# Batches, loss, scoring (torch)


def collate_blocks(blocks: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """(B, T+1) token blocks → inputs (B, T) and next-token labels (B, T)."""
    import torch

    x = torch.from_numpy(blocks.astype(np.int64))
    return {"input_ids": x[:, :-1].to(device), "labels": x[:, 1:].to(device)}


def gather(ids: np.ndarray, starts: np.ndarray, span: int) -> np.ndarray:
    return ids[starts[:, None] + np.arange(span)[None, :]]


def loss_sum(model: Any, batch: dict[str, torch.Tensor], autocast: Callable[[], Any]) -> torch.Tensor:
    with autocast():
        # no KV cache: training and scoring read each block once
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits
    return lm.summed_cross_entropy(logits, batch["labels"])


def score_stream(
    model: Any,
    stream: corpus.TokenStream,
    length: int,
    batch_size: int,
    hw: Hardware,
    max_blocks: int | None = None,
) -> dict[str, Any]:
    """Score every token of the stream after the first: non-overlapping blocks, the last one padded."""
    import torch

    ids = stream.ids.astype(np.int64)
    n_targets = len(ids) - 1
    n_full = n_targets // length
    starts = np.arange(n_full, dtype=np.int64) * length
    if max_blocks is not None:
        starts = starts[:max_blocks]
    rest = n_targets - n_full * length
    # one job per batch of full blocks, and the tail that does not fill a block (when scoring all)
    jobs: list[np.ndarray | None] = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    if rest > 0 and max_blocks is None:
        jobs.append(None)

    def run(job: np.ndarray | None) -> tuple[float, int]:
        if job is None:
            tail = torch.from_numpy(ids[n_full * length :])[None, :]
            batch = {"input_ids": tail[:, :-1].to(hw.device), "labels": tail[:, 1:].to(hw.device)}
        else:
            batch = collate_blocks(gather(ids, job, length + 1), hw.device)
        with torch.inference_mode():
            return loss_sum(model, batch, hw.eval_autocast).item(), batch["labels"].numel()

    was_training = model.training
    model.eval()
    # in a distributed run each process scores every N-th job; the sums run in job order
    results = hw.world.map_shards(jobs, run)
    model.train(was_training)
    nats = sum(r[0] for r in results)
    targets = sum(r[1] for r in results)
    scored_all = max_blocks is None
    return lm.lm_metrics(
        nats, targets, stream.chars if scored_all else None, stream.bytes if scored_all else None
    )
