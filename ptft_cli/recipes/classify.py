"""Sequence classification: validate, finetune, evaluate and predict.

Each recipe runs in the same order: (1) preflight, pure checks that write nothing; (2) load the
tokenizer and model; (3) claim the output directory; (4) work; (5) write results. A user error at
any point before (3) leaves the disk untouched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ptft_cli import console
from ptft_cli.checkpoint import RunDir, atomic_write_json, atomic_write_text
from ptft_cli.config import Config
from ptft_cli.errors import ConfigError, DataError, RunDirError
from ptft_cli.recipes.common import check_output_dir, fit, trained_model_ref
from ptft_cli.tasks import classification


def _preflight_finetune(cfg: Config, overwrite: bool) -> classification.Prepared:
    from ptft_cli import models

    models.check_ref(cfg.model.name_or_path, "model.name_or_path", cfg.where("model.name_or_path"))
    if cfg.tokenizer.name_or_path:
        models.check_ref(
            cfg.tokenizer.name_or_path,
            "tokenizer.name_or_path",
            cfg.where("tokenizer.name_or_path"),
            what="tokenizer",
        )
    prepared = classification.prepare(cfg)
    if cfg.training.best_metric and prepared.validation is None:
        raise ConfigError(
            "needs validation data to compare models",
            where=cfg.where("training.best_metric"),
            key="training.best_metric",
            hint="set data.validation or data.validation_fraction > 0, or remove best_metric",
        )
    check_output_dir(cfg, overwrite)
    return prepared


# ---------------------------------------------------------------------------------------------
# validate


def validate(cfg: Config) -> None:
    """Check the config and data the way `finetune`/`evaluate`/`predict` would, without torch."""
    from ptft_cli import models

    models.check_ref(cfg.model.name_or_path, "model.name_or_path", cfg.where("model.name_or_path"))
    if cfg.data.dataset:
        console.key_values(
            f"{cfg.source}: valid",
            [("task", cfg.task), ("data", f"Hub dataset {cfg.data.dataset} (checked when training starts)")],
        )
        return
    prepared = classification.prepare(cfg)
    rows = [
        ("task", cfg.task),
        ("model", cfg.model.name_or_path),
        (
            "labels",
            f"{len(prepared.labels)}: {', '.join(prepared.labels[:10])}{' ...' if len(prepared.labels) > 10 else ''}",
        ),
        ("train", f"{len(prepared.train.labels):,} rows from {prepared.train.source}"),
        (
            "validation",
            f"{len(prepared.validation.labels):,} rows from {prepared.validation.source}"
            if prepared.validation
            else "none",
        ),
        ("output_dir", cfg.output_dir),
    ]
    if cfg.predict.input:
        texts = _read_predict_input(cfg)
        rows.append(("predict.input", f"{len(texts[0]):,} texts from {cfg.predict.input}"))
    if cfg.evaluate.data:
        table_rows = classification.read_labelled(cfg, cfg.evaluate.data, prepared.labels)
        rows.append(("evaluate.data", f"{len(table_rows.labels):,} rows from {cfg.evaluate.data}"))
    console.key_values(f"{cfg.source}: valid", rows)
    try:
        RunDir(cfg.output_dir).check_claimable(overwrite=False, where=cfg.where("output_dir"))
    except RunDirError as e:
        console.warn(f"finetune would refuse to start: {e.line()}")


# ---------------------------------------------------------------------------------------------
# finetune


def finetune(cfg: Config, *, overwrite: bool = False) -> dict[str, Any]:
    prepared = _preflight_finetune(cfg, overwrite)

    import torch

    from ptft_cli import batching, hardware, loop, models

    started = time.perf_counter()
    t = cfg.training
    torch.manual_seed(cfg.seed)
    hw = hardware.resolve(cfg.device, cfg.precision, training=True, where=cfg.where("device"))
    models.quiet_transformers()
    model_ref = cfg.model.name_or_path
    tok_key = "tokenizer.name_or_path" if cfg.tokenizer.name_or_path else "model.name_or_path"
    tokenizer = models.load_tokenizer(
        cfg.tokenizer.name_or_path or model_ref, cfg.model, tok_key, cfg.where(tok_key)
    )
    attn = hardware.attn_implementation(cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length)
    model = classification.build_model(cfg, model_ref, prepared.labels, attn, cfg.where("model.name_or_path"))
    classification.ensure_pad_token(tokenizer, model)
    model.to(hw.device)

    max_len, pad_id = cfg.tokenizer.max_length, tokenizer.pad_token_id
    tr, v = prepared.train, prepared.validation
    train = classification.encode(tokenizer, tr.texts, tr.pairs, tr.labels, max_len)
    val = classification.encode(tokenizer, v.texts, v.pairs, v.labels, max_len) if v is not None else None
    lengths = train.lengths

    def batches_of(epoch: int) -> list[list[int]]:
        return batching.epoch_batches(
            lengths, t.batch_size, seed=cfg.seed, epoch=epoch, group_by_length=t.group_by_length
        )

    def evaluate(m: Any) -> dict[str, Any]:
        return classification.evaluate(m, val, prepared.labels, pad_id, t.eval_batch_size, hw)

    hooks = loop.TaskHooks(
        epoch_batches=batches_of,
        collate=lambda idx: classification.collate(train, idx, pad_id, hw.device),
        loss_sum=lambda m, batch: classification.loss_sum(m, batch, hw, t.label_smoothing),
        count=lambda batch: int(batch["labels"].shape[0]),
        evaluate=evaluate if val is not None else None,
        lower_is_better=lambda name: name in classification.LOWER_IS_BETTER,
    )
    labels = ", ".join(prepared.labels[:8]) + (" ..." if len(prepared.labels) > 8 else "")
    rows = [
        ("task", f"classification, {len(prepared.labels)} labels: {labels}"),
        ("model", f"{model_ref} ({type(model).__name__}, attention {attn})"),
        (
            "train",
            f"{len(lengths):,} examples, {sum(lengths) / len(lengths):.1f} tokens on average (max {max_len})",
        ),
        ("validation", f"{len(val.lengths):,} examples ({v.source})" if val is not None else "none"),
    ]
    return fit(
        cfg, command="finetune", model=model, tokenizer=tokenizer, hw=hw, hooks=hooks, n_batches=len(batches_of(0)), rows=rows,
        batch_note=", grouped by length" if t.group_by_length else "", overwrite=overwrite, started=started,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(cfg: Config) -> dict[str, Any]:
    model_ref = trained_model_ref(cfg, cfg.evaluate.model, "evaluate.model")
    data_path = cfg.evaluate.data or cfg.data.validation
    if not data_path:
        raise ConfigError(
            "no labelled data to evaluate on",
            where=cfg.where("evaluate.data"),
            key="evaluate.data",
            hint="set evaluate.data (or data.validation) to a labelled file",
        )
    # Label names come from the model; read them without torch so bad data fails fast.
    names = _label_names_from_config(model_ref)
    examples = classification.read_labelled(cfg, data_path, names) if names else None
    out_dir = Path(cfg.evaluate.output_dir or Path(cfg.output_dir) / "eval")

    from ptft_cli import hardware, models

    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    models.quiet_transformers()
    key = "evaluate.model" if cfg.evaluate.model else "output_dir"
    tokenizer = models.load_tokenizer(cfg.tokenizer.name_or_path or model_ref, cfg.model, key, cfg.where(key))
    attn = hardware.attn_implementation(cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length)
    model = classification.load_trained(model_ref, cfg, attn, cfg.where(key), key).to(hw.device)
    classification.ensure_pad_token(tokenizer, model)
    if examples is None:
        examples = classification.read_labelled(cfg, data_path, classification.label_names(model))
    labels = classification.label_names(model)
    enc = classification.encode(
        tokenizer, examples.texts, examples.pairs, examples.labels, cfg.tokenizer.max_length
    )

    started = time.perf_counter()
    with console.simple_progress(len(enc.labels), "evaluate") as progress:
        task_id = progress.add_task("evaluate", total=len(enc.labels), rate="")
        metrics = classification.evaluate(
            model,
            enc,
            labels,
            tokenizer.pad_token_id,
            cfg.training.eval_batch_size,
            hw,
            lambda n: progress.advance(task_id, n),
        )
    seconds = time.perf_counter() - started
    metrics.update(
        {
            "examples": len(enc.labels),
            "model": model_ref,
            "data": data_path,
            "precision": hw.precision,
            "seconds": round(seconds, 2),
        }
    )

    from ptft_cli.metrics import plot_confusion

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    plot_confusion(
        metrics["confusion_matrix"],
        labels,
        out_dir / "confusion_matrix.png",
        f"{Path(data_path).name}: confusion",
    )
    console.metrics_table(
        f"evaluate · {Path(data_path).name} · {len(enc.labels):,} examples",
        {"loss": metrics["loss"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
    )
    console.per_class_table(metrics["per_class"])
    console.info(f"metrics written to {out_dir / 'metrics.json'}")
    return metrics


def _label_names_from_config(model_ref: str) -> list[str] | None:
    """id2label of a local model directory, read from config.json (None for Hub ids)."""
    path = Path(model_ref) / "config.json"
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label") or {}
    return [str(id2label[str(i)]) for i in range(len(id2label))] if id2label else None


# ---------------------------------------------------------------------------------------------
# predict


def _read_predict_input(cfg: Config) -> tuple[list[str], list[str] | None, list[Any]]:
    """(texts, pairs, ids) from predict.input; ids are the file's `id` field or its line numbers."""
    from ptft_cli import data as data_io

    path = cfg.predict.input
    if not path:
        raise ConfigError(
            "no input texts",
            where=cfg.where("predict.input"),
            key="predict.input",
            hint="pass --input FILE or set predict.input",
        )
    fmt = data_io.detect_format(path, "auto")
    if fmt not in ("txt", "jsonl", "csv", "tsv", "json", "parquet"):
        raise DataError(f"cannot read texts from {fmt}", where=path)
    table = data_io.read_table(path, fmt, text_column=cfg.data.text_column)
    texts = classification._texts(table, cfg.data.text_column, "text")
    pairs = (
        classification._texts(table, cfg.data.text_pair_column, "second text")
        if cfg.data.text_pair_column and fmt != "txt"
        else None
    )
    ids = (
        [row.get("id", line) for row, line in zip(table.rows, table.lines)]
        if fmt != "txt"
        else list(table.lines)
    )
    return texts, pairs, ids


def predict(cfg: Config) -> Path:
    model_ref = trained_model_ref(cfg, cfg.predict.model, "predict.model")
    texts, pairs, ids = _read_predict_input(cfg)
    out = Path(cfg.predict.output or Path(cfg.output_dir) / "predictions.jsonl")
    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise ConfigError(
            f"cannot write predictions as {out.suffix or '(no extension)'}",
            where=cfg.where("predict.output"),
            key="predict.output",
            hint="use a .jsonl or .csv file name",
        )

    from ptft_cli import batching, hardware, models

    hw = hardware.resolve(cfg.device, cfg.precision, training=False, where=cfg.where("device"))
    models.quiet_transformers()
    key = "predict.model" if cfg.predict.model else "output_dir"
    tokenizer = models.load_tokenizer(cfg.tokenizer.name_or_path or model_ref, cfg.model, key, cfg.where(key))
    attn = hardware.attn_implementation(cfg.model.attn_implementation, hw.device, cfg.tokenizer.max_length)
    model = classification.load_trained(model_ref, cfg, attn, cfg.where(key), key).to(hw.device)
    classification.ensure_pad_token(tokenizer, model)
    labels = classification.label_names(model)
    enc = classification.encode(tokenizer, texts, pairs, None, cfg.tokenizer.max_length)

    started = time.perf_counter()
    batches = batching.inference_batches(enc.lengths, cfg.training.eval_batch_size)
    with console.simple_progress(len(texts), "predict") as progress:
        task_id = progress.add_task("predict", total=len(texts), rate="")
        probs, _ = classification.forward_probs(
            model, batches, enc, tokenizer.pad_token_id, hw, lambda n: progress.advance(task_id, n)
        )
    seconds = time.perf_counter() - started
    _write_predictions(out, ids, texts, probs.tolist(), labels)
    console.info(
        f"{len(texts):,} predictions in {seconds:.1f}s ({len(texts) / max(seconds, 1e-9):,.0f} texts/s, {hw.precision}) → {out}"
    )
    return out


def _write_predictions(
    out: Path, ids: list[Any], texts: list[str], probs: list[list[float]], labels: list[str]
) -> None:
    import csv
    import io

    rows = []
    for i, text, p in zip(ids, texts, probs):
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
    if out.suffix.lower() == ".jsonl":
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "text", "label", "score", *[f"p_{name}" for name in labels]])
        for r in rows:
            writer.writerow([r["id"], r["text"], r["label"], r["score"], *r["probabilities"].values()])
        body = buf.getvalue()
    atomic_write_text(out, body)
