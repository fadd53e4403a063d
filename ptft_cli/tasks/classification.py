"""Sequence classification: labelled examples, the model with a new head, loss, metrics, prediction.

The data half (`prepare`) is pure Python so `ptft validate` can run it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ptft_cli import data as data_io
from ptft_cli.config import Config
from ptft_cli.errors import DataError

if TYPE_CHECKING:
    import torch

    from ptft_cli.hardware import Hardware

METRICS = ("accuracy", "macro_f1", "loss")
LOWER_IS_BETTER = {"loss"}


@dataclass
class Examples:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    source: str  # file (or hub split) they came from, for messages


@dataclass
class Prepared:
    train: Examples
    validation: Examples | None
    labels: list[str]


# ---------------------------------------------------------------------------------------------
# Data (pure Python)


def _read(cfg: Config, path: str | None, split: str | None) -> data_io.Table:
    d = cfg.data
    if d.dataset:
        return data_io.read_hub_split(d.dataset, d.dataset_config, split or d.train_split)
    assert path is not None
    return data_io.read_table(path, d.format, text_column=d.text_column)


def _texts(table: data_io.Table, column: str, role: str) -> list[str]:
    values = table.column(column, role)
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
    table: data_io.Table, raw: list[Any], names: list[str], column: str, declared: bool
) -> list[int]:
    """Map each row's label to its id; a label outside the set is an error naming the row."""
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
            source = "data.labels" if declared else "the training labels"
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise DataError(
                f"label {v!r} is not in {source} ({shown})",
                where=table.where(i),
                key=column,
                hint="fix the row, or list every label in data.labels"
                if not declared
                else "add it to data.labels, or fix the row",
            )
    return ids


def _examples(cfg: Config, table: data_io.Table, names: list[str], declared: bool) -> Examples:
    d = cfg.data
    texts = _texts(table, d.text_column, "text")
    pairs = _texts(table, d.text_pair_column, "second text") if d.text_pair_column else None
    raw = table.column(d.label_column, "label")
    return Examples(texts, pairs, label_ids(table, raw, names, d.label_column, declared), table.path)


def _subset(ex: Examples, idx: list[int]) -> Examples:
    return Examples(
        [ex.texts[i] for i in idx],
        [ex.pairs[i] for i in idx] if ex.pairs else None,
        [ex.labels[i] for i in idx],
        ex.source,
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
    train_table = _read(cfg, d.train, d.train_split)
    declared = d.labels is not None
    names = list(d.labels) if declared else infer_label_names(train_table.column(d.label_column, "label"))
    if len(names) < 2:
        raise DataError(
            f"only one label ({names[0]!r}) in the training data",
            where=train_table.path,
            key=d.label_column,
            hint="a classifier needs 2+ labels",
        )
    train = _examples(cfg, train_table, names, declared)

    validation = None
    if d.validation or (d.dataset and d.validation_split):
        val_table = _read(cfg, d.validation, d.validation_split)
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
    if validation is not None and d.max_eval_samples is not None:
        validation = _subset(validation, list(range(min(d.max_eval_samples, len(validation.labels)))))
    return Prepared(train, validation, names)


def read_labelled(cfg: Config, path: str, names: list[str]) -> Examples:
    """A labelled file for `evaluate`, checked against the model's label names."""
    table = data_io.read_table(path, cfg.data.format, text_column=cfg.data.text_column)
    return _examples(cfg, table, names, True)


# ---------------------------------------------------------------------------------------------
# Metrics (pure Python)


def confusion(y_true: list[int], y_pred: list[int], k: int) -> list[list[int]]:
    m = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        m[t][p] += 1
    return m


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
# Model, batches, loss (torch)


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | None

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def encode(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, labels: list[int] | None, max_length: int
) -> Encoded:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), labels)


def collate(enc: Encoded, idx: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    from ptft_cli.batching import attention_mask, pad

    seqs = [enc.input_ids[i] for i in idx]
    batch = {"input_ids": pad(seqs, pad_id), "attention_mask": attention_mask(seqs)}
    if enc.token_type_ids is not None:
        batch["token_type_ids"] = pad([enc.token_type_ids[i] for i in idx], 0)
    if enc.labels is not None:
        import torch

        batch["labels"] = torch.as_tensor([enc.labels[i] for i in idx], dtype=torch.long)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def build_model(cfg: Config, ref: str, labels: list[str], attn: str, where: str) -> Any:
    """A pretrained encoder with a freshly initialised head sized for `labels`."""
    from transformers import AutoModelForSequenceClassification

    from ptft_cli import models

    config = models.load_config(
        ref,
        cfg.model,
        "model.name_or_path",
        where,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        ref,
        config=config,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=attn,
        ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a new head
    )
    models.freeze(model, cfg.model)
    return model


def load_trained(ref: str, cfg: Config, attn: str, where: str, key: str) -> Any:
    """A fine-tuned classifier as saved by `finetune` (or any sequence-classification checkpoint)."""
    from transformers import AutoModelForSequenceClassification

    from ptft_cli import models

    config = models.load_config(ref, cfg.model, key, where)
    if not getattr(config, "id2label", None):
        raise DataError(f"{ref} has no label names (id2label)", where=where, key=key)
    return AutoModelForSequenceClassification.from_pretrained(
        ref,
        config=config,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=attn,
    )


def label_names(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def ensure_pad_token(tokenizer: Any, model: Any) -> None:
    """Decoder models (GPT-2, LLaMA) ship without a pad token; classification pads with EOS."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


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
    model: Any, batches: list[list[int]], enc: Encoded, pad_id: int, hw: Hardware, progress: Any = None
) -> Any:
    """Softmax probabilities for every example (in input order) and the summed loss if labelled."""
    import torch
    import torch.nn.functional as F

    n_classes = model.config.num_labels
    probs = torch.empty(len(enc.input_ids), n_classes)
    total_loss = 0.0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idx in batches:
            batch = collate(enc, idx, pad_id, hw.device)
            labels = batch.pop("labels", None)
            with hw.autocast():
                logits = model(**batch).logits.float()
            if labels is not None:
                total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            probs[torch.as_tensor(idx)] = logits.softmax(-1).cpu()
            if progress is not None:
                progress(len(idx))
    model.train(was_training)
    return probs, total_loss


def evaluate(
    model: Any,
    enc: Encoded,
    names: list[str],
    pad_id: int,
    batch_size: int,
    hw: Hardware,
    progress: Any = None,
) -> dict[str, Any]:
    from ptft_cli.batching import inference_batches

    probs, total_loss = forward_probs(
        model, inference_batches(enc.lengths, batch_size), enc, pad_id, hw, progress
    )
    assert enc.labels is not None
    predicted = probs.argmax(-1).tolist()
    return {"loss": total_loss / len(enc.labels), **report(enc.labels, predicted, names)}
