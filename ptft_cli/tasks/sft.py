"""Instruction and chat fine-tuning of a causal LM: records rendered as conversations (a template of
their fields, or their own chat), loss on the assistant's replies only, evaluation by response-token
loss and by generating answers, and generation for `predict`.

The data work (fields, templates, masks, truncation, packing) is `data/sft.py`; this module wires
it to the config, the loop and the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptft_cli.config import Config
from ptft_cli.data import files as data_io
from ptft_cli.data import sft as sft_data
from ptft_cli.errors import ConfigError, DataError, PtftError
from ptft_cli.models import Head
from ptft_cli.tasks import Inputs, Loaded, lm

if TYPE_CHECKING:
    import torch

    from ptft_cli.checkpoint import RunDir
    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData

NAME = "sft"
TITLE = "instruction / chat fine-tuning"
COMMANDS = ("finetune",)
GENERATION_METRICS = ("exact_match", "format_rate")
METRICS = ("loss", "perplexity", *GENERATION_METRICS)
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
PREDICTION_FORMATS = (".jsonl",)
DISTILLATION = ("teacher",)  # distillation keys this task reads (token-level KL at the reply tokens)


@dataclass
class Records:
    """The training and validation rows, and how a row becomes a conversation."""

    train: data_io.Table
    validation: data_io.Table | None
    template: sft_data.Template


def template(cfg: Config) -> sft_data.Template:
    s = cfg.sft
    prompt = tuple(s.prompt) if isinstance(s.prompt, list) else (s.prompt,) if s.prompt else ()
    try:
        return sft_data.Template(prompt, s.response, s.messages, s.system)
    except ConfigError as e:
        key = "sft.messages" if s.messages else "sft.prompt"
        raise ConfigError(e.message, where=cfg.where(key), key=key, hint=e.hint) from None


def options(cfg: Config) -> sft_data.SftOptions:
    s = cfg.sft
    return sft_data.SftOptions(
        cfg.tokenizer.max_length, s.chat_template, s.train_on_prompt, long_prompts=s.long_prompts
    )


def check_config(cfg: Config) -> list[ConfigError]:
    problems: list[ConfigError] = []
    try:
        template(cfg)
    except ConfigError as e:
        problems.append(e)
    if cfg.tokenizer.type:
        problems.append(
            ConfigError(
                "sft fine-tunes a pretrained model with its own tokenizer",
                where=cfg.where("tokenizer.type"),
                key="tokenizer.type",
                hint="drop tokenizer.type",
            )
        )
    pattern = cfg.sft.answer_pattern
    if pattern is not None:
        try:
            groups = re.compile(pattern).groups
        except re.error as e:
            groups, why = -1, str(e)
        if groups < 1:
            problems.append(
                ConfigError(
                    f"sft.answer_pattern {pattern!r} "
                    + (f"is not a regular expression ({why})" if groups < 0 else "has no (group) to extract"),
                    where=cfg.where("sft.answer_pattern"),
                    key="sft.answer_pattern",
                    hint=r"e.g. '####\s*(-?[\d,\.]+)': the first group is the answer",
                )
            )
    if cfg.training.best_metric in GENERATION_METRICS and cfg.distributed.strategy == "fsdp":
        problems.append(
            ConfigError(
                "generating during training is not supported with FSDP (its forwards must run in step)",
                where=cfg.where("training.best_metric"),
                key="training.best_metric",
                hint="pick the best model by loss, or train with distributed.strategy: ddp",
            )
        )
    return problems


def _table(cfg: Config, key: str) -> data_io.Table:
    d = cfg.data
    if key == "data.train" and d.dataset:
        return data_io.read_hub_split(d.dataset, d.dataset_config, d.train_split)
    if key == "data.validation" and d.dataset and not d.validation:
        return data_io.read_hub_split(d.dataset, d.dataset_config, d.validation_split or "validation")
    section, name = key.split(".")
    path = getattr(getattr(cfg, section), name)
    data_io.require_file(path, key, cfg.where(key))
    return data_io.read_table(path, d.format, text_column=d.text_column)


def _rows(table: data_io.Table, keep: list[int]) -> data_io.Table:
    return data_io.Table(table.path, [table.rows[i] for i in keep], [table.lines[i] for i in keep])


def _checked(table: data_io.Table, tpl: sft_data.Template, key: str) -> data_io.Table:
    if not table.rows:
        raise DataError(f"{table.path} has no rows", where=table.path, key=key)
    tpl.check(table.rows[0], table.where(0))
    return table


def read_inputs(cfg: Config, command: str) -> Inputs:
    d, tpl = cfg.data, template(cfg)
    if not d.train and not d.dataset:
        raise DataError("no training data", where=cfg.where("data"), key="data.train", hint="set data.train")
    train = _checked(_table(cfg, "data.train"), tpl, "data.train")
    validation, split = None, None
    if d.validation or (d.dataset and d.validation_split):
        validation = _checked(_table(cfg, "data.validation"), tpl, "data.validation")
    elif d.validation_fraction > 0:
        keep, held = data_io.split_off(len(train.rows), d.validation_fraction, cfg.seed)
        if not keep:
            raise DataError(
                f"validation_fraction {d.validation_fraction} leaves no training rows out of {len(train.rows)}",
                where=cfg.where("data.validation_fraction"),
                key="data.validation_fraction",
            )
        if d.train and not d.dataset:
            split = {
                "data": str(d.train),
                "bytes": Path(str(d.train)).stat().st_size,
                "rows": held,
                "validation_fraction": d.validation_fraction,
            }
        validation, train = _rows(train, held), _rows(train, keep)
        validation.path = f"{train.path} (held-out {d.validation_fraction:.0%})"
    train = _rows(train, data_io.seeded_subset(len(train.rows), d.max_train_samples, cfg.seed))
    if validation is not None and d.max_eval_samples is not None:
        validation = _rows(validation, list(range(min(d.max_eval_samples, len(validation.rows)))))
    files = [Path(str(p)) for p in (d.train, d.validation) if isinstance(p, str)]
    summary = [
        ("template", _describe(cfg)),
        ("train", f"{len(train.rows):,} records from {train.path}"),
        ("validation", f"{len(validation.rows):,} records from {validation.path}" if validation else "none"),
    ]
    return Inputs(Records(train, validation, tpl), summary, files, None, split)


def _describe(cfg: Config) -> str:
    s = cfg.sft
    what = f"chat field {s.messages}" if s.messages else f"prompt {s.prompt!r} → reply {s.response!r}"
    how = "the tokenizer's chat template" if s.chat_template else "plain text + EOS"
    return f"{what}, rendered with {how}"


def head(cfg: Config, inputs: Inputs | None) -> Head:
    return Head("AutoModelForCausalLM", "a causal LM", pads=True)


# ---------------------------------------------------------------------------------------------
# Training


def _encode(cfg: Config, table: data_io.Table, tpl: sft_data.Template, tokenizer: Any) -> tuple[list, Any]:
    try:
        return sft_data.encode_table(table, tpl, tokenizer, options(cfg))
    except ConfigError as e:  # the tokenizer has no chat template, or no EOS
        key = "sft.chat_template" if e.key == "chat_template" else "model.name_or_path"
        raise ConfigError(e.message, where=cfg.where(key), key=key, hint=e.hint) from None


def training_data(cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
    import random

    from ptft_cli.data import sampler
    from ptft_cli.loop import TrainingData

    r: Records = inputs.data
    t, max_len = cfg.training, cfg.tokenizer.max_length
    train, stats = _encode(cfg, r.train, r.template, tokenizer)
    if not train:
        raise DataError(
            f"no record of {r.train.path} fits tokenizer.max_length {max_len} ({stats.skipped:,} skipped)",
            where=cfg.where("tokenizer.max_length"),
            key="tokenizer.max_length",
            hint="raise tokenizer.max_length",
        )
    val, val_stats = _encode(cfg, r.validation, r.template, tokenizer) if r.validation else ([], None)
    items: list[Any] = train
    if cfg.sft.packing:
        order = list(train)
        random.Random(cfg.seed).shuffle(order)
        items = sft_data.pack(order, max_len)
    lengths = [len(x) for x in items]
    pad_id = tokenizer.pad_token_id
    step = sampler.global_batch(t, hw.world.size)
    grouped = t.group_by_length and not cfg.sft.packing

    def evaluate(m: Any) -> dict[str, Any]:
        metrics = score(m, val, t.eval_batch_size, hw)
        if t.best_metric in GENERATION_METRICS:
            n = cfg.evaluate.generate or len(val)
            metrics.update(generation_metrics(cfg, r.validation, (m, tokenizer, hw), n)[0])
        return metrics

    packed = (
        f", packed into {len(items):,} rows ({sft_data.fill_rate(items, max_len):.0%} full)"
        if cfg.sft.packing
        else ""
    )
    return TrainingData(
        batches=sampler.EpochBatches(
            lambda epoch: sampler.epoch_batches(
                lengths, step, seed=cfg.seed, epoch=epoch, group_by_length=grouped
            )
        ),
        collate=lambda idx: collate([items[i] for i in idx], pad_id, hw.device),
        loss_sum=lambda m, b: loss_sum(m, b, hw.autocast),
        count=count,
        soft_mask=soft_mask,
        evaluate=evaluate if val else None,
        lower_is_better=LOWER_IS_BETTER,
        tokens=lambda b: int(b["tokens"]),
        seq_len=max_len,
        blocks=False,
        summary=[
            ("task", f"{TITLE}: {_describe(cfg)}"),
            (
                "train",
                f"{stats.describe()}; {stats.trained_tokens:,} of {stats.tokens:,} tokens trained{packed}",
            ),
            ("validation", val_stats.describe() if val_stats else "none"),
        ],
    )


def collate(examples: list[Any], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    import torch

    batch = sft_data.collate(examples, pad_id, "pt")
    lengths = batch.pop("lengths")
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["tokens"] = torch.tensor(sum(lengths))
    return out


def loss_sum(model: Any, batch: dict[str, torch.Tensor], autocast: Callable[[], Any]) -> torch.Tensor:
    """Summed next-token cross-entropy over the trained (reply) tokens; labels are aligned with the
    inputs, as in transformers, and shifted here. No KV cache: with one, transformers ignores the
    position-id boundaries of packed rows and attention would cross examples.

    The output layer runs only at the positions where some row of the batch has a reply token to
    predict (`logits_to_keep`): prompts take no vocabulary-sized logits, saving the head's compute
    and a (batch × prompt length × vocabulary) fp32 tensor."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    labels = batch["labels"][:, 1:]  # (B, T-1): the token position t predicts
    if _keeps_logits(model):
        positions = (labels != sft_data.IGNORE).any(0).nonzero().squeeze(1)  # (P,)
        with autocast():
            logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits  # (B, P, V)
        return lm.summed_cross_entropy(logits, labels[:, positions])
    with autocast():
        logits = model(**inputs, use_cache=False).logits
    return lm.summed_cross_entropy(logits[:, :-1], labels)


def soft_mask(batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Distillation: the logits positions `loss_sum` scores, (B, T) booleans for (B, T, V) logits —
    every position (the last predicts nothing), or only those `logits_to_keep` kept."""
    import torch.nn.functional as F

    trained = batch["labels"][:, 1:] != sft_data.IGNORE  # (B, T-1): position t predicts token t+1
    if logits.shape[1] == trained.shape[1] + 1:
        return F.pad(trained, (0, 1))
    return trained[:, trained.any(0)]


def _keeps_logits(model: Any) -> bool:
    """Whether the transformers model inside the wrappers (compile, DDP, peft) takes `logits_to_keep`."""
    import inspect

    for attr in ("_orig_mod", "module"):
        model = getattr(model, attr, model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return "logits_to_keep" in inspect.signature(type(model).forward).parameters


def count(batch: dict[str, torch.Tensor]) -> int:
    return max(1, int((batch["labels"][:, 1:] != sft_data.IGNORE).sum()))


def score(model: Any, examples: list[Any], batch_size: int, hw: Hardware) -> dict[str, Any]:
    """Response-token loss and perplexity of the examples (sharded over a distributed run's processes)."""
    import torch

    from ptft_cli.data.sampler import inference_batches

    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def run(idx: list[int]) -> tuple[float, int]:
        batch = collate([examples[i] for i in idx], pad_id, hw.device)
        with torch.inference_mode():
            return loss_sum(model, batch, hw.eval_autocast).item(), count(batch)

    was_training = model.training
    model.eval()
    results = hw.world.map_shards(inference_batches([len(e) for e in examples], batch_size), run)
    model.train(was_training)
    return lm.lm_metrics(sum(r[0] for r in results), sum(r[1] for r in results), None, None)


# ---------------------------------------------------------------------------------------------
# Generation: evaluate and predict


def generation_metrics(
    cfg: Config, table: data_io.Table, model: tuple[Any, Any, Hardware], n: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy replies to the first `n` records, scored against their own reply: exact match and
    format rate after `sft.answer_pattern` (else exact match of the whole stripped text)."""
    from ptft_cli.inference import generate

    m, tokenizer, hw = model
    tpl, opts = template(cfg), options(cfg)
    conversations = [tpl.conversation(table.rows[i], table.where(i)) for i in range(min(n, len(table.rows)))]
    prompts = [sft_data.generation_prompt(c, tokenizer, opts) for c in conversations]
    settings = lm.generation_settings(cfg)
    settings = type(settings)(**{**settings.__dict__, "do_sample": False})
    jobs = [prompts[i : i + settings.batch_size] for i in range(0, len(prompts), settings.batch_size)]
    replies = [
        row
        for rows in hw.world.map_shards(jobs, lambda p: generate(m, tokenizer, p, settings))
        for row in rows
    ]
    pattern = cfg.sft.answer_pattern
    references = [c[-1]["content"] for c in conversations]
    if pattern is not None:
        predicted = [sft_data.extract_answer(r["completion"], pattern) for r in replies]
        expected = [sft_data.extract_answer(ref, pattern) for ref in references]
        metrics = {
            "exact_match": sft_data.exact_match(predicted, expected),
            "format_rate": sft_data.format_rate(predicted),
        }
    else:
        predicted = [r["completion"].strip() for r in replies]
        expected = [ref.strip() for ref in references]
        metrics = {"exact_match": sft_data.exact_match(predicted, expected)}
    metrics["generated"] = len(replies)
    rows = [
        {
            "row": table.lines[i],
            "prompt": conversations[i][-2]["content"],
            "reference": references[i],
            "completion": reply["completion"],
            "answer": predicted[i],
            "expected": expected[i],
            "correct": predicted[i] is not None and predicted[i] == expected[i],
            "finish_reason": reply["finish_reason"],
        }
        for i, reply in enumerate(replies)
    ]
    return metrics, rows


def evaluation_inputs(cfg: Config, run: RunDir, model_ref: str) -> Inputs:
    """evaluate.data, else data.validation, else the records the run held out of its training file."""
    import json

    tpl = template(cfg)
    if cfg.evaluate.data or cfg.data.validation:
        key = "evaluate.data" if cfg.evaluate.data else "data.validation"
        table = _checked(_table(cfg, key), tpl, key)
    elif run.split_json.is_file():
        split = json.loads(run.split_json.read_text(encoding="utf-8"))
        path = split["data"]
        data_io.require_file(path, "data.train", cfg.where("data.train"))
        if Path(path).stat().st_size != split["bytes"]:
            raise DataError(
                f"{path} changed since the run held out its validation records",
                where=cfg.where("data.train"),
                key="data.train",
                hint="set evaluate.data to a file of records",
            )
        table = _rows(
            data_io.read_table(path, cfg.data.format, text_column=cfg.data.text_column), split["rows"]
        )
        table.path = f"{path} (held-out {split['validation_fraction']:.0%})"
    else:
        raise ConfigError(
            "no records to evaluate on",
            where=cfg.where("evaluate.data"),
            key="evaluate.data",
            hint="set evaluate.data (or data.validation) to a file of records",
        )
    if cfg.data.max_eval_samples is not None:
        table = _rows(table, list(range(min(cfg.data.max_eval_samples, len(table.rows)))))
    return Inputs(table, [("data", table.path)])


def evaluate(cfg: Config, inputs: Inputs, loaded: Loaded, progress: Callable[[int], None]) -> dict[str, Any]:
    table: data_io.Table = inputs.data
    examples, stats = _encode(cfg, table, template(cfg), loaded.tokenizer)
    metrics: dict[str, Any] = score(loaded.model, examples, cfg.training.eval_batch_size, loaded.hw)
    progress(len(examples))
    if cfg.evaluate.generate:
        scores, rows = generation_metrics(
            cfg, table, (loaded.model, loaded.tokenizer, loaded.hw), cfg.evaluate.generate
        )
        metrics.update(scores)
        metrics["generations"] = rows  # the runner writes them to eval/generations.jsonl
    metrics.update({"examples": stats.examples, "truncated": stats.truncated, "data": table.path})
    return metrics


def prediction_inputs(cfg: Config) -> Inputs:
    """Conversations to continue: `--prompt` (one user message), a .txt file (one per line), or
    records (.jsonl/.csv/...) rendered with the template (their reply, if any, left out)."""
    p = cfg.predict
    if p.prompt is not None:
        return Inputs(([[{"role": "user", "content": p.prompt}]], [0]), [("prompt", repr(p.prompt[:60]))])
    if not p.input:
        raise ConfigError(
            "nothing to predict",
            where=cfg.where("predict"),
            key="predict.input",
            hint="set predict.input or --prompt",
        )
    data_io.require_file(p.input, "predict.input", cfg.where("predict.input"))
    system = [{"role": "system", "content": cfg.sft.system}] if cfg.sft.system else []
    if data_io.detect_format(p.input, cfg.data.format) == "txt":
        lines = [line for line in Path(p.input).read_text(encoding="utf-8").splitlines() if line.strip()]
        chats = [[*system, {"role": "user", "content": line}] for line in lines]
        return Inputs((chats, list(range(len(chats)))), [("input", f"{len(chats):,} prompts from {p.input}")])
    table = data_io.read_table(p.input, cfg.data.format, text_column=cfg.data.text_column)
    tpl = template(cfg)
    chats = []
    for i, record in enumerate(table.rows):
        if tpl.messages is not None:
            chats.append(tpl.conversation(record, table.where(i)))
        else:
            prompt = sft_data.choose_prompt(tpl.prompt, record, table.where(i))
            chats.append([*system, {"role": "user", "content": prompt}])
    return Inputs((chats, table.lines), [("input", f"{len(chats):,} records from {p.input}")])


def predict(
    cfg: Config,
    inputs: Inputs,
    loaded: Loaded,
    progress: Callable[[int], None],
    stream: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Replies to each conversation, rendered as training rendered it; with `stream` and one
    conversation, the reply is written as it is generated."""
    from ptft_cli.inference import generate

    chats, ids = inputs.data
    opts = options(cfg)
    one = stream if len(chats) == 1 else None
    try:
        prompts = [sft_data.generation_prompt(c, loaded.tokenizer, opts) for c in chats]
        rows = generate(loaded.model, loaded.tokenizer, prompts, lm.generation_settings(cfg), progress, one)
    except (ValueError, PtftError) as e:
        raise DataError(str(e), where=cfg.predict.input or "--prompt", key="predict") from None
    finally:
        if one is not None:
            one("\n")
    return [
        {"id": i, "prompt": c[-1]["content"], **{k: v for k, v in row.items() if k != "prompt"}}
        for i, c, row in zip(ids, chats, rows)
    ]


def shown(row: dict[str, Any]) -> str:
    return row["completion"]
