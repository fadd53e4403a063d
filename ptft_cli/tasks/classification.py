"""Sequence classification: labelled examples, a pretrained encoder with a new head, loss, metrics,
labels and probabilities.

The data half (`read_inputs`, `evaluation_inputs`, `prediction_inputs`) is pure Python so
`ptft validate` can run it without importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptft_cli.config import Config
from ptft_cli.data import files as data_io
from ptft_cli.errors import ConfigError, DataError
from ptft_cli.models import Head, label_names_of
from ptft_cli.tasks import Inputs, Loaded

if TYPE_CHECKING:
    import torch

    from ptft_cli.checkpoint import RunDir
    from ptft_cli.hardware import Hardware
    from ptft_cli.loop import TrainingData

NAME = "classification"
TITLE = "classification"
COMMANDS = ("finetune",)
METRICS = ("accuracy", "macro_f1", "loss")
LOWER_IS_BETTER = frozenset({"loss"})
PREDICTION_FORMATS = (".jsonl", ".csv")


@dataclass
class Examples:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    source: str  # file (or hub split) they came from, for messages
    groups: list[str] | None = None  # evaluate.group_by: each row's group


@dataclass
class Prepared:
    train: Examples
    validation: Examples | None
    labels: list[str]
    held_out: list[int] | None = None  # rows of the training file held out for validation


# ---------------------------------------------------------------------------------------------
# Data (pure Python)


def _read(cfg: Config, key: str, split: str | None) -> data_io.Table:
    """The file named by config `key` (data.train, data.validation, ...) or a Hub split."""
    d = cfg.data
    if d.dataset:
        return data_io.read_hub_split(d.dataset, d.dataset_config, split or d.train_split)
    section, name = key.split(".")
    path = getattr(getattr(cfg, section), name)
    data_io.require_file(path, key, cfg.where(key))
    return data_io.read_table(path, d.format, text_column=d.text_column)


def _texts(table: data_io.Table, column: str, role: str, key: str) -> list[str]:
    values = table.column(column, role, key)
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataError(
                f"empty {role} in column {column!r}",
                where=table.where(i),
                hint="remove the row or fill it in",
            )
        if not isinstance(v, str):
            raise DataError(
                f"{role} in column {column!r} is a {type(v).__name__}, not text: {v!r}", where=table.where(i)
            )
        out.append(v.strip())
    return out


def _label_key(v: Any) -> str:
    """Labels compare as text: 1, "1" and 1.0 in a csv/json file are the same label."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def infer_label_names(raw: list[Any]) -> list[str]:
    """Sorted distinct labels; integer-looking labels sort numerically (0, 1, 2, ..., 10)."""
    keys = sorted({_label_key(v) for v in raw})
    if all(k.lstrip("-").isdigit() for k in keys):
        keys.sort(key=int)
    return keys


def label_ids(
    table: data_io.Table, raw: list[Any], names: list[str], column: str, declared: bool | str
) -> list[int]:
    """Map each row's label to its id; a label outside the set is an error naming the row.

    `declared`: True when the names come from data.labels, False when inferred from the training
    file, "model" when they are a trained model's (evaluate)."""
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataError(
                f"empty label in column {column!r}", where=table.where(i), hint="every row needs a label"
            )
        key = _label_key(v)
        if key in index:
            ids.append(index[key])
        elif declared and key.isdigit() and int(key) < len(names) and not isinstance(v, bool):
            ids.append(int(key))  # an integer id into data.labels
        else:
            source, hint = {
                True: ("data.labels", "add it to data.labels, or fix the row"),
                False: ("the training labels", "fix the row, or list every label in data.labels"),
                "model": ("the model's labels", "fix the row, or evaluate a model trained with that label"),
            }[declared]
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise DataError(
                f"label {v!r} is not in {source} ({shown})", where=table.where(i), key=column, hint=hint
            )
    return ids


def _examples(cfg: Config, table: data_io.Table, names: list[str], declared: bool | str) -> Examples:
    d = cfg.data
    texts = _texts(table, d.text_column, "text", "data.text_column")
    pairs = (
        _texts(table, d.text_pair_column, "second text", "data.text_pair_column")
        if d.text_pair_column
        else None
    )
    raw = table.column(d.label_column, "label", "data.label_column")
    return Examples(texts, pairs, label_ids(table, raw, names, d.label_column, declared), table.path)


def _subset(ex: Examples, idx: list[int]) -> Examples:
    return Examples(
        [ex.texts[i] for i in idx],
        [ex.pairs[i] for i in idx] if ex.pairs else None,
        [ex.labels[i] for i in idx],
        ex.source,
        [ex.groups[i] for i in idx] if ex.groups is not None else None,
    )


def prepare(cfg: Config) -> Prepared:
    """Read and check train/validation data: columns, empty rows, label sets, split sizes."""
    d = cfg.data
    if not d.dataset and not d.train:
        raise DataError(
            "no training data",
            where=cfg.where("data"),
            key="data.train",
            hint="set data.train (a file) or data.dataset",
        )
    train_table = _read(cfg, "data.train", d.train_split)
    declared = d.labels is not None
    names = (
        list(d.labels)
        if declared
        else infer_label_names(train_table.column(d.label_column, "label", "data.label_column"))
    )
    if len(names) < 2:
        raise DataError(
            f"only one label ({names[0]!r}) in the training data",
            where=train_table.path,
            key=d.label_column,
            hint="a classifier needs 2+ labels",
        )
    train = _examples(cfg, train_table, names, declared)
    present = sorted(set(train.labels))
    if len(present) < 2:
        only = names[present[0]] if present else "none"
        raise DataError(
            f"every training row has the label {only!r} ({len(train.labels):,} rows); "
            f"a classifier needs examples of 2+ of the labels ({', '.join(names[:10])})",
            where=train_table.path,
            key=d.label_column,
            hint="add rows of the other labels",
        )

    validation, held = None, None
    if d.validation or (d.dataset and d.validation_split):
        val_table = _read(cfg, "data.validation", d.validation_split)
        validation = _examples(cfg, val_table, names, declared)
    elif d.validation_fraction > 0:
        keep, held = data_io.split_off(len(train.labels), d.validation_fraction, cfg.seed)
        if not keep:
            raise DataError(
                f"validation_fraction {d.validation_fraction} leaves no training rows out of {len(train.labels)}",
                where=cfg.where("data.validation_fraction"),
                key="data.validation_fraction",
            )
        validation = _subset(train, held)
        validation.source = f"{train.source} (held-out {d.validation_fraction:.0%})"
        train = _subset(train, keep)
    train = _subset(train, data_io.seeded_subset(len(train.labels), d.max_train_samples, cfg.seed))
    if validation is not None:
        validation = _first(validation, d.max_eval_samples)
    return Prepared(train, validation, names, held)


def _first(ex: Examples, n: int | None) -> Examples:
    return ex if n is None else _subset(ex, list(range(min(n, len(ex.labels)))))


def read_labelled(cfg: Config, key: str, names: list[str]) -> Examples:
    """The labelled file named by config `key`, for `evaluate`, checked against the model's labels."""
    section, name = key.split(".")
    path = getattr(getattr(cfg, section), name)
    data_io.require_file(path, key, cfg.where(key))
    table = data_io.read_table(path, cfg.data.format, text_column=cfg.data.text_column)
    examples = _examples(cfg, table, names, "model")
    examples.groups = groups_of(cfg, table)
    return examples


def groups_of(cfg: Config, table: data_io.Table) -> list[str] | None:
    """Each row's value in the evaluate.group_by column (None when not grouping); a row without one
    is its own group, `(none)`."""
    column = cfg.evaluate.group_by
    if column is None:
        return None
    missing = next((i for i, row in enumerate(table.rows) if column not in row), None)
    if missing is not None:
        present = ", ".join(map(str, table.rows[missing])) or "none"
        raise DataError(
            f"no column {column!r} to group by (evaluate.group_by, {cfg.where('evaluate.group_by')}); "
            f"its columns: {present}",
            where=table.where(missing),
            key="evaluate.group_by",
            hint="set evaluate.group_by to one of its columns, or add the column to the file",
        )
    values = [row[column] for row in table.rows]
    return [_label_key(v) if v is not None and str(v).strip() else "(none)" for v in values]


# ---------------------------------------------------------------------------------------------
# Metrics (pure Python)


def confusion(y_true: list[int], y_pred: list[int], k: int) -> list[list[int]]:
    m = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        m[t][p] += 1
    return m


def group_report(y_true: list[int], y_pred: list[int], groups: list[str], names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and support per group, and the largest gap between two groups for each
    metric (max - min), e.g. to compare a classifier across demographics or domains."""
    per_group: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        r = report([y_true[i] for i in idx], [y_pred[i] for i in idx], names)
        per_group[g] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "support": len(idx)}
    out: dict[str, Any] = {"per_group": per_group}
    for metric in ("accuracy", "macro_f1"):
        low = min(per_group, key=lambda g: per_group[g][metric])
        high = max(per_group, key=lambda g: per_group[g][metric])
        out[f"group_{metric}_gap"] = per_group[high][metric] - per_group[low][metric]
        out[f"group_{metric}_range"] = {"lowest": low, "highest": high}
    return out


def report(y_true: list[int], y_pred: list[int], names: list[str]) -> dict[str, Any]:
    """accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(names)
    m = confusion(y_true, y_pred, k)
    per_class = {}
    for c, name in enumerate(names):
        tp = m[c][c]
        predicted = sum(m[r][c] for r in range(k))
        actual = sum(m[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    # Macro-F1 averages over classes present in the data or the predictions (as scikit-learn does
    # with its default labels), so a class absent from both does not count as a zero.
    present = [n for c, n in enumerate(names) if per_class[n]["support"] or sum(m[r][c] for r in range(k))]
    macro_f1 = sum(per_class[n]["f1"] for n in present) / len(present) if present else 0.0
    correct = sum(m[c][c] for c in range(k))
    return {
        "accuracy": correct / len(y_true) if y_true else 0.0,
        "macro_f1": macro_f1,
        "per_class": per_class,
        "confusion_matrix": m,
        "labels": names,
    }


# ---------------------------------------------------------------------------------------------
# The task: config rules, inputs, head, training data, evaluate, predict


def check_config(cfg: Config) -> list[ConfigError]:
    problems = []
    m, d = cfg.model, cfg.data
    if m.architecture:
        problems.append(
            ConfigError(
                "classification fine-tunes a pretrained model",
                where=cfg.where("model.architecture"),
                key="model.architecture",
                hint="pretrain one first (ptft pretrain), then set model.name_or_path",
            )
        )
    if d.labels is not None and len(set(d.labels)) != len(d.labels):
        problems.append(
            ConfigError("label names must be distinct", where=cfg.where("data.labels"), key="data.labels")
        )
    if d.labels is not None and len(d.labels) < 2:
        problems.append(
            ConfigError(
                "a classifier needs at least 2 labels", where=cfg.where("data.labels"), key="data.labels"
            )
        )
    for key in ("data.train", "data.validation"):
        value = getattr(d, key.split(".")[1])
        if isinstance(value, list):
            problems.append(
                ConfigError(
                    f"classification reads one file per split, got a list of {len(value)}",
                    where=cfg.where(key),
                    key=key,
                    hint="join the files into one, or name one file",
                )
            )
    if not d.packing:
        problems.append(
            ConfigError(
                "packing: false (one document per example) is for task: mlm",
                where=cfg.where("data.packing"),
                key="data.packing",
            )
        )
    return problems


def _label_summary(names: list[str]) -> str:
    return f"{len(names)}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"


def read_inputs(cfg: Config, command: str) -> Inputs:
    p = prepare(cfg)
    if cfg.training.best_metric and p.validation is None:
        raise ConfigError(
            "needs validation data to compare models",
            where=cfg.where("training.best_metric"),
            key="training.best_metric",
            hint="set data.validation or data.validation_fraction > 0, or remove best_metric",
        )
    summary = [
        ("labels", _label_summary(p.labels)),
        ("train", f"{len(p.train.labels):,} rows from {p.train.source}"),
        (
            "validation",
            f"{len(p.validation.labels):,} rows from {p.validation.source}" if p.validation else "none",
        ),
    ]
    files = [Path(f) for f in (cfg.data.train, cfg.data.validation) if f and not cfg.data.dataset]
    split = None
    if p.held_out is not None and isinstance(cfg.data.train, str):
        split = {
            "data": cfg.data.train,
            "bytes": Path(cfg.data.train).stat().st_size,
            "validation_fraction": cfg.data.validation_fraction,
            "rows": p.held_out,
        }
    return Inputs(p, summary, files, lambda: iter(p.train.texts + (p.train.pairs or [])), split)


def head(cfg: Config, inputs: Inputs | None) -> Head:
    if inputs is None:
        return Head(
            "AutoModelForSequenceClassification",
            "a classifier",
            needs_labels=True,
            pads=True,
            peft_task="SEQ_CLS",
        )
    labels = inputs.data.labels
    config = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    return Head(
        "AutoModelForSequenceClassification",
        "a classifier",
        config,
        new_head=True,
        pads=True,
        cls_sep=True,
        peft_task="SEQ_CLS",
    )


def training_data(cfg: Config, inputs: Inputs, tokenizer: Any, hw: Hardware) -> TrainingData:
    from ptft_cli.data import sampler
    from ptft_cli.loop import TrainingData

    p: Prepared = inputs.data
    t, max_len = cfg.training, cfg.tokenizer.max_length
    train = encode(tokenizer, p.train.texts, p.train.pairs, p.train.labels, max_len)
    v = p.validation
    val = encode(tokenizer, v.texts, v.pairs, v.labels, max_len) if v is not None else None
    lengths = train.lengths

    def batches_of(epoch: int) -> list[list[int]]:
        return sampler.epoch_batches(
            lengths,
            sampler.global_batch(t, hw.world.size),
            seed=cfg.seed,
            epoch=epoch,
            group_by_length=t.group_by_length,
        )

    def evaluate(m: Any) -> dict[str, Any]:
        return evaluate_examples(m, val, p.labels, t.eval_batch_size, hw)

    grouped = ", grouped by length" if t.group_by_length else ""
    return TrainingData(
        batches=sampler.EpochBatches(batches_of),
        collate=lambda idx: collate(train, idx, hw.device),
        loss_sum=lambda m, batch: loss_sum(m, batch, hw, t.label_smoothing),
        count=lambda batch: int(batch["labels"].shape[0]),
        evaluate=evaluate if val is not None else None,
        lower_is_better=LOWER_IS_BETTER,
        summary=[
            ("task", f"classification, {_label_summary(p.labels)}"),
            (
                "train",
                f"{len(lengths):,} examples, {sum(lengths) / len(lengths):.1f} tokens on average (max {max_len}){grouped}",
            ),
            (
                "validation",
                f"{len(val.lengths):,} examples ({v.source})"
                if val is not None and v is not None
                else "none",
            ),
        ],
    )


def evaluation_inputs(cfg: Config, run: RunDir, model_ref: str) -> Inputs:
    """evaluate.data, else data.validation, else the rows the run held out of its training file."""
    names = label_names_of(model_ref)
    key = "evaluate.data" if cfg.evaluate.data else "data.validation" if cfg.data.validation else None
    if key is not None:
        examples = read_labelled(cfg, key, names) if names else None
        source = cfg.evaluate.data or cfg.data.validation
        if examples is None and cfg.evaluate.group_by:  # the group column is checked before loading
            _check_groups(cfg, getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]), key)
        if key == "data.validation" and examples is not None:
            examples = _first(examples, cfg.data.max_eval_samples)
        return Inputs((key, examples), [("data", f"{source}")])
    if run.split_json.is_file():
        split = json.loads(run.split_json.read_text(encoding="utf-8"))
        if cfg.evaluate.group_by:
            _check_groups(cfg, split["data"], "data.train")
        return Inputs(("split", split), [("data", f"rows held out of {split['data']}")])
    raise ConfigError(
        "no labelled data to evaluate on",
        where=cfg.where("evaluate.data"),
        key="evaluate.data",
        hint="set evaluate.data (or data.validation) to a labelled file",
    )


def _check_groups(cfg: Config, path: str, key: str) -> None:
    """The evaluation file `path` (named by config `key`) has the evaluate.group_by column."""
    data_io.require_file(path, key, cfg.where(key))
    groups_of(cfg, data_io.read_table(path, cfg.data.format, text_column=cfg.data.text_column))


def _held_out(cfg: Config, split: dict[str, Any], names: list[str]) -> Examples:
    """The validation rows a run held out of its training file (split.json), read again."""
    path = split["data"]
    data_io.require_file(path, "data.train", cfg.where("data.train"))
    if Path(path).stat().st_size != split["bytes"]:
        raise DataError(
            f"{path} changed since the run held out its validation rows",
            where=cfg.where("data.train"),
            key="data.train",
            hint="set evaluate.data to a labelled file",
        )
    table = data_io.read_table(path, cfg.data.format, text_column=cfg.data.text_column)
    examples = _examples(cfg, table, names, "model")
    examples.groups = groups_of(cfg, table)
    examples = _subset(examples, split["rows"])
    examples.source = f"{path} (held-out {split['validation_fraction']:.0%})"
    return _first(examples, cfg.data.max_eval_samples)


def evaluate(cfg: Config, inputs: Inputs, loaded: Loaded, progress: Callable[[int], None]) -> dict[str, Any]:
    kind, payload = inputs.data
    names = label_names(loaded.model)
    if kind == "split":
        examples = _held_out(cfg, payload, names)
    else:
        examples = payload or read_labelled(cfg, kind, names)
        if kind == "data.validation" and payload is None:
            examples = _first(examples, cfg.data.max_eval_samples)
    enc = encode(loaded.tokenizer, examples.texts, examples.pairs, examples.labels, cfg.tokenizer.max_length)
    predicted, loss = _scored(loaded.model, enc, cfg.training.eval_batch_size, loaded.hw, progress)
    assert enc.labels is not None
    metrics = {"loss": loss / len(enc.labels), **report(enc.labels, predicted, names)}
    if examples.groups is not None:
        metrics["group_by"] = cfg.evaluate.group_by
        metrics.update(group_report(enc.labels, predicted, examples.groups, names))
    metrics.update({"examples": len(enc.labels), "data": examples.source})
    return metrics


def prediction_inputs(cfg: Config) -> Inputs:
    """(texts, pairs, ids) from predict.input; ids are the file's `id` field or its line numbers."""
    path = cfg.predict.input
    if not path:
        raise ConfigError(
            "no input texts",
            where=cfg.where("predict.input"),
            key="predict.input",
            hint="pass --input FILE or set predict.input",
        )
    texts, pairs, ids = _read_texts(cfg, path, "predict.input")
    return Inputs((texts, pairs, ids), [("predict.input", f"{len(texts):,} texts from {path}")])


def explanation_inputs(cfg: Config) -> Inputs:
    """(texts, pairs, ids) for `ptft explain`: explain.text, else the file explain.input (or
    predict.input), at most explain.max_examples of them."""
    e = cfg.explain
    if e.text is not None:
        return Inputs(([e.text.strip()], None, [1]), [("explain.text", "1 text")])
    key = "explain.input" if e.input else "predict.input"
    path = e.input or cfg.predict.input
    if not path:
        raise ConfigError(
            "no texts to explain",
            where=cfg.where("explain.input"),
            key="explain.input",
            hint='pass --input FILE or --text "...", or set explain.input',
        )
    texts, pairs, ids = _read_texts(cfg, path, key)
    n = min(len(texts), e.max_examples)
    shown = f"{n:,} of {len(texts):,} texts" if n < len(texts) else f"{n:,} texts"
    return Inputs((texts[:n], pairs[:n] if pairs else None, ids[:n]), [(key, f"{shown} from {path}")])


def _read_texts(cfg: Config, path: str, key: str) -> tuple[list[str], list[str] | None, list[Any]]:
    data_io.require_file(path, key, cfg.where(key))
    fmt = data_io.detect_format(path, "auto")
    if fmt not in ("txt", "jsonl", "csv", "tsv", "json", "parquet"):
        raise DataError(f"cannot read texts from {fmt}", where=path)
    table = data_io.read_table(path, fmt, text_column=cfg.data.text_column)
    texts = _texts(table, cfg.data.text_column, "text", "data.text_column")
    pairs = (
        _texts(table, cfg.data.text_pair_column, "second text", "data.text_pair_column")
        if cfg.data.text_pair_column and fmt != "txt"
        else None
    )
    ids = (
        [row.get("id", line) for row, line in zip(table.rows, table.lines)]
        if fmt != "txt"
        else list(table.lines)
    )
    return texts, pairs, ids


def predict(
    cfg: Config,
    inputs: Inputs,
    loaded: Loaded,
    progress: Callable[[int], None],
    stream: Callable[[str], None] | None = None,  # not used: nothing to stream
) -> list[dict[str, Any]]:
    from ptft_cli.data.sampler import inference_batches

    texts, pairs, ids = inputs.data
    labels = label_names(loaded.model)
    enc = encode(loaded.tokenizer, texts, pairs, None, cfg.tokenizer.max_length)
    batches = inference_batches(enc.lengths, cfg.training.eval_batch_size)
    probs, _ = forward_probs(loaded.model, batches, enc, loaded.hw, progress)
    rows = []
    for i, text, p in zip(ids, texts, probs.tolist()):
        best = max(range(len(p)), key=p.__getitem__)
        rows.append(
            {
                "id": i,
                "text": text,
                "label": labels[best],
                "score": p[best],
                "probabilities": dict(zip(labels, p)),
            }
        )
    return rows


def shown(row: dict[str, Any]) -> str:
    return f"{row['label']} ({row['score']:.3f})"


# ---------------------------------------------------------------------------------------------
# Model, batches, loss (torch)


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | None
    pad_id: int  # what batches are padded with

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def encode(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, labels: list[int] | None, max_length: int
) -> Encoded:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), labels, tokenizer.pad_token_id)


def collate(enc: Encoded, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    from ptft_cli.data.collate import attention_mask, pad

    seqs = [enc.input_ids[i] for i in idx]
    batch = {"input_ids": pad(seqs, enc.pad_id), "attention_mask": attention_mask(seqs)}
    if enc.token_type_ids is not None:
        batch["token_type_ids"] = pad([enc.token_type_ids[i] for i in idx], 0)
    if enc.labels is not None:
        import torch

        batch["labels"] = torch.as_tensor([enc.labels[i] for i in idx], dtype=torch.long)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def label_names(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def loss_sum(
    model: Any, batch: dict[str, torch.Tensor], hw: Hardware, label_smoothing: float
) -> torch.Tensor:
    """Summed cross-entropy of a batch (the loop divides by the examples in the optimizer step)."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with hw.autocast():
        logits = model(**inputs).logits
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum", label_smoothing=label_smoothing)


def forward_probs(
    model: Any, batches: list[list[int]], enc: Encoded, hw: Hardware, progress: Any = None
) -> Any:
    """Softmax probabilities for every example (in input order) and the summed loss if labelled."""
    import torch
    import torch.nn.functional as F

    n_classes = model.config.num_labels
    was_training = model.training
    model.eval()

    def run(idx: list[int]) -> tuple[torch.Tensor, float]:
        batch = collate(enc, idx, hw.device)
        labels = batch.pop("labels", None)
        with torch.inference_mode(), hw.eval_autocast():
            logits = model(**batch).logits.float()
        loss = F.cross_entropy(logits, labels, reduction="sum").item() if labels is not None else 0.0
        if progress is not None:
            progress(len(idx))
        return logits.softmax(-1).cpu(), loss

    # in a distributed run each process scores every N-th batch; the sum runs in batch order
    results = hw.world.map_shards(batches, run)
    model.train(was_training)
    probs = torch.empty(len(enc.input_ids), n_classes)
    total_loss = 0.0
    for idx, (p, loss) in zip(batches, results):
        probs[torch.as_tensor(idx)] = p
        total_loss += loss
    return probs, total_loss


def evaluate_examples(
    model: Any, enc: Encoded, names: list[str], batch_size: int, hw: Hardware, progress: Any = None
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1, per-class scores and the confusion matrix of labelled examples."""
    predicted, total_loss = _scored(model, enc, batch_size, hw, progress)
    assert enc.labels is not None
    return {"loss": total_loss / len(enc.labels), **report(enc.labels, predicted, names)}


def _scored(
    model: Any, enc: Encoded, batch_size: int, hw: Hardware, progress: Any
) -> tuple[list[int], float]:
    """The predicted class of every example (input order) and the summed loss."""
    from ptft_cli.data.sampler import inference_batches

    probs, total_loss = forward_probs(model, inference_batches(enc.lengths, batch_size), enc, hw, progress)
    return probs.argmax(-1).tolist(), total_loss
