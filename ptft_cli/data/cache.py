"""The tokenization cache: token arrays of a corpus, keyed on everything that changes them.

The key is built from the files (path, size, mtime), the tokenizer's fingerprint and every option
that changes the tokens, so a changed tokenizer or file can never reuse a stale cache. Entries are
written atomically (temporary folder, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ptft_cli.config import Config
from ptft_cli.data.corpus import CorpusFiles, Segments, Texts, TokenStream, tokenize_segments, tokenize_stream


def cache_key(paths: list[Path], tokenizer_fingerprint: str, options: dict[str, Any]) -> str:
    """Changes whenever a file (path, size, mtime), the tokenizer or a tokenizing option changes."""
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps(
        {"files": files, "tokenizer": tokenizer_fingerprint, "options": options, "version": 2}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


CACHED, REBUILT = " (cached)", " (the cache entry was damaged: tokenized again)"


def cache_load(cache_dir: str | None, key: str) -> dict[str, Any] | None:
    """The cached arrays, None when there are none, or {"damaged": True} when the entry is damaged
    (a truncated or unreadable file; it is removed, so the caller's fresh tokenization replaces it)."""
    if cache_dir is None:
        return None
    folder = Path(cache_dir) / "tokenized" / key
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        sizes = meta["sizes"]
        for name in meta["arrays"]:
            if (folder / f"{name}.npy").stat().st_size != sizes[name]:
                raise ValueError(f"{name}.npy is truncated")
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        shutil.rmtree(folder, ignore_errors=True)
        return {"damaged": True}
    return {"meta": meta, **arrays}


def cache_save(cache_dir: str | None, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write atomically (temporary folder, then rename); a cache that cannot be written is skipped."""
    if cache_dir is None:
        return
    root = Path(cache_dir) / "tokenized"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        sizes = {name: (tmp / f"{name}.npy").stat().st_size for name in arrays}  # checked on load
        (tmp / "meta.json").write_text(
            json.dumps({**meta, "arrays": list(arrays), "sizes": sizes}), encoding="utf-8"
        )
        try:
            os.replace(tmp, root / key)
        except OSError:  # another run wrote the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


def _cache_dir(cfg: Config) -> str | None:
    # A Hugging Face dataset has no files to fingerprint (and `datasets` caches it already).
    return None if cfg.data.dataset else cfg.data.cache_dir


def _options(cfg: Config, unit: str) -> dict[str, Any]:
    d = cfg.data
    return {
        "unit": unit,
        "task": cfg.task,
        "boundary": d.document_boundary,
        "format": d.format,
        "text_column": d.text_column,
        "validation_fraction": d.validation_fraction,
        "max_length": cfg.tokenizer.max_length,
    }


def token_streams(
    cfg: Config, files: CorpusFiles, texts: Texts, tokenizer: Any, separator: int
) -> tuple[TokenStream, TokenStream | None, str]:
    """Train and validation token streams (documents joined by `separator`), from the cache when the
    files, tokenizer and options match; the note says whether the cache was used (CACHED, REBUILT, "")."""
    from ptft_cli.data.tokenizer_train import fingerprint

    key = cache_key(
        files.train + files.validation, fingerprint(tokenizer), _options(cfg, f"stream-{separator}")
    )
    hit = cache_load(_cache_dir(cfg), key)
    note = REBUILT if hit is not None and "damaged" in hit else ""
    if hit is not None and not note:
        meta = hit["meta"]
        train = TokenStream(hit["train"], meta["train_chars"], meta["train_bytes"])
        val = (
            TokenStream(hit["validation"], meta["val_chars"], meta["val_bytes"])
            if meta["has_validation"]
            else None
        )
        return train, val, CACHED
    train = tokenize_stream(texts.train, tokenizer, separator)
    val = tokenize_stream(texts.validation, tokenizer, separator) if texts.validation else None
    arrays = {"train": train.ids, "validation": val.ids if val else np.zeros(0, dtype=np.uint32)}
    meta = {
        "train_chars": train.chars,
        "train_bytes": train.bytes,
        "val_chars": val.chars if val else 0,
        "val_bytes": val.bytes if val else 0,
        "has_validation": val is not None,
    }
    cache_save(_cache_dir(cfg), key, arrays, meta)
    return train, val, note


def token_segments(
    cfg: Config, files: CorpusFiles, texts: Texts, tokenizer: Any, *, sentences: bool
) -> tuple[Segments, Segments | None, str]:
    """Documents (or sentences, for NSP) as token segments, cached like `token_streams`."""
    from ptft_cli.data.tokenizer_train import fingerprint

    max_tokens = cfg.tokenizer.max_length - 2
    key = cache_key(
        files.train + files.validation,
        fingerprint(tokenizer),
        _options(cfg, "sentences" if sentences else "documents"),
    )
    hit = cache_load(_cache_dir(cfg), key)
    note = REBUILT if hit is not None and "damaged" in hit else ""
    if hit is not None and not note:
        train = Segments(hit["train_ids"], hit["train_offsets"], hit["train_doc"])
        val = (
            Segments(hit["val_ids"], hit["val_offsets"], hit["val_doc"])
            if hit["meta"]["has_validation"]
            else None
        )
        return train, val, CACHED
    train = tokenize_segments(texts.train, tokenizer, sentences=sentences, max_tokens=max_tokens)
    val = (
        tokenize_segments(texts.validation, tokenizer, sentences=sentences, max_tokens=max_tokens)
        if texts.validation
        else None
    )
    empty = Segments(np.zeros(0, np.uint32), np.zeros(1, np.int64), np.zeros(0, np.int64))
    v = val or empty
    arrays = {
        "train_ids": train.ids, "train_offsets": train.offsets, "train_doc": train.doc,
        "val_ids": v.ids, "val_offsets": v.offsets, "val_doc": v.doc,
    }  # fmt: skip
    cache_save(_cache_dir(cfg), key, arrays, {"has_validation": val is not None})
    return train, val, note
