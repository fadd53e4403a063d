"""Text corpora for language modelling: files → documents → token streams, cached or streamed.

A corpus is read as pieces of text (at most ~1 MB each, so a multi-GB file never sits in memory
whole) with a flag saying whether a document ends after the piece; the tokenizer turns pieces
into one stream of token ids with a separator (EOS or SEP) between documents. Non-streaming runs
tokenize once and cache the arrays under a key built from the files (path, size, mtime), the
tokenizer's fingerprint and every option that changes the tokens, so a changed tokenizer can
never reuse a stale cache.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptft_cli import data as data_io
from ptft_cli.errors import DataError

PIECE_CHARS = 1 << 20  # a document longer than this is tokenized in pieces cut at line ends
ENCODE_BATCH_CHARS = 4 << 20  # characters handed to the tokenizer per call
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


# ---------------------------------------------------------------------------------------------
# Files and documents (pure Python)


def expand(patterns: str | list[str] | None, key: str, where: str) -> list[Path]:
    """Paths and globs → existing files, in a stable order; an unmatched entry is an error."""
    if patterns is None:
        return []
    out: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(
                    f"no files match {pattern}",
                    where=where,
                    key=key,
                    hint="check the pattern (relative to the config's folder)",
                )
            out.extend(matches)
        else:
            p = Path(pattern)
            if not p.is_file():
                raise DataError(
                    "file not found" if not p.exists() else "is a directory, not a file",
                    where=str(p),
                    key=key,
                )
            out.append(p)
    return out


@dataclass(frozen=True)
class Piece:
    text: str
    ends_document: bool
    where: str  # file:line where the piece starts, for messages


def iter_pieces(paths: list[Path], *, fmt: str, text_column: str, boundary: str) -> Iterator[Piece]:
    """Every document of every file, as pieces of at most ~PIECE_CHARS characters."""
    for path in paths:
        kind = data_io.detect_format(str(path), fmt)
        if kind == "txt":
            yield from _txt_pieces(path, boundary)
        else:
            table = data_io.read_table(str(path), kind, text_column=text_column)
            for i, value in enumerate(table.column(text_column, "text")):
                if not isinstance(value, str):
                    raise DataError(
                        f"text in column {text_column!r} is a {type(value).__name__}, not text",
                        where=table.where(i),
                    )
                if value.strip():
                    yield Piece(value, True, table.where(i))


def iter_hub_pieces(
    name: str, config: str | None, split: str, *, text_column: str, streaming: bool
) -> Iterator[Piece]:
    """One document per row of a Hugging Face dataset split (streamed when `streaming`)."""
    table = data_io.read_hub_split(name, config, split, streaming=streaming)
    for i, row in enumerate(table.rows, start=1):
        if text_column not in row:
            raise DataError(
                f"no column {text_column!r} (the text)",
                where=f"{table.path}:{i}",
                hint=f"columns here: {', '.join(map(str, row))}; set data.text_column",
            )
        value = row[text_column]
        if isinstance(value, str) and value.strip():
            yield Piece(value, True, f"{table.path}:{i}")


def _txt_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line with its newline) of a UTF-8 file, read lazily; CRLF becomes LF."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not UTF-8 (byte 0x{raw[e.start]:02x})",
                    where=f"{path}:{n}",
                    hint="re-save the file as UTF-8",
                ) from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            if line.endswith("\r\n"):
                line = line[:-2] + "\n"
            yield n, line


def _txt_pieces(path: Path, boundary: str) -> Iterator[Piece]:
    buf: list[str] = []
    size, start, continued = 0, 1, False
    for n, line in _txt_lines(path):
        if boundary == "line":
            if line.strip():
                yield Piece(line.rstrip("\n"), True, f"{path}:{n}")
            continue
        if boundary == "paragraph" and not line.strip():
            if buf:
                yield Piece("".join(buf).strip("\n"), True, f"{path}:{start}")
            buf, size = [], 0
            continue
        if not buf:
            start = n
        buf.append(line)
        size += len(line)
        if size >= PIECE_CHARS:  # a long document continues in the next piece
            yield Piece("".join(buf), False, f"{path}:{start}")
            buf, size, continued = [], 0, True
    text = "".join(buf)
    if boundary == "paragraph" and text.strip():
        yield Piece(text.strip("\n"), True, f"{path}:{start}")
    elif boundary == "file" and (text.strip() or continued):
        yield Piece(text, True, f"{path}:{start}")  # the whole file is one document, newlines kept


def split_tail(pieces: list[Piece], fraction: float) -> tuple[list[Piece], list[Piece]]:
    """Hold out the last `fraction` of the corpus characters (cutting one piece in two, as nanoGPT)."""
    total = sum(len(p.text) for p in pieces)
    cut = total - round(total * fraction)
    seen = 0
    for i, p in enumerate(pieces):
        if seen + len(p.text) >= cut:
            k = cut - seen
            head = [*pieces[:i], Piece(p.text[:k], False, p.where)] if k else pieces[:i]
            tail = [Piece(p.text[k:], p.ends_document, p.where), *pieces[i + 1 :]]
            return head, tail
        seen += len(p.text)
    return pieces, []


# ---------------------------------------------------------------------------------------------
# Tokenizing


@dataclass
class TokenStream:
    """Token ids of a whole split, plus its size in characters and UTF-8 bytes (for bits per char/byte)."""

    ids: np.ndarray  # (N,) uint32
    chars: int
    bytes: int


@dataclass
class Segments:
    """Tokenized units (documents or sentences) in one array: unit i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # concatenated token ids, uint32
    offsets: np.ndarray  # (n + 1,) int64
    doc: np.ndarray  # (n,) int64: which document each unit belongs to

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return (
        tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else []
    )


def _batched(pieces: Iterable[Piece]) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for p in pieces:
        batch.append(p)
        size += len(p.text)
        if size >= ENCODE_BATCH_CHARS or len(batch) >= 4096:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def iter_token_chunks(pieces: Iterable[Piece], tokenizer: Any, separator: int) -> Iterator[np.ndarray]:
    """Token ids of the pieces, with `separator` after each document, in chunks (bounded memory)."""
    for batch in _batched(pieces):
        out: list[int] = []
        for piece, ids in zip(batch, _encode(tokenizer, [p.text for p in batch])):
            out.extend(ids)
            if piece.ends_document:
                out.append(separator)
        if out:
            yield np.asarray(out, dtype=np.uint32)


def tokenize_stream(pieces: list[Piece], tokenizer: Any, separator: int) -> TokenStream:
    chunks = list(iter_token_chunks(pieces, tokenizer, separator))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    return TokenStream(
        ids, sum(len(p.text) for p in pieces), sum(len(p.text.encode("utf-8")) for p in pieces)
    )


def tokenize_segments(pieces: list[Piece], tokenizer: Any, *, sentences: bool, max_tokens: int) -> Segments:
    """One unit per document (line mode) or per sentence (NSP), each truncated to `max_tokens`."""
    texts: list[str] = []
    docs: list[int] = []
    doc = 0
    for p in pieces:
        units = [u for u in (SENTENCE_END.split(p.text) if sentences else [p.text]) if u.strip()]
        for u in units:
            texts.append(u.strip())
            docs.append(doc)
        if p.ends_document:
            doc += 1
    ids: list[np.ndarray] = []
    for start in range(0, len(texts), 4096):
        ids.extend(
            np.asarray(x[:max_tokens], dtype=np.uint32)
            for x in _encode(tokenizer, texts[start : start + 4096])
        )
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    keep = lengths > 0
    ids = [x for x, k in zip(ids, keep) if k]
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint32)
    return Segments(flat, offsets, np.asarray(docs, dtype=np.int64)[keep])


# ---------------------------------------------------------------------------------------------
# Cache


def cache_key(paths: list[Path], tokenizer_fingerprint: str, options: dict[str, Any]) -> str:
    """Changes whenever a file (path, size, mtime), the tokenizer or a tokenizing option changes."""
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps(
        {"files": files, "tokenizer": tokenizer_fingerprint, "options": options, "version": 1}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_load(cache_dir: str | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    folder = Path(cache_dir) / "tokenized" / key
    if not (folder / "meta.json").is_file():
        return None
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in meta["arrays"]}
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
        (tmp / "meta.json").write_text(json.dumps({**meta, "arrays": list(arrays)}), encoding="utf-8")
        try:
            os.replace(tmp, root / key)
        except OSError:  # another run wrote the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Blocks


def n_blocks(n_tokens: int, stride: int, span: int) -> int:
    """Blocks of `span` tokens every `stride` tokens that fit for every start offset in [0, stride)."""
    return max(0, (n_tokens - span - (stride - 1)) // stride + 1)


def block_starts(
    n_tokens: int, stride: int, span: int, *, seed: int, epoch: int, shuffle: bool
) -> np.ndarray:
    """Start positions of one epoch's blocks; a per-epoch random offset varies the cut points."""
    count = n_blocks(n_tokens, stride, span)
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(0, stride)) if shuffle and stride > 1 else 0
    starts = offset + stride * np.arange(count, dtype=np.int64)
    if shuffle:
        rng.shuffle(starts)
    return starts


def iter_stream_blocks(
    chunks: Iterable[np.ndarray], span: int, stride: int, *, buffer_blocks: int, seed: int, epoch: int
) -> Iterator[np.ndarray]:
    """Streaming: cut a chunked token stream into blocks and shuffle them in a bounded buffer."""
    rng = np.random.default_rng([seed, epoch, 1])
    carry = np.zeros(0, dtype=np.uint32)
    buffer: list[np.ndarray] = []
    for chunk in chunks:
        tokens = np.concatenate([carry, chunk])
        count = max(0, (len(tokens) - span) // stride + 1)
        for i in range(count):
            buffer.append(tokens[i * stride : i * stride + span].copy())
            if len(buffer) >= buffer_blocks:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        carry = tokens[count * stride :]
    rng.shuffle(buffer)
    yield from buffer
